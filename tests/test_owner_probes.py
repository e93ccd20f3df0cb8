"""Owner probes and policy: what counts as the owner being active, on this machine and by the rules."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlqueue import owner_probes
from mlqueue.errors import ConfigError
from mlqueue.owner import Policy, decide
from mlqueue.owner_probes import DevInputProbe, FileProbe, input_probes, probes_for
from mlqueue.settings import Settings


def test_file_probe_reads_the_last_input_from_the_files_mtime(tmp_path: Path) -> None:
    probe = FileProbe(tmp_path / "input")
    assert probe.active(idle_after=60) is None                     # no file: nobody ever typed
    (tmp_path / "input").touch()
    assert probe.active(idle_after=60).startswith("owner input 0s ago (file ")
    old = time.time() - 120
    os.utime(tmp_path / "input", (old, old))
    assert probe.active(idle_after=60) is None and probe.idle_seconds() >= 119


def test_dev_input_probe_uses_the_newest_device_access(tmp_path: Path) -> None:
    for name, age in (("event0", 500), ("event1", 5), ("mouse0", 0)):   # mouse0 is not an event device
        (tmp_path / name).touch()
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
    probe = DevInputProbe(tmp_path)
    assert 4 <= probe.idle_seconds() < 10
    assert probe.active(idle_after=30) == "owner input 5s ago (/dev/input)"
    assert probe.active(idle_after=3) is None


def test_without_dev_input_linux_falls_back_to_logind_and_x11_only(tmp_path: Path) -> None:
    probes = input_probes("Linux", dev_input=tmp_path / "absent")
    assert not any(isinstance(p, DevInputProbe) for p in probes)
    assert {p.name for p in probes} <= {"logind", "xprintidle"}
    assert [p.name for p in input_probes("Darwin")] in ([], ["HIDIdleTime"])


def test_this_machines_own_probes_answer_without_failing() -> None:
    probes = owner_probes.probes_for(Settings(idle_probe=None))
    print("probes on this machine:", [p.name for p in probes] or "none (no input devices, logind or X11 here)")
    for probe in probes:
        assert probe.active(idle_after=300) is None or isinstance(probe.active(idle_after=300), str)


def test_the_probe_setting_replaces_or_disables_the_probes_and_refuses_nonsense(tmp_path: Path) -> None:
    assert [type(p) for p in probes_for(Settings(idle_probe=f"file:{tmp_path}/x"))] == [FileProbe]
    assert probes_for(Settings(idle_probe="none")) == []
    with pytest.raises(ConfigError, match="use file:PATH or none"):
        probes_for(Settings(idle_probe="keyboard"))


def test_working_hours_may_wrap_midnight_and_bad_ones_are_refused() -> None:
    night = Policy(when_owner_active="pause", hours="22:00-07:00")
    assert night.outside_hours(datetime(2026, 1, 1, 23, 30)) is None
    assert night.outside_hours(datetime(2026, 1, 1, 6, 59)) is None
    assert night.outside_hours(datetime(2026, 1, 1, 12, 0)) == "outside working hours 22:00-07:00"
    assert Policy(hours="09:00-17:00").outside_hours(datetime(2026, 1, 1, 18, 0))
    with pytest.raises(ValidationError, match="must look like 22:00-07:00"):
        Policy(hours="late")


def test_hq_commands_come_first_then_the_owner_policy() -> None:
    pause = Policy(when_owner_active="pause")
    assert decide(pause, None, None) == ("run", None, None)
    assert decide(pause, None, "owner input 1s ago (logind)")[:2] == ("pause", "owner active")
    assert decide(pause, "drain", "owner input 1s ago (logind)")[:2] == ("drain", "draining")
    assert decide(Policy(when_owner_active="yield"), "pause", None)[:2] == ("pause", "paused")
    assert decide(Policy(), None, "owner input 1s ago (logind)") == ("run", None, None)   # ignore
    outside = "outside working hours 22:00-07:00"
    assert decide(Policy(), None, None, outside) == ("drain", "draining", outside)
    assert decide(pause, None, outside, outside)[:2] == ("pause", "owner active")


class _Nvml:
    """NVML as a GPU machine answers: one device, computing processes with these pids."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's own names
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[object]:  # noqa: N802
        return [type("Proc", (), {"pid": pid})() for pid in self.pids]


def test_gpu_probe_counts_other_processes_computing_not_this_worker() -> None:
    assert owner_probes.GpuProbe(_Nvml([os.getpid()])).active(300) is None
    assert owner_probes.GpuProbe(_Nvml([os.getpid(), 4194301])).active(300) == "GPU 0 in use by process 4194301"
