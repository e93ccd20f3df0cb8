"""One contract, two clients: every ``Client`` method, run over ``LocalClient`` and ``HttpClient`` alike.

Like a storage test suite run over every backend, each test here is parametrized over both clients and
asserts only what the ``Client`` protocol promises, so the HTTP client cannot drift from the service
layer (same shapes, same statuses on refusal). The last test drives the CLI from a "laptop" that has
only the HQ's URL and token.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Served, serve
from conftest import ROOT, Farm

from mlqueue import artifacts
from mlqueue.client import Client, ClientError, HttpClient, LocalClient

MISSING = "ffffffffffffffffffffffff"
SWEEP = """name: contract
base: {scriptName: toy, projectName: contract, epochs: 2}
space:
  x: {float: [-5, 5]}
objective: loss
method: random
budget: {maxTrials: 3, maxParallel: 1}
"""


@pytest.fixture(params=["local", "http"])
def client(request: pytest.FixtureRequest, farm: Farm) -> Iterator[Any]:
    """The same farm through the in-process client, then through its real API over HTTP."""
    if request.param == "local":
        yield LocalClient(farm.settings)
        return
    served: Served = serve(farm.settings)
    remote = HttpClient(served.url, served.token)
    yield remote
    remote.close()
    served.stop()


def refused(status: int, call: Any, *args: Any, **kwargs: Any) -> str:
    """Call, expect a ``ClientError`` with ``status``; return its message."""
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == status, (caught.value.status, str(caught.value))
    return str(caught.value)


def test_every_client_method_is_in_the_protocol_and_on_both_clients() -> None:
    def public(cls: type) -> set[str]:
        return {n for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}

    promised = public(Client)  # type: ignore[arg-type]
    assert promised <= public(LocalClient) and promised <= public(HttpClient)
    assert public(LocalClient) == promised, "a LocalClient method the protocol (and HttpClient) lacks"
    assert promised == COVERED, f"untested methods: {promised - COVERED}"


COVERED = {"submit", "states", "orders", "order", "cancel", "requeue", "results", "status", "workers", "log",
           "follow_log", "datasets", "dataset_push", "dataset_pull", "scripts", "script_push", "artifacts",
           "artifact_download", "sweeps", "sweep_start", "sweep_status", "sweep_best", "sweep_stop",
           "worker_command", "invite", "machines", "remove_machine"}
# Tested elsewhere: worker_command (tests/test_client.py, needs a registered worker);
# invite, machines, remove_machine (tests/test_machines.py).


def test_jobs_and_orders(client: Any) -> None:
    ids = client.submit([{"scriptName": "toy", "x": 1}, {"scriptName": "toy", "x": 2}], where=["a.json", "b.json"])
    assert len(ids) == 2 and client.states(ids) == {i: "unassigned" for i in ids}
    assert {o["jobId"] for o in client.orders(state="unassigned")} == set(ids)
    shown = client.order(ids[0])
    assert shown["jobId"] == ids[0] and shown["job"]["x"] == 1 and shown["history"][0]["to"] == "unassigned"
    assert client.log(ids[0])["lines"] == []

    assert client.cancel(ids[0])["state"] == "cancelled"
    assert "already cancelled" in refused(409, client.cancel, ids[0])
    assert [c["final"] for c in client.follow_log(ids[0])][-1] is True
    again = client.requeue(ids[0])
    assert again != ids[0] and client.order(again)["job"]["requeuedFrom"] == ids[0]
    refused(404, client.order, MISSING)
    refused(404, client.cancel, MISSING)
    refused(404, client.requeue, MISSING)
    message = refused(422, client.submit, [{"scriptName": "toy"}, {"scriptName": "toy", "timeLimit": "x"}],
                      where=["ok.json", "bad.json"])
    assert "bad.json" in message and "timeLimit" in message

    rows = client.results(ids=ids)
    assert {r["jobId"] for r in rows} == set(ids) and {r["state"] for r in rows} == {"cancelled", "unassigned"}
    status = client.status()
    assert status["orders"]["unassigned"] == 2 and status["orders"]["cancelled"] == 1
    assert client.workers() == [] and status["workers"] == []
    assert "nosuch" in refused(404, client.worker_command, "nosuch", "pause")


def test_datasets(client: Any, tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    first = client.dataset_push(data, "contract")
    assert (first["name"], first["size"], first["version"]) == ("train.csv", 8, 1)
    data.write_text("a,b\n1,2\n3,4\n")
    assert client.dataset_push(data, "contract", "renamed.csv")["version"] == 1
    assert client.dataset_push(data, "contract")["version"] == 2
    assert [d["name"] for d in client.datasets("contract")] == ["renamed.csv", "train.csv"]
    out = tmp_path / "out"
    out.mkdir()
    assert client.dataset_pull("train.csv", "contract", out).read_text() == "a,b\n1,2\n3,4\n"
    assert "not in the store" in refused(404, client.dataset_pull, "nope.csv", "contract", out)


def test_scripts(client: Any, tmp_path: Path) -> None:
    single = tmp_path / "tiny.py"
    single.write_text("import json, sys\nprint(json.dumps({'loss': 1.0}))\n")
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "main.py").write_text("def run(job, report):\n    return {'loss': 0.5}\n")
    (folder / "helper.py").write_text("X = 1\n")
    pushed = client.script_push(single)
    assert pushed["name"] == "tiny" and pushed["kind"] == "command-line" and pushed["entry"] == "tiny.py"
    bundled = client.script_push(folder, "pkg2")
    assert bundled["name"] == "pkg2" and bundled["kind"] == "module" and bundled["entry"] == "main.py"
    assert client.script_push(folder, "pkg2")["sha256"] == bundled["sha256"]  # same content: same bundle
    listed = {s["name"]: s for s in client.scripts()}
    assert listed["tiny"]["source"] == listed["pkg2"]["source"] != listed["toy"]["source"]
    (tmp_path / "empty").mkdir()
    assert "main.py" in refused(404, client.script_push, tmp_path / "empty")


def test_artifacts(client: Any, farm: Farm, tmp_path: Path) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    weights = tmp_path / "weights.bin"
    weights.write_bytes(bytes(range(256)) * 10)
    stored = artifacts.upload(job_id, weights, settings=farm.settings)
    listed = client.artifacts(job_id[:8])
    assert listed["jobId"] == job_id and [a["name"] for a in listed["artifacts"]] == ["weights.bin"]
    out = tmp_path / "down"
    out.mkdir()
    got = client.artifact_download(stored["fileId"], out)
    assert got == out / "weights.bin" and got.read_bytes() == weights.read_bytes()
    refused(404, client.artifacts, MISSING)
    refused(404, client.artifact_download, MISSING, out)


def test_sweeps(client: Any) -> None:
    refused(404, client.sweep_status)  # no sweep yet: "latest" names none
    started = client.sweep_start(SWEEP, "contract.yaml")
    sweep_id = started["sweepId"]
    assert started["name"] == "contract" and started["maxTrials"] == 3
    assert [s["sweepId"] for s in client.sweeps()] == [sweep_id]
    report = client.sweep_status(None, trials=True)
    assert report["sweepId"] == sweep_id and report["state"] == "running" and report["trialList"] == []
    assert client.sweep_status(sweep_id[:8])["name"] == "contract"
    assert client.sweep_best(sweep_id) == {"sweepId": sweep_id, "job": None, "trial": None}
    assert client.sweep_stop(sweep_id) == {"sweepId": sweep_id, "state": "stopped"}
    assert client.sweep_status(sweep_id)["state"] == "stopped"
    message = refused(422, client.sweep_start, SWEEP.replace("method: random", "method: guess"), "bad.yaml")
    assert "bad.yaml:6:" in message and "method" in message
    refused(404, client.sweep_status, MISSING)


def test_every_cli_command_works_from_a_laptop_with_only_the_url_and_token(farm: Farm, tmp_path: Path) -> None:
    served = serve(farm.settings)
    env = {k: v for k, v in farm.env.items() if not k.startswith("MLQUEUE_")}
    env.update({"MLQUEUE_HOME": str(tmp_path / "laptop"), "MLQUEUE_HQ_URL": served.url,
                "MLQUEUE_TOKEN": served.token})

    def laptop(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "mlqueue.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (args, done.stderr)
        return done

    try:
        data, pulled, got, script, sweep = (tmp_path / n for n in ("d.csv", "pulled", "got", "mine.py", "s.yaml"))
        data.write_text("x\n1\n")
        assert "laptop/d.csv  version 1" in laptop("data", "push", str(data), "--project", "laptop").stdout
        assert "d.csv" in laptop("data", "ls", "--project", "laptop").stdout
        pulled.mkdir()
        laptop("data", "pull", "d.csv", "--project", "laptop", "-o", str(pulled))
        assert (pulled / "d.csv").read_text() == "x\n1\n"
        script.write_text("print('{\"loss\": 1}')\n")
        assert "pushed mine" in laptop("scripts", "push", str(script)).stdout
        assert "mine" in laptop("scripts", "ls").stdout
        [job_id] = farm.submit({"scriptName": "toy"})
        artifacts.upload(job_id, data, "model.txt", settings=farm.settings)
        assert "model.txt" in laptop("artifacts", job_id).stdout
        laptop("artifacts", job_id, "--get", "model.txt", "-o", str(got))
        assert (got / "model.txt").read_text() == "x\n1\n"
        sweep.write_text(SWEEP)
        sweep_id = laptop("sweep", str(sweep)).stdout.strip()
        assert "state running" in laptop("sweep", "status").stdout
        assert sweep_id in laptop("sweep", "list").stdout
        assert laptop("sweep", "stop", sweep_id).stdout.strip() == f"sweep {sweep_id} stopped"
    finally:
        served.stop()
    assert farm.db.jobs.count_documents({}) == 1  # the laptop's commands all went through the API
