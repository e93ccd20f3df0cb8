"""Dataset cache: time for a worker to get a dataset on a miss (download from GridFS) vs a hit (local copy).

Starts its own embedded servers (``bench.harness``), pushes a CSV of ``--mb`` megabytes, then per repeat
empties the cache and times ``Cache.path_for`` once cold (a miss: download and hash) and ``--hits`` times
warm, each hit with a new ``Cache`` (as each Job makes one). The first hit right after the download is
reported apart: the store is still busy freeing the chunks it just served. The baseline in the same run
is one store round trip (``ping``): a hit is one indexed read plus a ``stat``, whatever the file's size.
Prints and saves bench/results/dataset_cache.json.
Run: `.venv/bin/python bench/dataset_cache.py [--mb 100] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402


def timed_ms(action: Any) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hits", type=int, default=10, help="warm reads per repeat")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlqueue-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (redis_server, mongo_server):
            settings = harness.connect(harness.mlqueue_env(tmp / "home", redis_server, mongo_server))
            from mlqueue import datasets, store

            data = tmp / "big.csv"
            row = "1.2345,6.789,cat,2024-01-01\n"
            data.write_text("a,b,c,d\n" + row * int(args.mb * 2**20 / len(row)))
            datasets.push(data, "bench", settings=settings)
            misses, first_hits, hits, pings = [], [], [], []
            for _ in range(args.repeats):
                cache = datasets.Cache(settings)
                shutil.rmtree(cache.root, ignore_errors=True)  # cold: nothing on this machine yet
                misses.append(timed_ms(lambda cache=cache: cache.path_for("bench", "big.csv")))
                first_hits.append(timed_ms(lambda: datasets.Cache(settings).path_for("bench", "big.csv")))
                time.sleep(1.0)  # as the next Job on this data would come: not in the download's wake
                for _ in range(args.hits):
                    pings.append(timed_ms(lambda: store.db(settings).command("ping")))
                    hits.append(timed_ms(lambda: datasets.Cache(settings).path_for("bench", "big.csv")))
    miss, hit = statistics.median(misses), statistics.median(hits)
    figures = {"dataset_mb": args.mb, "repeats": args.repeats, "miss_ms_median": round(miss, 1),
               "hit_ms_median": round(hit, 2), "hit_ms_p95": round(sorted(hits)[int(0.95 * (len(hits) - 1))], 2),
               "first_hit_after_miss_ms_median": round(statistics.median(first_hits), 2),
               "store_ping_ms_median": round(statistics.median(pings), 2),
               "hit_share_of_miss": round(hit / miss, 4), "cpus": os.cpu_count(),
               "loadAverage1m": round(os.getloadavg()[0], 2),
               "measuredAt": datetime.now(UTC).isoformat(timespec="seconds")}
    print("\n".join(f"{k:32} {v}" for k, v in figures.items()))
    harness.save(harness.results_path("dataset_cache"), figures)


if __name__ == "__main__":
    main()
