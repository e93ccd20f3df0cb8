"""Dataset cache: time for a worker to get a dataset on a miss (download from GridFS) vs a hit (local copy).

Starts its own embedded servers, pushes a CSV of --mb megabytes, then times Cache.path_for on a cold cache
and on a warm one, in the same run. Prints and saves bench/results/dataset_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "dataset_cache.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from mlqueue.servers import MongoServer, RedisServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rs, ms = RedisServer(tmp / "r", tmp / "r.log").start(), MongoServer(tmp / "m", tmp / "m.log").start()
        try:
            os.environ.update({"MLQUEUE_HOME": str(tmp / "home"), "MLQUEUE_BROKER_URL": rs.url,
                               "MLQUEUE_MONGO_URL": ms.url, "MLQUEUE_MONGO_DB": "bench"})
            from mlqueue import datasets
            from mlqueue.settings import reload_settings

            settings = reload_settings()
            data = tmp / "big.csv"
            row = "1.2345,6.789,cat,2024-01-01\n"
            data.write_text("a,b,c,d\n" + row * int(args.mb * 2**20 / len(row)))
            datasets.push(data, "bench", settings=settings)
            misses, hits = [], []
            for _ in range(args.repeats):
                cache = datasets.Cache(settings)
                shutil.rmtree(cache.root, ignore_errors=True)  # cold: nothing on this machine yet
                t0 = time.perf_counter()
                cache.path_for("bench", "big.csv")
                misses.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                cache.path_for("bench", "big.csv")
                hits.append(time.perf_counter() - t0)
        finally:
            ms.stop()
            rs.stop()
    figures = {"dataset_mb": args.mb, "miss_s_median": round(statistics.median(misses), 4),
               "hit_s_median": round(statistics.median(hits), 4),
               "hit_speedup": round(statistics.median(misses) / statistics.median(hits), 1)}
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
