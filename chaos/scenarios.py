"""One function per fault kind. Each builds its house, drives Jobs through the fault, and returns the tally.

Every scenario takes its sizes as arguments: ``QUICK`` (seconds each, run by ``make test``) and ``FULL``
(``make chaos``) below. The faults are real: SIGKILL/SIGSTOP of worker process groups, SIGKILL of the
HQ and its embedded servers, a server killed and restarted on its port, a link of a network namespace
set down, a tmpfs filled to its last byte, a dataset deleted from the store.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from chaos import netns
from chaos.house import ROOT, House, HouseError, wait_until
from chaos.tally import Tally, read
from mlqueue import datasets, store
from mlqueue.servers import ServerError, free_port

Scenario = Callable[..., Tally]


def _finish(house: House, name: str, faults: dict[str, int], settle: float, notes: list[str] | None = None) -> Tally:
    settled = house.settle(settle)
    tally = read(name, house.settings, faults)
    tally.notes = [*tally.notes, *(notes or [])]
    if not settled:
        tally.notes.append(f"did not settle within {settle:.0f}s: {house.states()}")
    return tally


def _running(house: House) -> list[dict[str, Any]]:
    return list(house.db.orders.find({"state": "running"}, {"jobId": 1, "worker": 1}))


# --------------------------------------------------------------------------- worker faults


def kill_storm(root: Path, kills: int = 100, jobs: int = 300, workers: int = 3, seconds: float = 0.6) -> Tally:
    """SIGKILL whole workers (main process and pool) at random while short Jobs run; restart each at once."""
    house = House(root).start()
    rng = random.Random(18)
    try:
        house.start_workers(workers)
        house.submit(jobs, seconds=seconds)
        done = 0
        while done < kills:
            time.sleep(rng.uniform(0.3, 1.2))
            ready = [w for w in house.workers.values() if w.alive and house.db.workers.find_one(
                {"name": {"$regex": f"^{w.name}@"}, "pid": {"$exists": True}, "online": True,
                 "startedDate": {"$gt": _utc(w.started - 1)}})]
            if not ready:
                continue
            victim = rng.choice(ready)
            house.kill(victim.name)
            done += 1
            house.start_worker(victim.name, wait=False)
            if house.unfinished() < workers * 2:  # keep Jobs flowing until every kill is done
                house.submit(workers * 4, seconds=seconds)
        return _finish(house, "kill storm", {"worker SIGKILL": done}, settle=240 + jobs)
    finally:
        house.close()


def sleeping_laptops(root: Path, sleeps: int = 8, jobs: int = 40, workers: int = 3, seconds: float = 2.0) -> Tally:
    """SIGSTOP a worker running a Job for twice ``lost_after``, then SIGCONT it: its late result is discarded."""
    house = House(root).start()
    rng = random.Random(7)
    try:
        house.start_workers(workers)
        house.submit(jobs // 2, seconds=seconds)
        house.submit(jobs - jobs // 2, seconds=seconds, silent=True)  # no reports: its late result is delivered
        done = 0
        while done < sleeps and house.unfinished():
            busy = {o["worker"].split("@")[0] for o in _running(house) if o.get("worker")}
            candidates = [w for w in house.workers.values() if w.name in busy and w.alive]
            if not candidates:
                time.sleep(0.2)
                continue
            laptop = rng.choice(candidates)
            laptop.signal(signal.SIGSTOP)
            time.sleep(house.lost_after * 2 + 1)
            laptop.signal(signal.SIGCONT)
            done += 1
            time.sleep(rng.uniform(0.5, 2.0))
        return _finish(house, "sleeping laptops", {"SIGSTOP past lost_after": done}, settle=300)
    finally:
        house.close()


def long_job_visibility(root: Path, jobs: int = 3, seconds: float = 10.0, joins: int = 3) -> Tally:
    """A Job longer than the broker's visibility timeout (2 s): Redis hands its message out again; not run twice."""
    house = House(root, worker_env={"MLQUEUE_VISIBILITY_TIMEOUT": "2"}).start()
    try:
        house.start_worker("w0")
        house.submit(jobs, seconds=seconds)
        wait_until(lambda: _running(house), 60, "a Job to start")
        for i in range(joins):  # each worker starting restores messages unacked for longer than the timeout
            time.sleep(3)
            house.start_worker(f"late{i}")
        tally = _finish(house, "long job > visibility", {"messages past visibility timeout": joins}, settle=180)
        tally.faults["redelivered, ignored"] = tally.duplicates_ignored
        return tally
    finally:
        house.close()


# --------------------------------------------------------------------------- server faults


def broker_killed(root: Path, kills: int = 4, jobs: int = 40, seconds: float = 1.0) -> Tally:
    """SIGKILL Redis alone while workers run, restart it on its port: workers reconnect on their own."""
    return _server_killed(root, "redis", "broker alone killed", kills, jobs, seconds)


