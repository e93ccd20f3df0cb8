"""The HQ and its servers: restarts lose nothing, the home config is all a local process needs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
from conftest import ROOT, make_farm, start_hq, start_servers, wait_for

from mlqueue import store
from mlqueue.settings import reload_settings


def test_servers_stopped_and_restarted_lose_no_job_and_workers_reconnect(tmp_path: Path, monkeypatch) -> None:
    own = start_servers(tmp_path / "srv")
    farm = make_farm(own, tmp_path, "restart", monkeypatch)
    try:
        farm.start_worker("w1")
        running = farm.submit({"scriptName": "toy", "epochs": 8, "sleepSeconds": 8, "a": 1.0})[0]
        queued = farm.submit(*({"scriptName": "toy", "b": float(i)} for i in range(3)))
        wait_for(lambda: farm.order(running)["state"] == "running", what="first job to start")
        own.redis.stop()
        own.mongo.stop()
        time.sleep(3)
        own.redis.start()
        own.mongo.start()
        store.forget_clients()
        for job_id in [running, *queued]:
            order = farm.wait_final(job_id, timeout=150)
            assert order["state"] == "succeeded", (job_id, order.get("outcome"))
        assert farm.db.outcomes.count_documents({}) == 4
        assert farm.db.orders.find_one({"jobId": running})["attempts"] == 1
        late = farm.submit({"scriptName": "toy", "c": 2.0})[0]
        assert farm.wait_final(late, timeout=60)["state"] == "succeeded"
    finally:
        farm.stop_all()
        own.mongo.stop()
        own.redis.stop()
        monkeypatch.undo()  # settings must not keep pointing at these stopped servers for later tests
        reload_settings()
        store.forget_clients()


def test_acknowledged_writes_survive_a_kill_9_of_both_servers(tmp_path: Path) -> None:
    own = start_servers(tmp_path / "srv")
    try:
        with pymongo.MongoClient(own.mongo.url) as client:
            client.mlq.things.insert_many([{"i": i} for i in range(50)])
        import redis

        redis.Redis.from_url(own.redis.url).rpush("queue", *range(20))
        own.mongo.kill()
        own.redis.kill()
        own.mongo.start()
        own.redis.start()
        with pymongo.MongoClient(own.mongo.url) as client:
            assert client.mlq.things.count_documents({}) == 50
        assert redis.Redis.from_url(own.redis.url).llen("queue") == 20
    finally:
        own.mongo.stop()
        own.redis.stop()


def test_hq_writes_its_home_config_prints_the_join_command_and_stops_its_servers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    hq = start_hq(home)
    lines: list[str] = []
    try:
        wait_for(lambda: lines.append(hq.stdout.readline()) or any("celery -A mlqueue worker" in ln for ln in lines)
                 and any("MLQUEUE_BROKER_URL=" in ln for ln in lines), timeout=90, what="HQ banner")
        config = json.loads((home / "config.json").read_text())
        assert config["redis_port"] and config["mongo_port"] and config["redis_password"] and config["token"]
        assert oct((home / "config.json").stat().st_mode)[-3:] == "600"
        join = next(ln for ln in lines if "MLQUEUE_BROKER_URL=" in ln)
        assert config["redis_password"] in join and str(config["redis_port"]) in join
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
        status = subprocess.run([sys.executable, "-m", "mlqueue.cli", "status", "--format", "json"], cwd=ROOT,
                                env={**env, "MLQUEUE_HOME": str(home)}, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["orders"]["unassigned"] == 0
    finally:
        hq.send_signal(signal.SIGTERM)
        hq.wait(60)
    with pymongo.MongoClient(f"mongodb://127.0.0.1:{config['mongo_port']}/?directConnection=true",
                             serverSelectionTimeoutMS=1000) as client:
        try:
            client.admin.command("ping")
            raise AssertionError("the HQ's MongoDB server outlived the HQ")
        except pymongo.errors.ServerSelectionTimeoutError:
            pass


def test_a_sweep_submitted_without_waiting_is_driven_by_the_hq(tmp_path: Path) -> None:
    home = tmp_path / "home"
    hq = start_hq(home)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}, "MLQUEUE_HOME": str(home)}
    worker = None
    try:
        wait_for(lambda: "HQ is up" in (hq.stdout.readline() or ""), timeout=90, what="HQ banner")
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-c", "1", "-n",
                                   "hqw@%h"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        sweep = tmp_path / "tiny.yaml"
        sweep.write_text("name: tiny\nbase: {scriptName: toy}\nspace:\n  x: {float: [-1, 1]}\n"
                         "objective: loss\nmethod: random\nbudget: {maxTrials: 3, maxParallel: 1}\n")
        started = subprocess.run([sys.executable, "-m", "mlqueue.cli", "sweep", str(sweep)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        sweep_id = started.stdout.split()[0]

        def finished() -> bool:
            shown = subprocess.run([sys.executable, "-m", "mlqueue.cli", "results", "--format", "json"], cwd=ROOT,
                                   env=env, capture_output=True, text=True, timeout=60)
            rows = [r for r in json.loads(shown.stdout or "[]") if r["job"].get("sweepId") == sweep_id]
            return len(rows) == 3 and all(r["state"] == "succeeded" for r in rows)

        wait_for(finished, timeout=120, what="the HQ's driver to run all 3 trials")
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        hq.send_signal(signal.SIGTERM)
        hq.wait(60)
