"""Scripts reach every worker (pushed bundles) and seeds-style command-line scripts run unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Farm

from mlqueue import datasets, jobs, orders, scripts

HERE = Path(__file__).parent / "scripts"


def test_push_is_content_addressed_and_a_folder_needs_an_entry(farm: Farm, tmp_path: Path) -> None:
    first = scripts.push(HERE / "misbehave.py", settings=farm.settings)
    assert scripts.push(HERE / "misbehave.py", settings=farm.settings)["sha256"] == first["sha256"]
    assert first["kind"] == "command-line" and first["entry"] == "misbehave.py"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "helper.py").write_text("X = 1\n")
    with pytest.raises(scripts.ScriptNotFound, match="main.py"):
        scripts.push(tmp_path / "pkg", settings=farm.settings)
    (tmp_path / "pkg" / "main.py").write_text("from helper import X\n\ndef run(job, report):\n    return {'x': X}\n")
    folder = scripts.push(tmp_path / "pkg", settings=farm.settings)
    assert folder["kind"] == "module" and folder["name"] == "pkg"
    names = {s["name"]: s for s in scripts.available(farm.settings)}
    assert names["pkg"]["source"] == "pushed" and names["toy"]["source"] == "builtin"


def test_seed_positional_script_pushed_then_run_as_a_job(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "wine.csv").write_text("con_a,cat_b\n1,x\n2,y\n")
    datasets.push(tmp_path / "wine.csv", "wine", settings=farm.settings)
    pushed = farm.run_cli("scripts", "push", str(HERE / "seed_encode.py"), "--name", "encoder")
    assert pushed.returncode == 0, pushed.stderr
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "encoder", "scriptArgs": "positional", "projectName": "wine",
                            "dataFileName": "wine.csv", "execution": {"tag": "t1"}})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded", order.get("outcome")
    outcome = order["outcome"]
    assert outcome["rows"] == 2 and outcome["tag"] == "t1"
    assert outcome["script"]["source"] == "pushed"
    assert outcome["script"]["sha256"] == scripts.bundles(farm.settings)[0]["sha256"]
    assert outcome["datasets"][0]["fileName"] == "upper_wine.csv"
    assert datasets.latest("wine", "upper_wine.csv", farm.settings) is not None
    assert any("read 2 rows" in line["line"] for line in order["log"])


@pytest.mark.parametrize("fields, reason, words", [
    ({"garbage": True}, "error", "last line was: 'Epoch 3/3"),
    ({"exitCode": 3}, "error", "exited with code 3: something broke"),
    ({"hang": True, "timeLimit": 1.5}, "timeout", "time limit"),
])
def test_command_line_script_failures_become_clear_outcomes(farm: Farm, fields: dict, reason: str,
                                                            words: str) -> None:
    scripts.push(HERE / "misbehave.py", settings=farm.settings)
    farm.start_worker("w1")
    bad, good = farm.submit({"scriptName": "misbehave", **fields}, {"scriptName": "misbehave", "x": 3})
    order = farm.wait_final(bad, timeout=60)
    assert order["state"] == "failed"
    assert order["outcome"]["reason"] == reason and words in order["outcome"]["message"]
    after = farm.wait_final(good, timeout=60)
    assert after["state"] == "succeeded" and after["outcome"]["loss"] == 9


def test_a_new_version_reaches_workers_and_a_pinned_job_runs_the_old_one(farm: Farm, tmp_path: Path) -> None:
    script = tmp_path / "ver.py"
    script.write_text("def run(job, report):\n    return {'version': 1}\n")
    old = scripts.push(script, settings=farm.settings)
    farm.start_worker("w1")
    [first] = farm.submit({"scriptName": "ver"})
    assert farm.wait_final(first)["outcome"]["version"] == 1
    script.write_text("def run(job, report):\n    return {'version': 2}\n")
    scripts.push(script, settings=farm.settings)
    latest, pinned = farm.submit({"scriptName": "ver"}, {"scriptName": "ver", "scriptHash": old["sha256"][:12]})
    assert farm.wait_final(latest)["outcome"]["version"] == 2
    assert farm.wait_final(pinned)["outcome"]["version"] == 1
    with pytest.raises(jobs.JobError, match="no pushed version"):
        farm.submit({"scriptName": "ver", "scriptHash": "abcdef123456"})


def test_a_job_runs_the_version_newest_at_its_submit_and_a_new_hash_is_fetched(farm: Farm, tmp_path: Path) -> None:
    """The version rides in the message (``scripts.version_now``): the worker asks the store nothing
    when it has that hash cached, and fetches a hash it has not seen. The Order keeps it, so a message
    sent again (a requeued stuck Order, the reaper's re-sends) runs it too."""
    script = tmp_path / "ver.py"
    script.write_text("def run(job, report):\n    return {'version': 1}\n")
    first_hash = scripts.push(script, settings=farm.settings)["sha256"]
    [before] = farm.submit({"scriptName": "ver"})
    script.write_text("def run(job, report):\n    return {'version': 2}\n")
    second_hash = scripts.push(script, settings=farm.settings)["sha256"]
    [after] = farm.submit({"scriptName": "ver"})
    orders.requeue(before, settings=farm.settings)   # a message sent again (new delivery) runs the same version
    farm.start_worker("w1")
    assert farm.wait_final(before)["outcome"]["version"] == 1
    assert farm.wait_final(after)["outcome"]["version"] == 2
    assert farm.order(before)["script"]["sha256"] == first_hash and farm.order(after)["script"]["sha256"] == second_hash
    assert scripts.version_now("ver", settings=farm.settings)["sha256"] == second_hash
    assert scripts.version_now("toy", settings=farm.settings) == {"name": "toy", "source": "builtin"}
    assert scripts.version_now("ver", "abcdef123456", farm.settings) is None
