"""Probes that tell whether a machine's owner is using it, one per source a platform offers.

Each probe answers ``active(idle_after)`` with a reason (the owner is active) or None. Input probes
measure the seconds since the last keyboard/mouse input and count the owner active when that is under
``idle_after``; a probe that cannot tell (no session, tool missing, no permission) answers None, so a
missing source never stops a worker. Which probes a machine gets (``probes_for``):

- Linux: logind ``IdleHint`` of local graphical sessions (``loginctl show-session``; kept by desktops),
  X11 idle time (``xprintidle``, when installed and ``DISPLAY`` is set), the newest access to
  ``/dev/input/event*`` (when the device files are readable; without ``/dev/input``, e.g. in a container
  or over ssh, only logind and X11 are asked);
- macOS: ``HIDIdleTime`` from ``ioreg -c IOHIDSystem``;
- Windows: ``GetLastInputInfo`` through ctypes;
- everywhere: other processes' CPU load above ``owner_cpu_threshold`` (a fraction of all cores; off
  unless set), another process computing on an NVIDIA GPU (NVML, when ``pynvml`` imports), running on
  battery.

``MLQUEUE_IDLE_PROBE=file:PATH`` replaces all of them (the file's mtime is the last input), ``none``
disables them.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

import psutil

from mlqueue.errors import ConfigError
from mlqueue.settings import Settings


class Probe:
    """One source of "the owner is here"."""

    name = "probe"

    def active(self, idle_after: float) -> str | None:
        raise NotImplementedError


class InputProbe(Probe):
    """A probe that knows how long ago the owner last touched keyboard or mouse."""

    def idle_seconds(self) -> float | None:
        raise NotImplementedError

    def active(self, idle_after: float) -> str | None:
        try:
            idle = self.idle_seconds()
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
        if idle is None or idle >= idle_after:
            return None
        return f"owner input {idle:.0f}s ago ({self.name})"


class FileProbe(InputProbe):
    """The test seam: the file's modification time is the owner's last input; no file, no owner."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = Path(path), f"file {path}"

    def idle_seconds(self) -> float | None:
        try:
            return max(0.0, time.time() - self.path.stat().st_mtime)
        except FileNotFoundError:
            return None


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=3).stdout


class LogindProbe(InputProbe):
    """systemd-logind: a local graphical session whose ``IdleHint`` is no means someone is at it.

    Only x11/wayland/mir sessions count: desktops maintain their ``IdleHint``, while a text console's
    stays "no" for good (those are seen through ``/dev/input``) and a remote session is not the owner.
    """

    GRAPHICAL = ("x11", "wayland", "mir")

    name = "logind"

    def idle_seconds(self) -> float | None:
        idle: list[float] = []
        for line in _run(["loginctl", "list-sessions", "--no-legend"]).splitlines():
            session = line.split()[0] if line.split() else ""
            props = dict(kv.split("=", 1) for kv in _run(
                ["loginctl", "show-session", session, "-p", "IdleHint", "-p", "IdleSinceHint", "-p", "Remote",
                 "-p", "Type"]).splitlines() if "=" in kv)
            if props.get("Remote") == "yes" or props.get("Type") not in self.GRAPHICAL:
                continue
            if props.get("IdleHint") == "no":
                idle.append(0.0)
            elif props.get("IdleSinceHint", "0") not in ("", "0"):
                idle.append(max(0.0, time.time() - int(props["IdleSinceHint"]) / 1e6))
        return min(idle) if idle else None


class X11Probe(InputProbe):
    """The X server's own idle counter (XScreenSaver extension), through ``xprintidle``."""

    name = "xprintidle"

    def idle_seconds(self) -> float | None:
        out = _run(["xprintidle"]).strip()
        return int(out) / 1000 if out.isdigit() else None


class DevInputProbe(InputProbe):
    """The kernel's input devices: reading events updates a device file's access time."""

    name = "/dev/input"

    def __init__(self, root: Path = Path("/dev/input")) -> None:
        self.root = Path(root)

    def devices(self) -> list[str]:
        return glob.glob(str(self.root / "event*")) + glob.glob(str(self.root / "mice"))

    def idle_seconds(self) -> float | None:
        times = []
        for device in self.devices():
            try:
                st = os.stat(device)
            except OSError:
                continue
            times.append(max(st.st_atime, st.st_mtime))
        return max(0.0, time.time() - max(times)) if times else None


