"""Live output: how long from a script's print() to a follower seeing the line, and what it costs the store.

Starts its own embedded servers and one real worker, runs a script printing a timestamped line every
--every seconds, follows it with ``live_log.follow`` (what the SSE route and ``mlqueue logs -f`` use) and
records each line's delay. Then times one log append and one follower read on Orders holding 0, 1,000 and
5,000 lines. Prints and saves bench/results/live_log.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "live_log.json"

PRINTER = '''import time


def run(job, report):
    for i in range(int(job["lines"])):
        print(f"tick {time.time():.6f}", flush=True)
        time.sleep(float(job["every"]))
    return {"status": 200, "loss": 0.0}
'''


def latencies(settings: object, lines: int, every: float, tmp: Path) -> list[float]:
    from mlqueue import jobs, live_log, orders, scripts

    (tmp / "printer.py").write_text(PRINTER)
    scripts.push(tmp / "printer.py", "printer", settings)
    [job_id] = orders.submit([jobs.validate({"scriptName": "printer", "lines": lines, "every": every}, "bench",
                                            settings)], settings=settings)
    delays = []
    for chunk in live_log.follow(job_id, 0, settings):
        seen = time.time()
        delays += [seen - float(line["line"].split()[1]) for line in chunk["lines"] if line["line"].startswith("tick")]
    return delays


def costs(settings: object) -> dict[str, dict[str, float]]:
    from mlqueue import live_log, orders, store

    out = {}
    for kept in (0, 1000, 5000):
        job_id = f"{kept:024x}"
        line = {"at": orders.now(), "stream": "stdout", "line": "x" * 80}
        store.db(settings).orders.insert_one({"jobId": job_id, "delivery": "d", "state": "running",
                                              "log": [line] * kept, "logCount": kept})
        order = {"jobId": job_id, "delivery": "d"}
        t0 = time.perf_counter()
        for _ in range(20):
            orders.append_log(order, [line] * 5, settings)
        append = (time.perf_counter() - t0) / 20
        t0 = time.perf_counter()
        for _ in range(20):
            live_log.read(job_id, kept + 100, settings)
        idle = (time.perf_counter() - t0) / 20
        t0 = time.perf_counter()
        for _ in range(20):
            live_log.read(job_id, kept + 90, settings)
        new = (time.perf_counter() - t0) / 20
        out[str(kept)] = {"append_ms": round(append * 1000, 2), "read_nothing_new_ms": round(idle * 1000, 2),
                          "read_10_new_ms": round(new * 1000, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--every", type=float, default=0.1)
    args = parser.parse_args()
    from mlqueue.servers import MongoServer, RedisServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rs, ms = RedisServer(tmp / "r", tmp / "r.log").start(), MongoServer(tmp / "m", tmp / "m.log").start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
        env.update({"MLQUEUE_HOME": str(tmp / "home"), "MLQUEUE_BROKER_URL": rs.url, "MLQUEUE_MONGO_URL": ms.url,
                    "MLQUEUE_MONGO_DB": "bench", "MLQUEUE_QUEUE": "bench-live"})
        os.environ.update({k: v for k, v in env.items() if k.startswith("MLQUEUE_")})
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-c", "1", "-n",
                                   "bench@%h", "--without-mingle", "--without-gossip", "-l", "warning"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            from mlqueue import store
            from mlqueue.settings import reload_settings

            settings = reload_settings()
            store.ensure_indexes(settings)
            delays = latencies(settings, args.lines, args.every, tmp)
            store_costs = costs(settings)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
            ms.stop()
            rs.stop()
    figures = {"lines": len(delays), "print_every_s": args.every,
               "delay_s_median": round(statistics.median(delays), 3),
               "delay_s_p95": round(sorted(delays)[int(0.95 * (len(delays) - 1))], 3),
               "delay_s_max": round(max(delays), 3), "store_cost_by_lines_kept": store_costs}
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
