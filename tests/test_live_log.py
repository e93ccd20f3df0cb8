"""Live output: a running script's lines reach the API's stream and ``mlqueue logs -f`` while it runs,
numbered without gaps; printed metric lines become metric points. Real worker, real API over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import Served, serve
from conftest import ROOT, Farm, wait_for

from mlqueue import live_log, metric_lines, orders, scripts
from mlqueue.client import ClientError, HttpClient, LocalClient

GATED = '''\
"""Prints as it goes, then waits for the test to open its gate before it ends."""
import os
import time


def run(job, report):
    for i in range(1, 4):
        print(f"step {i}", flush=True)
    print("metric: loss=0.5 epoch=1")
    print('{"metric": {"loss": 0.25, "epoch": 2}}')
    while not os.path.exists(job["gate"]):
        time.sleep(0.05)
    print("done")
    return {"status": 200, "loss": 0.25}
'''

GATED_COMMAND_LINE = '''\
import json, os, sys, time
job = json.loads(sys.argv[1])
print("hello from a command-line script", flush=True)
print("metric: acc=0.75, epoch=1", flush=True)
while not os.path.exists(job["gate"]):
    time.sleep(0.05)
print(json.dumps({"status": 200, "metric": 0.75}))
'''


@pytest.fixture
def api(farm: Farm) -> Iterator[Served]:
    served = serve(farm.settings)
    yield served
    served.stop()


def push(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    scripts.push(path, name)


def test_metric_lines_in_both_documented_forms_and_nothing_else() -> None:
    assert metric_lines.parse("metric: loss=0.31 epoch=4") == {"loss": 0.31, "epoch": 4}
    assert metric_lines.parse("  Metrics: acc=0.9, phase=warmup ok=true") == {"acc": 0.9, "phase": "warmup",
                                                                               "ok": True}
    assert metric_lines.parse('{"metric": {"loss": 0.2, "epoch": 5}}') == {"loss": 0.2, "epoch": 5}
    for ordinary in ("epoch 4 loss 0.3", '{"status": 200, "metric": 0.9}', '{"metric": 0.9}', "metric:",
                     "{not json", "the metric: is fine", ""):
        assert metric_lines.parse(ordinary) is None, ordinary


def test_a_running_jobs_lines_stream_live_and_the_stream_ends_with_the_job(
        api: Served, farm: Farm, tmp_path: Path) -> None:
    push(tmp_path, "gated", GATED)
    farm.start_worker("w1")
    gate = tmp_path / "gate"
    [job_id] = farm.submit({"scriptName": "gated", "gate": str(gate)})
    http = api.http()

    with http.stream("GET", f"/orders/{job_id}/log", params={"follow": "true"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = live_log.parse_sse(response.iter_lines())
        seen = [next(events) for _ in range(5)]
        assert [e for e, _ in seen] == ["line"] * 5
        assert [d["line"] for _, d in seen][:3] == ["step 1", "step 2", "step 3"]
        assert [d["seq"] for _, d in seen] == [1, 2, 3, 4, 5]
        assert farm.order(job_id)["state"] == "running"  # streamed before the Job ended
        gate.touch()
        rest = list(events)
    assert rest == [("line", rest[0][1]), ("end", {"jobId": job_id, "state": "succeeded"})]
    assert rest[0][1]["line"] == "done" and rest[0][1]["seq"] == 6

    order = farm.wait_final(job_id)
    printed = [{k: v for k, v in m.items() if k != "at"} for m in order["metrics"]]
    assert printed == [{"loss": 0.5, "epoch": 1}, {"loss": 0.25, "epoch": 2}]

    once = http.get(f"/orders/{job_id[:10]}/log", params={"after": 4}).json()
    assert [line["line"] for line in once["lines"]] == ['{"metric": {"loss": 0.25, "epoch": 2}}', "done"]
    assert once["next"] == 6 and once["final"] is True and once["state"] == "succeeded"
    resumed = http.get(f"/orders/{job_id}/log", params={"follow": "true"}, headers={"Last-Event-ID": "5"})
    assert [e for e, _ in live_log.parse_sse(iter(resumed.text.splitlines()))] == ["line", "end"]
    missing = http.get("/orders/ffffffffffffffffffffffff/log", params={"follow": "true"})
    assert missing.status_code == 404 and "no job" in missing.json()["error"]
    assert api.http(token="wrong").get(f"/orders/{job_id}/log").status_code == 401


def test_logs_follow_prints_lines_as_they_come_and_exits_when_the_job_ends(
        api: Served, farm: Farm, tmp_path: Path) -> None:
    push(tmp_path, "gated_cl", GATED_COMMAND_LINE)
    farm.start_worker("w1")
    gate = tmp_path / "gate"
    [job_id] = farm.submit({"scriptName": "gated_cl", "gate": str(gate)})
    cli = subprocess.Popen([sys.executable, "-m", "mlqueue.cli", "--hq", api.url, "--token", api.token,
                            "logs", "-f", job_id], cwd=ROOT, env={k: v for k, v in farm.env.items()
                                                                    if not k.startswith("MLQUEUE_")},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline() == "hello from a command-line script\n"
        assert cli.stdout.readline() == "metric: acc=0.75, epoch=1\n"
        assert farm.order(job_id)["state"] == "running" and cli.poll() is None  # still following
        gate.touch()
        assert cli.stdout.readline() == '{"status": 200, "metric": 0.75}\n'
        assert cli.wait(60) == 0
        assert f"job {job_id} ended: succeeded" in cli.stderr.read()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    wait_for(lambda: farm.order(job_id).get("metrics"), what="the printed metric point")
    assert [m["acc"] for m in farm.order(job_id)["metrics"]] == [0.75]

    local = farm.run_cli("logs", job_id[:12])  # on the HQ's machine: no --hq needed
    assert local.returncode == 0 and local.stdout.splitlines()[0] == "hello from a command-line script"
    for where in ([], ["--hq", api.url, "--token", api.token]):
        missing = farm.run_cli(*where, "logs", "-f", "ffffffffffffffffffffffff")
        assert missing.returncode == 2 and "no job" in missing.stderr and "Traceback" not in missing.stderr


def test_job_output_reads_alike_over_both_clients(api: Served, farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})  # no worker: the lines are written as a worker would
    lines = [{"at": orders.now(), "stream": "stderr" if i == 1 else "stdout", "line": f"line {i}"} for i in range(3)]
    orders.append_log(farm.order(job_id), lines, farm.settings)
    remote, local = HttpClient(api.url, api.token), LocalClient(farm.settings)
    for client in (remote, local):
        got = client.log(job_id[:10], 1)
        assert [(x["seq"], x["stream"], x["line"]) for x in got["lines"]] == [(2, "stderr", "line 1"),
                                                                              (3, "stdout", "line 2")]
        assert got["next"] == 3 and got["final"] is False and got["state"] == "unassigned"
    local.cancel(job_id)
    for client in (remote, local):
        chunks = list(client.follow_log(job_id, 0))
        assert [x["line"] for c in chunks for x in c["lines"]] == ["line 0", "line 1", "line 2"]
        assert chunks[-1]["final"] and chunks[-1]["state"] == "cancelled"
        with pytest.raises(ClientError) as missing:
            list(client.follow_log("ffffffffffffffffffffffff"))
        assert missing.value.status == 404


def test_lines_keep_their_numbers_after_the_oldest_are_trimmed(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    order = farm.order(job_id)
    for start in range(0, orders.LOG_LINES_KEPT + 10, 1000):
        orders.append_log(order, [{"at": orders.now(), "stream": "stdout", "line": f"n{i + 1}"}
                                  for i in range(start, min(start + 1000, orders.LOG_LINES_KEPT + 10))], farm.settings)
    everything = live_log.read(job_id, 0, farm.settings)
    assert len(everything["lines"]) == orders.LOG_LINES_KEPT and everything["next"] == orders.LOG_LINES_KEPT + 10
    assert everything["lines"][0] == {**everything["lines"][0], "seq": 11, "line": "n11"}  # 1-10 were trimmed
    tail = live_log.read(job_id, orders.LOG_LINES_KEPT + 5, farm.settings)
    assert [x["line"] for x in tail["lines"]] == [f"n{i}" for i in range(5006, 5011)]
    assert live_log.read(job_id, tail["next"], farm.settings)["lines"] == []