def store_killed(root: Path, kills: int = 4, jobs: int = 40, seconds: float = 1.0) -> Tally:
    """SIGKILL the store alone while workers run, restart it: heartbeats and Outcomes are retried, none lost."""
    return _server_killed(root, "mongo", "store alone killed", kills, jobs, seconds)


def _server_killed(root: Path, which: str, name: str, kills: int, jobs: int, seconds: float) -> Tally:
    house = House(root).start()
    try:
        pids = {}
        for i in range(2):
            pids[f"w{i}"] = house.start_worker(f"w{i}").proc.pid
        house.submit(jobs, seconds=seconds)
        server = house.redis if which == "redis" else house.mongo
        notes: list[str] = []
        for _ in range(kills):
            wait_until(lambda: _running(house), 120, "a Job to run")
            server.kill()
            time.sleep(2)
            _restart(server, notes)
            if which == "redis":
                house.submit(jobs // kills, seconds=seconds)  # submitted right after the restart
        tally = _finish(house, name, {f"{which} SIGKILL": kills}, settle=300, notes=notes)
        if any(w.proc.pid != pids[n] or not w.alive for n, w in house.workers.items()):
            tally.notes.append("a worker had to be restarted")
        return tally
    finally:
        house.close()


def _restart(server: Any, notes: list[str], tries: int = 5) -> None:
    """Start a killed server again on its port, as an operator would: retrying if the port is not free yet."""
    for attempt in range(1, tries + 1):
        try:
            server.start()
            return
        except ServerError:
            if attempt == tries:
                raise
            tail = server.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            notes.append(f"restart {attempt} failed ({tail[0][:120]}); retried")
            time.sleep(1)


def hq_crash(root: Path, crashes: int = 3, jobs: int = 40, seconds: float = 1.5) -> Tally:
    """SIGKILL ``mlqueue hq`` with its embedded servers and Flower while Jobs queue and run; restart on its home."""
    home = root / "hq-home"
    ports = [str(free_port()) for _ in range(3)]
    hq = _start_hq(home, ports)
    house = House(root / "house", name="mlqueue")  # the HQ's own database and queue, which its reaper watches
    try:
        config = json.loads((home / "config.json").read_text())
        house.attach(config["broker_url"], config["mongo_url"], reaper=False)  # the HQ runs the reaper
        house.start_workers(2)
        house.submit(jobs, seconds=seconds)
        for _ in range(crashes):
            wait_until(lambda: _running(house), 120, "a Job to run")
            hq.kill_group()
            time.sleep(1)
            hq = _start_hq(home, ports)
            store.forget_clients()
        return _finish(house, "HQ crash", {"HQ+servers SIGKILL": crashes}, settle=300)
    finally:
        house.close()
        hq.stop()


class _HQ:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def kill_group(self) -> None:
        import os

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        import os

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _start_hq(home: Path, ports: list[str]) -> _HQ:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    env.update({"MLQUEUE_LOST_AFTER": "3", "MLQUEUE_TIMEOUT_GRACE": "2", "MLQUEUE_STORE_RETRY_FOR": "300",
                "MLQUEUE_MAX_ATTEMPTS": "50"})
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "hq-console.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "mlqueue.cli", "hq", "--home", str(home), "--redis-port", ports[0],
                             "--mongo-port", ports[1], "--port", ports[2]], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    hq = _HQ(proc)
    try:
        wait_until(lambda: _healthy(f"http://127.0.0.1:{ports[2]}/health") or proc.poll() is not None, 180,
                   "the HQ to answer /health")
    except HouseError:
        hq.stop()
        raise
    if proc.poll() is not None:
        raise HouseError(f"the HQ exited with code {proc.returncode}; see {home / 'hq-console.log'}")
    return hq


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- the network


def partition(root: Path, cuts: int = 3, jobs: int = 30, seconds: float = 2.0) -> Tally:
    """Cut one worker's link in the virtual house for twice ``lost_after``, then heal it."""
    reason = netns.unavailable()
    if reason:
        tally = Tally("partition (netns)")
        tally.notes.append(f"skipped: {reason}")
        return tally
    with netns.VirtualHouse(machines=["w0", "w1", "w2"]) as vh:
        house = House(root, bind=vh.hq_address).start()
        rng = random.Random(3)
        try:
            for name in vh.machines:
                house.start_worker(name, prefix=vh.exec_prefix(name))
            house.submit(jobs, seconds=seconds)
            done = 0
            while done < cuts and house.unfinished():
                busy = {o["worker"].split("@")[0] for o in _running(house) if o.get("worker")}
                if not busy:
                    time.sleep(0.2)
                    continue
                victim = rng.choice(sorted(busy))
                vh.cut(victim)
                time.sleep(house.lost_after * 2 + 1)
                vh.heal(victim)
                done += 1
                time.sleep(rng.uniform(1.0, 3.0))
            tally = _finish(house, "partition (netns)", {"link cut past lost_after": done}, settle=300)
            tally.notes.append(f"machines {', '.join(f'{m}={a}' for m, a in vh.addresses.items())}, "
                               f"HQ servers on {vh.hq_address}")
            return tally
        finally:
            house.close()