class MacProbe(InputProbe):
    name = "HIDIdleTime"

    def idle_seconds(self) -> float | None:
        match = re.search(r'"HIDIdleTime" = (\d+)', _run(["ioreg", "-c", "IOHIDSystem"]))
        return int(match.group(1)) / 1e9 if match else None


class WindowsProbe(InputProbe):
    name = "GetLastInputInfo"

    def idle_seconds(self) -> float | None:
        class LastInput(ctypes.Structure):
            _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

        info = LastInput(ctypes.sizeof(LastInput), 0)
        windll = ctypes.windll  # type: ignore[attr-defined]
        if not windll.user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        return ((windll.kernel32.GetTickCount() - info.dwTime) & 0xFFFFFFFF) / 1000


class CpuProbe(Probe):
    """Other processes (not this worker nor its Jobs) keep more than ``threshold`` of the CPU busy."""

    name = "cpu"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.me = psutil.Process()
        self.known: dict[int, psutil.Process] = {}
        psutil.cpu_percent(None)

    def active(self, idle_after: float) -> str | None:
        cores = psutil.cpu_count() or 1
        busy = psutil.cpu_percent(None) / 100 * cores
        mine = 0.0
        for proc in [self.me, *self.me.children(recursive=True)]:
            proc = self.known.setdefault(proc.pid, proc)
            try:
                mine += proc.cpu_percent(None) / 100
            except psutil.Error:
                continue
        other = max(0.0, busy - mine) / cores
        return f"other processes use {other:.0%} of the CPU" if other > self.threshold else None


class GpuProbe(Probe):
    """Another process computes on one of the NVIDIA GPUs (someone's training, a CUDA app).

    Graphics contexts do not count: the display server holds one for good on every desktop (a game or a
    video call shows up as input activity anyway).
    """

    name = "nvml"

    def __init__(self, nvml: object) -> None:
        self.nvml = nvml

    def active(self, idle_after: float) -> str | None:
        nv = self.nvml
        mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
        try:
            for index in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                others = [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid not in mine]
                if others:
                    return f"GPU {index} in use by process {others[0]}"
        except Exception:  # noqa: BLE001 - NVML errors (driver reload) mean "cannot tell"
            return None
        return None


class BatteryProbe(Probe):
    name = "battery"

    def active(self, idle_after: float) -> str | None:
        battery = psutil.sensors_battery()
        if battery is None or battery.power_plugged in (True, None):
            return None
        return f"on battery ({battery.percent:.0f}%)"


def _nvml() -> object | None:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: no probe
        return None


def input_probes(system: str | None = None, dev_input: Path = Path("/dev/input")) -> list[Probe]:
    """The keyboard/mouse probes this platform offers (see the module docstring)."""
    system = system or platform.system()
    if system == "Darwin":
        return [MacProbe()] if shutil.which("ioreg") else []
    if system == "Windows":
        return [WindowsProbe()]
    found: list[Probe] = []
    if shutil.which("loginctl"):
        found.append(LogindProbe())
    if shutil.which("xprintidle") and os.environ.get("DISPLAY"):
        found.append(X11Probe())
    dev = DevInputProbe(dev_input)
    if dev.devices():
        found.append(dev)
    return found


def probes_for(settings: Settings) -> list[Probe]:
    """Every probe for this machine, or just the one ``idle_probe`` names."""
    if settings.idle_probe:
        kind, _, arg = settings.idle_probe.partition(":")
        if kind == "file" and arg:
            return [FileProbe(Path(arg))]
        if kind == "none":
            return []
        raise ConfigError(f"MLQUEUE_IDLE_PROBE={settings.idle_probe!r}: use file:PATH or none")
    found = input_probes()
    if settings.owner_cpu_threshold:
        found.append(CpuProbe(settings.owner_cpu_threshold))
    nvml = _nvml()
    if nvml is not None:
        found.append(GpuProbe(nvml))
    if hasattr(psutil, "sensors_battery") and psutil.sensors_battery() is not None:
        found.append(BatteryProbe())
    return found
