"""``python -m chaos [--quick] [SCENARIO ...]``: run the scenarios, print the tally table, save it as JSON.

Exit code 1 if any scenario lost a Job, wrote a second final Outcome or ran a finished Job again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from chaos.scenarios import SCENARIOS, run
from chaos.tally import table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], help="default: all of them")
    parser.add_argument("--quick", action="store_true", help="the small sizes `make test` uses")
    parser.add_argument("--json", type=Path, default=None, help="also write the tallies here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    names = args.scenarios or list(SCENARIOS)
    root = Path(tempfile.mkdtemp(prefix="mlqueue-chaos-"))
    started, tallies = time.monotonic(), []
    try:
        for name in names:
            print(f"== {name} ...", flush=True)
            tally = run(name, root, full=not args.quick)
            tallies.append(tally)
            print(table([tally]), *(f"   note: {n}" for n in tally.notes), sep="\n", flush=True)
    finally:
        if any(t.error for t in tallies):
            print(f"files of failed scenarios kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    total = time.monotonic() - started
    print(f"\nchaos tally ({'quick' if args.quick else 'full'}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {total / 60:.1f} min\n")
    print(table(tallies))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": datetime.now(UTC).isoformat(), "machine": platform.platform(),
                                         "cores": os.cpu_count(), "minutes": round(total / 60, 1),
                                         "tallies": [t.as_dict() for t in tallies]}, indent=2) + "\n")
    unsafe = [t.scenario for t in tallies if not t.safe]
    if unsafe:
        print(f"\nUNSAFE: {', '.join(unsafe)}", file=sys.stderr)
    return 1 if unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