# --------------------------------------------------------------------------- the machine's own resources


def disk_full(root: Path, jobs: int = 6, size_kb: int = 1024) -> Tally:
    """The worker's home (cache and work directories) on a tmpfs of ``size_kb``: Jobs that fill it fail cleanly."""
    mount = root / "small-disk"
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        tally = Tally("disk full")
        tally.notes.append(f"skipped: cannot mount a tmpfs here ({done.stderr.strip()})")
        return tally
    house = House(root / "house")
    try:
        house.start()
        house.start_worker("w0", MLQUEUE_HOME=str(mount))
        small = house.submit(jobs, seconds=0.2, writeBytes=64 * 1024)
        too_big = house.submit(jobs, seconds=0.2, writeBytes=size_kb * 2048)
        wait_until(lambda: house.db.orders.count_documents({"state": {"$in": ["succeeded", "failed"]}}) >= 2 * jobs,
                   180, "the first Jobs to finish")
        (mount / "filler").write_bytes(b"")
        with open(mount / "filler", "wb") as fh:  # fill the disk to its last byte
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        full = house.submit(jobs, seconds=0.2, writeBytes=16 * 1024)
        wait_until(lambda: house.unfinished() == 0, 180, "Jobs on a full disk to end")
        (mount / "filler").unlink()
        after = house.submit(jobs, seconds=0.2)
        tally = _finish(house, "disk full", {"ENOSPC Jobs": len(too_big) + len(full)}, settle=180)
        if not house.workers["w0"].alive:
            tally.notes.append("the worker died")
        states = {o["jobId"]: o["state"] for o in house.db.orders.find({}, {"jobId": 1, "state": 1})}
        tally.notes.append(f"small: {_count(states, small)}, too big: {_count(states, too_big)}, "
                           f"disk full: {_count(states, full)}, after freeing: {_count(states, after)}")
        return tally
    finally:
        house.close()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _count(states: dict[str, str], ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for job_id in ids:
        out[states.get(job_id, "?")] = out.get(states.get(job_id, "?"), 0) + 1
    return out


def dataset_deleted(root: Path, jobs: int = 6, seconds: float = 1.0) -> Tally:
    """A dataset deleted from the store after its Jobs were submitted: they fail with a clear reason."""
    house = House(root).start()
    try:
        data = root / "d.csv"
        data.write_text("x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(100)))
        datasets.push(data, "default", settings=house.settings)
        house.start_worker("w0")
        house.submit(jobs, seconds=seconds, dataFileName="d.csv")
        wait_until(lambda: house.db.orders.count_documents({"state": "succeeded"}) >= 1, 120, "a first Job to end")
        files = house.db["datasets.files"]
        ids = [doc["_id"] for doc in files.find({"filename": "default/d.csv"})]
        house.db["datasets.chunks"].delete_many({"files_id": {"$in": ids}})
        files.delete_many({"_id": {"$in": ids}})
        return _finish(house, "dataset deleted", {"dataset deleted": 1}, settle=180)
    finally:
        house.close()


def _utc(timestamp: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


# name: (function, quick sizes for `make test`, full sizes for `make chaos`)
SCENARIOS: dict[str, tuple[Scenario, dict[str, Any], dict[str, Any]]] = {
    "kill_storm": (kill_storm, {"kills": 3, "jobs": 12, "workers": 2}, {"kills": 100, "jobs": 300, "workers": 3}),
    "sleeping_laptops": (sleeping_laptops, {"sleeps": 1, "jobs": 4, "workers": 2},
                         {"sleeps": 8, "jobs": 40, "workers": 3}),
    "hq_crash": (hq_crash, {"crashes": 1, "jobs": 6}, {"crashes": 3, "jobs": 40}),
    "broker_killed": (broker_killed, {"kills": 1, "jobs": 6}, {"kills": 4, "jobs": 40}),
    "store_killed": (store_killed, {"kills": 1, "jobs": 6}, {"kills": 4, "jobs": 40}),
    "partition": (partition, {"cuts": 1, "jobs": 6}, {"cuts": 3, "jobs": 30}),
    "long_job_visibility": (long_job_visibility, {"jobs": 1, "seconds": 6.0, "joins": 1},
                            {"jobs": 3, "seconds": 10.0, "joins": 3}),
    "disk_full": (disk_full, {"jobs": 2}, {"jobs": 6}),
    "dataset_deleted": (dataset_deleted, {"jobs": 3}, {"jobs": 8}),
}


def run(name: str, root: Path, full: bool) -> Tally:
    """Run one scenario at its quick or full size, timing it."""
    function, quick, big = SCENARIOS[name]
    started = time.monotonic()
    where = root / f"{name}-{secrets.token_hex(2)}"
    try:
        tally = function(where, **(big if full else quick))
    except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' figures
        tally = Tally(name, lost=-1)
        tally.notes.append(f"scenario error: {type(exc).__name__}: {exc} (files kept in {where})")
        tally.error = True
    tally.wall_seconds = time.monotonic() - started
    return tally
