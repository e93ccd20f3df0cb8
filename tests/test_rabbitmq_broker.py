"""RabbitMQ as the broker: a real node (tests/rabbit.py), the embedded store, real worker processes.

One node serves the whole module; each test has its own queue and database names, as with Redis. What
needs a Redis besides messages (sweeps' studies, pruning verdicts, per-machine broker users) either
uses a separate Redis or says what to set (docs/scaling.md, mlqueue/brokers.py).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp
import httpx
import pytest
from api_helpers import serve
from conftest import ROOT, Farm, Servers, make_farm, wait_for
from rabbit import RabbitServer, server_binary
from test_sweeps import run_rung_sweep, sweep_orders

from mlqueue import invites, machines, routing, store, stranded, worker_control
from mlqueue.errors import ConfigError
from mlqueue.settings import reload_settings


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    binary = server_binary()
    if binary is None:
        reason = "no rabbitmq-server on this machine (`make test` installs Debian's rabbitmq-server)"
        print(reason)
        pytest.skip(reason)
    server = RabbitServer(tmp_path_factory.mktemp("rabbit"), binary).start()
    yield server
    server.stop()


@pytest.fixture
def rabbit_farm(servers: Servers, rabbit: RabbitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., Farm]]:
    """Makes a farm whose broker is the RabbitMQ node (extra MLQUEUE_* settings as keywords)."""
    made: list[Farm] = []

    def make(**extra_env: str) -> Farm:
        name = f"r{secrets.token_hex(4)}"
        farm = make_farm(servers, tmp_path / name, name, monkeypatch, MLQUEUE_BROKER_URL=rabbit.url, **extra_env)
        farm.home.mkdir(parents=True, exist_ok=True)
        made.append(farm)
        return farm

    yield make
    for farm in made:
        farm.stop_all()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            for log in farm.home.glob("worker-*.log"):
                print(f"----- {log.name}\n{log.read_text()[-4000:]}")
        store.client(farm.settings).drop_database(farm.settings.mongo_db)
    reload_settings()


def queue_type_is(rabbit: RabbitServer, queue: str, wanted: str) -> bool:
    """Declaring ``queue`` again with ``x-queue-type: wanted`` succeeds only if it already is of that type."""
    conn = amqp.Connection(f"127.0.0.1:{rabbit.port}", userid=rabbit.user, password=rabbit.password)
    conn.connect()
    try:
        conn.channel().queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": wanted})
        return True
    except amqp.exceptions.PreconditionFailed:
        return False
    finally:
        conn.collect()


def test_jobs_run_end_to_end_with_rabbitmq_as_the_broker(rabbit_farm: Callable[..., Farm]) -> None:
    farm = rabbit_farm()
    farm.start_worker("w1")
    ids = farm.submit(*[{"scriptName": "toy", "x": float(i), "epochs": 2} for i in range(3)])
    for job_id in ids:
        assert farm.wait_final(job_id)["state"] == "succeeded"
        assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    assert stranded.resend("test", farm.settings) == 0  # RabbitMQ re-queues a dead consumer's messages itself
    served = serve(farm.settings)
    try:
        health = httpx.get(f"{served.url}/health").json()
    finally:
        served.stop()
    assert health["ok"] and health["broker"]["ok"] and health["mongo"]["ok"]
    assert health["redis"] == {"ok": True, "used": False} and health["workers"]["online"] == 1


def test_a_worker_killed_mid_job_still_gives_exactly_one_outcome(rabbit_farm: Callable[..., Farm]) -> None:
    farm = rabbit_farm()
    first = farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 20, "sleepSeconds": 6, "y": 1.5})
    wait_for(lambda: len(farm.order(job_id).get("metrics", [])) >= 2, what="job to make progress on w1")
    farm.start_worker("w2")  # online when w1 dies: RabbitMQ hands it w1's unacked message at once
    farm.kill_worker(first)
    order = farm.wait_final(job_id, timeout=120)
    assert order["state"] == "succeeded" and order["attempts"] == 2 and order["outcome"]["worker"].startswith("w2@")
    assert any("lost" in e["why"] and "w1@" in e["why"] for e in order["history"])
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1


def test_quorum_queues_and_remote_control_over_amqp(rabbit: RabbitServer, rabbit_farm: Callable[..., Farm]) -> None:
    farm = rabbit_farm(MLQUEUE_QUORUM_QUEUES="1")
    farm.start_worker("small", MLQUEUE_CAPABILITIES='{"memoryGB": 2}')
    farm.start_worker("big", MLQUEUE_CAPABILITIES='{"memoryGB": 64}')
    ids = farm.submit(*[{"scriptName": "toy", "x": float(i), "requires": {"memoryGB": 16}} for i in range(3)])
    for job_id in ids:  # the class queue reached "big" by add_consumer, a Celery remote-control broadcast
        assert farm.wait_final(job_id)["outcome"]["worker"].startswith("big@")
        assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    from mlqueue.celery_app import app_for

    big = farm.db.workers.find_one({"name": {"$regex": "^big@"}})["name"]
    assert app_for(farm.settings).control.ping(destination=[big], timeout=5)
    class_queue = routing.class_queue(farm.settings.queue, farm.order(ids[0])["requirementClass"])
    for queue in (farm.settings.queue, class_queue, routing.worker_queue(farm.settings.queue, big)):
        assert queue_type_is(rabbit, queue, "quorum"), queue
        assert not queue_type_is(rabbit, queue, "classic"), queue

    # pause from the HQ: the worker suspends its Job and cancels its (quorum) queues; resume consumes them again
    [held] = farm.submit({"scriptName": "toy", "epochs": 6, "sleepSeconds": 3, "requires": {"memoryGB": 16}})
    wait_for(lambda: farm.order(held)["state"] == "running", what="the Job to start on big")
    worker_control.command(big, "pause", settings=farm.settings)
    wait_for(lambda: any("paused" in e["why"] for e in farm.order(held)["history"]), what="big to pause its Job")
    [after] = farm.submit({"scriptName": "toy", "x": 9.0, "requires": {"memoryGB": 16}})
    worker_control.command(big, "resume", settings=farm.settings)
    assert farm.wait_final(held)["state"] == "succeeded"
    assert farm.wait_final(after)["outcome"]["worker"] == big


def test_without_a_redis_sweeps_say_what_to_set_joining_refuses_and_rung_waits_are_skipped(
        rabbit_farm: Callable[..., Farm]) -> None:
    farm = rabbit_farm()
    from mlqueue.sweeps import driver

    with pytest.raises(ConfigError, match="MLQUEUE_REDIS_URL"):
        driver.study_storage(farm.settings)
    code = invites.create(settings=farm.settings)["code"]
    with pytest.raises(machines.BrokerRefused, match="rabbitmqctl add_user"):
        machines.enroll("laptop", code, "127.0.0.1", farm.settings)
    assert farm.db.invites.find_one({"usedAt": None}) is not None  # the refused join did not spend the code
    assert machines.restore_access(farm.settings) == 0             # what the HQ runs at every start
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 3, "sleepSeconds": 0, "sweepId": "none",
                            "pruneSteps": {"field": "epoch", "steps": [1, 2, 3]}})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded" and len(order["metrics"]) == 3
    assert not (order["outcome"].get("rungWaits") or {}).get("steps")  # no Redis: no verdict to wait for


def test_a_sweep_with_rabbitmq_and_a_separate_redis_gets_its_verdicts_at_every_rung(
        servers: Servers, rabbit_farm: Callable[..., Farm], tmp_path: Path) -> None:
    """test_sweeps' rung test, with RabbitMQ carrying the trials and the session's Redis the verdicts."""
    farm = rabbit_farm(MLQUEUE_REDIS_URL=servers.redis.url)
    farm.start_worker("w1")
    sweep_id, doc = run_rung_sweep(farm, tmp_path, trials=3)
    assert doc["state"] == "done" and doc["toldCount"] == 3
    states = sorted(o["state"] for o in sweep_orders(farm, sweep_id))
    assert states == ["pruned", "pruned", "succeeded"]
    for order in sweep_orders(farm, sweep_id):
        assert order["outcome"]["rungWaits"]["steps"] == [1] and order["outcome"]["rungWaits"]["timedOut"] == 0


def test_an_hq_with_rabbitmq_starts_its_redis_beside_it_for_sweeps(rabbit: RabbitServer, tmp_path: Path) -> None:
    home = tmp_path / "hq"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    hq = subprocess.Popen([sys.executable, "-m", "mlqueue.cli", "hq", "--home", str(home), "--redis-port", "0",
                           "--mongo-port", "0", "--port", "0"], cwd=ROOT, env={**env, "MLQUEUE_BROKER_URL": rabbit.url},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        wait_for(lambda: lines.append(hq.stdout.readline()) or any("MLQUEUE_BROKER_URL=" in ln for ln in lines),
                 timeout=90, what="HQ banner")
        config = json.loads((home / "config.json").read_text())
        assert config["broker_url"] == rabbit.url and config["redis_url"].startswith("redis://")
        assert config["embedded"] == {"redis": True, "mongo": True}
        join = next(ln for ln in lines if "MLQUEUE_BROKER_URL=" in ln)
        assert "MLQUEUE_REDIS_URL='redis://" in join and f":{rabbit.port}/" in join
        health = httpx.get(f"http://127.0.0.1:{config['http_port']}/health", timeout=30).json()
        assert health["ok"] and health["broker"] == {"ok": True} and health["redis"] == {"ok": True}
    finally:
        hq.send_signal(signal.SIGTERM)
        hq.wait(60)


def test_the_broker_killed_and_restarted_loses_no_job(rabbit: RabbitServer, rabbit_farm: Callable[..., Farm]
                                                      ) -> None:
    """Queues are durable and messages persistent: what was queued survives ``kill -9`` of the node."""
    farm = rabbit_farm()
    farm.start_worker("w1")
    running, *queued = farm.submit({"scriptName": "toy", "epochs": 10, "sleepSeconds": 5, "a": 1.0},
                                   *({"scriptName": "toy", "b": float(i)} for i in range(3)))
    wait_for(lambda: len(farm.order(running).get("metrics", [])) >= 2, what="the long job to make progress")
    rabbit.kill()
    rabbit.start()
    for job_id in [running, *queued]:
        assert farm.wait_final(job_id, timeout=120)["state"] == "succeeded"
        assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    assert farm.order(running)["attempts"] == 1  # the worker ran on through the outage; its heartbeat is the store's
    [late] = farm.submit({"scriptName": "toy", "c": 2.0})
    assert farm.wait_final(late)["state"] == "succeeded"
