"""The mlqueue command as a user types it, against real servers and a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, Farm


def test_submit_wait_then_results_json_has_one_row_per_job(farm: Farm) -> None:
    farm.start_worker("w1")
    done = farm.run_cli("submit", "tasks/demo_job.json", "-", "--wait", "--timeout", "60",
                        input=json.dumps([{"scriptName": "toy", "lr": 0.3}, {"scriptName": "toy", "lr": 9}]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("submitted ") == 3 and "succeeded" in done.stdout
    listed = farm.run_cli("results", "--format", "json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 3
    assert set(rows[0]) == {"jobId", "state", "outcome", "job"}
    assert all(r["state"] == "succeeded" and r["outcome"]["status"] == 200 for r in rows)
    losses = [r["outcome"]["loss"] for r in rows]
    assert losses == sorted(losses)
    assert "createdDate" not in rows[0]["job"] and rows[0]["job"]["scriptName"] == "toy"
    csv_out = farm.run_cli("results", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("jobId,state,") and len(csv_out) == 4


def test_bad_submission_is_refused_and_stores_nothing(farm: Farm) -> None:
    result = farm.run_cli("submit", "-", input='[{"scriptName": "toy"}, {"scriptName": "toy", "timeLimit": "x"}]')
    assert result.returncode == 2
    assert "timeLimit" in result.stderr and "nothing was stored" in result.stderr
    malformed = farm.run_cli("submit", "-", input='{"scriptName": "toy",')
    assert malformed.returncode == 2 and "line 1" in malformed.stderr
    missing = farm.run_cli("submit", "no/such/file.json")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert farm.db.jobs.count_documents({}) == 0 and farm.db.orders.count_documents({}) == 0


def test_status_shows_states_and_workers(farm: Farm) -> None:
    farm.start_worker("w1")
    farm.submit({"scriptName": "toy"})
    status = json.loads(farm.run_cli("status", "--format", "json").stdout)
    assert set(status["orders"]) >= {"unassigned", "running", "succeeded", "failed", "cancelled"}
    assert sum(status["orders"].values()) == 1
    assert status["workers"][0]["name"].startswith("w1@") and status["workers"][0]["online"] is True
    table = farm.run_cli("status").stdout
    assert "Orders:" in table and "w1@" in table


def test_show_cancel_requeue_by_id(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    assert farm.run_cli("cancel", job_id).stdout.strip() == f"cancelled {job_id}"
    again = farm.run_cli("cancel", job_id)
    assert again.returncode == 2 and "already cancelled" in again.stderr
    shown = farm.run_cli("show", job_id)
    assert "cancelled" in shown.stdout and "submitted" in shown.stdout
    assert farm.run_cli("requeue", job_id).stdout.startswith("requeued as ")
    unknown = farm.run_cli("cancel", "ffffffffffffffffffffffff")
    assert unknown.returncode == 2 and "no job" in unknown.stderr


def test_commands_without_an_hq_say_how_to_configure_one(farm: Farm, tmp_path) -> None:
    result = farm.run_cli("status", MLQUEUE_BROKER_URL="", MLQUEUE_MONGO_URL="", MLQUEUE_HOME=str(tmp_path / "x"))
    assert result.returncode != 0 and "mlqueue hq" in result.stderr


def _cli_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlqueue.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_after_make_run_the_readme_commands_find_the_demo_home_and_a_lost_cli_says_where_it_looked(
        farm: Farm, tmp_path: Path) -> None:
    checkout, user_home = tmp_path / "checkout", tmp_path / "user"
    (checkout / ".mlqueue-demo").mkdir(parents=True)
    user_home.mkdir()
    (checkout / ".mlqueue-demo" / "config.json").write_text(json.dumps(
        {k: getattr(farm.settings, k) for k in ("broker_url", "mongo_url", "mongo_db", "queue")}))
    fresh_shell = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    fresh_shell.update(HOME=str(user_home), PYTHONPATH=str(ROOT))
    [job_id] = farm.submit({"scriptName": "toy"})
    status = _cli_in(checkout, fresh_shell, "status")
    assert status.returncode == 0 and "unassigned 1" in status.stdout, status.stderr
    assert job_id[:8] in _cli_in(checkout, fresh_shell, "show", job_id[:8]).stdout
    library = subprocess.run([sys.executable, "-c", "from mlqueue.settings import get_settings as g; "
                              "print(g().mongo_url)"], cwd=checkout, env=fresh_shell, capture_output=True, text=True)
    assert library.stdout.strip() == "None", "only the command line may guess the demo's home"

    lost = _cli_in(tmp_path, {**fresh_shell, "MLQUEUE_HOME": str(tmp_path / "nowhere")}, "status")
    assert lost.returncode != 0
    assert f"{tmp_path / 'nowhere' / 'config.json'} does not exist" in lost.stderr
    assert "--home .mlqueue-demo" in lost.stderr and "--hq http://HQ:8350 --token TOKEN" in lost.stderr
    missing = farm.run_cli("show", "123456")
    assert missing.returncode == 2 and "`mlqueue results` lists Job ids" in missing.stderr
