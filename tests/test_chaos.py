"""One fast scenario of every fault kind from the chaos suite (``make chaos`` runs them all at full size).

Each runs real servers and real worker processes through its fault and must end with nothing lost,
no second final Outcome and no execution of a Job that had already finished.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import netns, scenarios
from chaos.tally import table


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_a_fault_loses_nothing_and_never_finishes_a_job_twice(name: str, tmp_path: Path) -> None:
    if name == "partition" and netns.unavailable():
        pytest.skip(f"no virtual house here: {netns.unavailable()}")
    tally = scenarios.run(name, tmp_path, full=False)
    print(table([tally]), *tally.notes, sep="\n")
    assert tally.safe and tally.submitted > 0, tally.as_dict()
    assert not any("did not settle" in note for note in tally.notes), tally.notes
    assert sum(tally.faults.values()) >= 1 and tally.succeeded >= 1


def test_a_full_disk_fails_only_the_jobs_that_write_and_the_worker_carries_on(tmp_path: Path) -> None:
    tally = scenarios.run("disk_full", tmp_path, full=False)
    if any(note.startswith("skipped") for note in tally.notes):
        pytest.skip(tally.notes[0])
    # ENOSPC is judged the machine's fault: the Job bounces (up to max_environment_failures), then fails
    assert tally.safe and sum(tally.failed.values()) == 4, tally.as_dict()
    assert set(tally.failed) <= {"failed: environment", "failed: error"}, tally.failed
    assert "after freeing: {'succeeded': 2}" in tally.notes[-1] and "the worker died" not in tally.notes
