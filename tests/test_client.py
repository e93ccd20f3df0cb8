"""One client, two transports: the CLI driving an HQ through its API gives what it gives locally."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from api_helpers import Served, insert_finished, serve
from conftest import ROOT, Farm

from mlqueue.client import ClientError, HttpClient, LocalClient


@pytest.fixture
def api(farm: Farm) -> Iterator[Served]:
    """This test's farm served over HTTP by the real app."""
    served = serve(farm.settings)
    yield served
    served.stop()


def _laptop(farm: Farm, api: Served, *args: str, input: str | None = None, **extra: str
            ) -> subprocess.CompletedProcess:
    """`mlqueue ARGS` on a laptop: it knows the HQ's URL and token, and nothing of its broker or store."""
    env = {k: v for k, v in farm.env.items() if not k.startswith("MLQUEUE_")}
    env.update({"MLQUEUE_HOME": str(farm.home / "laptop"), "MLQUEUE_HQ_URL": api.url, "MLQUEUE_TOKEN": api.token})
    env.update(extra)
    return subprocess.run([sys.executable, "-m", "mlqueue.cli", *args], cwd=ROOT, input=input, env=env,
                          capture_output=True, text=True, timeout=120)


def test_http_and_local_clients_answer_alike(api: Served, farm: Farm) -> None:
    insert_finished(farm.db, 30, seed=3, unscored_every=4)
    remote, local = HttpClient(api.url, api.token), LocalClient(farm.settings)
    queued = remote.submit([{"scriptName": "toy", "lr": 0.5}, {"scriptName": "toy", "lr": 0.7}])
    assert local.states(queued) == remote.states(queued) == dict.fromkeys(queued, "unassigned")

    for kwargs in ({}, {"sort": "acc", "descending": True}, {"state": "failed"}, {"state": "unassigned"},
                   {"limit": 7}, {"ids": queued}):
        there, here = remote.results(**kwargs), local.results(**kwargs)
        assert [r["jobId"] for r in there] == [r["jobId"] for r in here], kwargs
        assert [r["outcome"] for r in there] == [_without_id(r["outcome"]) for r in here], kwargs
        assert [r["job"] for r in there] == [r["job"] for r in here], kwargs
    assert len(remote.results()) == 32

    shown = remote.order(queued[0])
    assert shown["job"]["lr"] == 0.5 and shown["history"][0]["at"] == local.order(queued[0])["history"][0]["at"]
    assert remote.status()["orders"] == local.status()["orders"]
    assert remote.cancel(queued[0])["state"] == "cancelled"
    with pytest.raises(ClientError) as refused:
        remote.cancel(queued[0])
    assert refused.value.status == 409 and "already cancelled" in str(refused.value)
    with pytest.raises(ClientError) as missing:
        remote.order("ffffffffffffffffffffffff")
    assert missing.value.status == 404
    assert remote.requeue(queued[0]) != queued[0]


def _without_id(outcome: dict | None) -> dict | None:
    return outcome and {k: v for k, v in outcome.items() if k != "_id"}


def test_remote_client_errors_say_what_to_do(api: Served) -> None:
    with pytest.raises(ClientError, match="wrong token"):
        HttpClient(api.url, "guess").status()
    with pytest.raises(ClientError, match="no token"):
        HttpClient(api.url, None)
    with pytest.raises(ClientError, match="cannot reach the HQ"):
        HttpClient("http://127.0.0.1:1", "t").status()
    with pytest.raises(ClientError) as bad:
        HttpClient(api.url, api.token).submit([{"scriptName": "toy"}, {"scriptName": "toy", "timeLimit": "x"}],
                                              where=["a.json", "b.json"])
    assert bad.value.status == 422 and "b.json" in str(bad.value) and "timeLimit" in str(bad.value)


def test_the_cli_drives_a_remote_hq_with_no_store_access(api: Served, farm: Farm) -> None:
    farm.start_worker("w1")
    done = _laptop(farm, api, "submit", "tasks/demo_job.json", "-", "--wait", "--timeout", "60",
                   input=json.dumps([{"scriptName": "toy", "lr": 0.3}]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("submitted ") == 2 and "succeeded" in done.stdout
    ids = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("submitted ")]

    rows = json.loads(_laptop(farm, api, "results", "--format", "json").stdout)
    assert [r["jobId"] for r in rows] == [r["jobId"] for r in json.loads(
        farm.run_cli("results", "--format", "json").stdout)]
    assert set(rows[0]) == {"jobId", "state", "outcome", "job"} and len(rows) == 2
    status = json.loads(_laptop(farm, api, "status", "--format", "json").stdout)
    assert status["orders"]["succeeded"] == 2 and status["workers"][0]["name"].startswith("w1@")
    shown = _laptop(farm, api, "show", ids[0])
    assert "SUCCEEDED after 1 attempt" in shown.stdout and "submitted" in shown.stdout
    full = _laptop(farm, api, "show", ids[0], "--full")
    assert "History:" in full.stdout and "succeeded" in full.stdout

    [queued] = farm.submit({"scriptName": "toy", "sleepSeconds": 30})
    farm.submit({"scriptName": "toy"})
    assert _laptop(farm, api, "cancel", queued).stdout.strip() == f"cancelled {queued}"
    again = _laptop(farm, api, "cancel", queued)
    assert again.returncode == 2 and "already cancelled" in again.stderr
    assert _laptop(farm, api, "requeue", queued).stdout.startswith("requeued as ")

    bad = _laptop(farm, api, "submit", "-", input='{"scriptName": "toy", "timeLimit": "x"}')
    assert bad.returncode == 2 and "timeLimit" in bad.stderr and "<stdin>" in bad.stderr
    wrong = _laptop(farm, api, "status", MLQUEUE_TOKEN="guess")
    assert wrong.returncode == 2 and "wrong token" in wrong.stderr
    flag = _laptop(farm, api, "--hq", api.url, "--token", api.token, "status", "--format", "json",
                   MLQUEUE_HQ_URL="", MLQUEUE_TOKEN="")
    assert flag.returncode == 0, flag.stderr
    assert json.loads(flag.stdout)["orders"]["cancelled"] == 1
    local_only = _laptop(farm, api, "status", MLQUEUE_HQ_URL="")
    assert local_only.returncode != 0 and "mlqueue hq" in local_only.stderr  # proof: the laptop has no store


def test_worker_commands_over_both_clients_and_the_laptop_cli(api: Served, farm: Farm) -> None:
    farm.db.workers.insert_one({"name": "w1@desk", "online": True})
    remote, local = HttpClient(api.url, api.token), LocalClient(farm.settings)
    assert remote.worker_command("w1", "drain")["worker"] == "w1@desk"
    assert farm.db.workers.find_one({"name": "w1@desk"})["control"]["action"] == "drain"
    assert local.worker_command("w1@desk", "resume")["action"] == "resume"
    assert "control" not in farm.db.workers.find_one({"name": "w1@desk"})
    for client in (remote, local):
        with pytest.raises(ClientError) as missing:
            client.worker_command("nosuch", "pause")
        assert missing.value.status == 404 and "w1@desk" in str(missing.value)
    with pytest.raises(ClientError) as bad:
        local.worker_command("w1", "reboot")
    assert bad.value.status == 422
    paused = _laptop(farm, api, "workers", "pause", "w1")
    assert paused.returncode == 0 and "w1@desk: pause requested" in paused.stdout
