"""Search efficiency of sweeps: a grid vs TPE with a pruner (ASHA, Hyperband) at the grid's trial count.

The task is real training: ``ml_scripts/sklearn_mlp.py`` (an MLP on scikit-learn's bundled digits, 27
epochs, validation log-loss reported every epoch, so early epochs say something about the last). The space
is what a user tunes: learning rate, L2, hidden width and batch size, all on log scales. The grid is the
one a user would write for it, 3 values per parameter (the centres of each third of the log range), so 81
trials; every other method gets the same 81 trials over the same ranges, continuous. Two local workers
run the trials (``maxParallel: 2``); the driver runs here.

Figures per method (and per repeat, with different seeds):
- best objective (validation log-loss, lower is better);
- machine-seconds used: the sum over trials of worker time (Order started -> finished);
- machine-seconds needed to reach the grid's best (the worker time spent, by every trial, up to the
  moment the method first had a trial as good as the grid's best; "not reached" if it never did);
- seconds trials spent waiting for their pruner's verdict at rungs (``rungWaits`` in their Outcomes);
- wall-clock seconds of the sweep and the idle gap between a machine's trials.
Target: TPE+ASHA reaches the grid's best in at most 1/3 of the grid's machine time, in >= 4 of 5 repeats.

Baseline in the same run (``--in-process``): the same sweep file run by Optuna alone, no mlqueue, in as many
local processes as there are workers (a shared journal file), the same training function reporting every
epoch to the same pruner. The grid's machine time in mlqueue over the in-process grid's is what
distributing a trial costs (goal <= 1.2); the per-trial script time and the idle gap between a machine's
trials say where it goes.

Run: ``.venv/bin/python bench/sweep_efficiency.py [--repeats 5] [--methods grid,tpe+asha] [--quick]``; prints
a table and saves bench/results/sweep_efficiency.json. It starts its own servers and workers and stops them.
About 2 minutes a repeat on 2 quiet cores with the default methods; ``--quick`` (one repeat, grid and
TPE+ASHA, no in-process baseline) for a look while developing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("sweep_efficiency")
EPOCHS = 27
SEED = 200   # repeat i uses seed SEED + i (the sweep settings were chosen on seeds 100-104, in-process)

BASE = f"""\
base:
  scriptName: sklearn_mlp
  projectName: bench-sweeps
  epochs: {EPOCHS}
  hiddenLayers: [{{units: 64}}]
objective: loss
"""
CONTINUOUS = """\
space:
  learningRate: {float: [1.0e-4, 0.3], log: true}
  l2: {float: [1.0e-6, 1.0], log: true}
  hiddenLayers[0].units: {int: [8, 256], log: true}
  batchSize: {int: [16, 256], log: true}
"""
GRID = """\
space:
  learningRate: {choice: [3.8e-4, 5.5e-3, 7.9e-2]}
  l2: {choice: [1.0e-5, 1.0e-3, 1.0e-1]}
  hiddenLayers[0].units: {choice: [14, 45, 144]}
  batchSize: {choice: [25, 64, 161]}
"""
TRIALS = 3 ** 4   # the grid's size: every method gets as many trials
TPE = "method: tpe\nmethodOptions: {n_startup_trials: 5}\n"
METHODS = {
    "grid": GRID + "method: grid\nearlyStopping: none\n",
    "random": CONTINUOUS + "method: random\nearlyStopping: none\n",
    "tpe": CONTINUOUS + TPE + "earlyStopping: none\n",
    # ASHA with the sweep file's defaults: minResource auto (27 // 3**2 = 3), reductionFactor 3: rungs 3 and 9
    "tpe+asha": CONTINUOUS + TPE + "earlyStopping: {method: asha, metric: val_loss}\n",
    # measured alongside: ASHA judging from the first epoch (the sweep file's default minResource), Hyperband
    "tpe+asha r1": CONTINUOUS + TPE + "earlyStopping: {method: asha, metric: val_loss, minResource: 1, "
                                      "reductionFactor: 3}\n",
    "tpe+hyperband": CONTINUOUS + TPE + "earlyStopping: {method: hyperband, metric: val_loss, minResource: 3, "
                                        f"maxResource: {EPOCHS}, reductionFactor: 3}}\n",
    "tpe+median": CONTINUOUS + TPE + "earlyStopping: {method: median, metric: val_loss, startupTrials: 4, "
                                     "warmupSteps: 3}\n",
}
DEFAULT_METHODS = "grid,tpe+asha"
PRUNED = [m for m in METHODS if "+" in m]


def start_workers(n: int, env: dict[str, str], home: Path) -> list[subprocess.Popen]:
    return [harness.start_worker(env, home / f"worker-{i}.log", name=f"bench{i}@%h") for i in range(n)]


def warm_up(settings: Any) -> None:
    """One short Job per worker first, so no method pays for importing scikit-learn."""
    from mlqueue import orders, store

    ids = orders.submit([{"scriptName": "sklearn_mlp", "projectName": "warm-up", "epochs": 1}] * 4,
                        by="bench", settings=settings)
    harness.wait_until(lambda: store.db(settings).orders.count_documents(
        {"jobId": {"$in": ids}, "state": {"$in": list(orders.FINAL)}}) == len(ids), 180, "warm-up jobs")


def run_sweep(name: str, seed: int, settings: Any) -> dict[str, Any]:
    """Create one sweep, drive it to its end from here, and measure it."""
    from mlqueue import store, sweeps
    from mlqueue.sweeps import driver as sweep_driver

    text = sweep_text(name, seed)
    spec = sweeps.parse_text(text, f"{name}.yaml", settings)
    sweep_id = sweep_driver.create(spec, text, f"{name}.yaml", by="bench", settings=settings)
    stop = threading.Event()
    driver = sweep_driver.Driver(owner=f"bench-{name}", settings=settings, sweep_ids=[sweep_id], poll=0.1)
    thread = threading.Thread(target=driver.run_forever, args=(stop,), daemon=True)
    started = time.monotonic()
    thread.start()
    d = store.db(settings)
    harness.wait_until(lambda: d.sweeps.find_one({"_id": sweep_driver.get(sweep_id, settings)["_id"],
                                                  "state": {"$in": list(sweep_driver.FINAL)}}), 1800, f"sweep {name}")
    wall = time.monotonic() - started
    stop.set()
    thread.join(10)
    order_docs = list(d.orders.find({"sweepId": sweep_id}, {"metrics": 0, "history": 0, "log": 0}))
    trials = []
    for order in order_docs:
        outcome = order.get("outcome") or {}
        trials.append({"state": order["state"], "started": order["startedDate"], "finished": order["finishedDate"],
                       "loss": outcome.get("loss") if order["state"] == "succeeded" else None,
                       "cpu": float(outcome.get("cpuSeconds") or 0.0),
                       "script": float(outcome.get("durationSeconds") or 0.0), "machine": order.get("worker"),
                       "rungWait": float((outcome.get("rungWaits") or {}).get("seconds") or 0.0)})
    doc = sweep_driver.get(sweep_id, settings)
    if not doc.get("best"):
        failed = next((o.get("outcome") for o in order_docs if o["state"] != "succeeded"), None)
        raise SystemExit(f"sweep {name} has no best trial: {doc.get('lastError') or doc.get('stopReason')}; "
                         f"a failed trial's Outcome: {failed}")
    return {"method": name, "seed": seed, "sweepId": sweep_id, "wallSeconds": round(wall, 2),
            "best": (doc.get("best") or {}).get("value"), "trials": trials,
            "pruned": sum(t["state"] == "pruned" for t in trials),
            "machineSeconds": round(sum((t["finished"] - t["started"]).total_seconds() for t in trials), 2),
            "cpuSeconds": round(sum(t["cpu"] for t in trials), 2),
            "scriptSeconds": round(sum(t["script"] for t in trials), 2), "idleGap": idle_gap(trials),
            "rungWaitSeconds": round(sum(t["rungWait"] for t in trials), 2)}


def idle_gap(trials: list[dict[str, Any]]) -> float | None:
    """Median seconds a machine waited between the end of one trial and the start of its next."""
    gaps = []
    for machine in {t["machine"] for t in trials}:
        mine = sorted((t for t in trials if t["machine"] == machine), key=lambda t: t["started"])
        gaps += [(b["started"] - a["finished"]).total_seconds() for a, b in zip(mine, mine[1:], strict=False)]
    return round(statistics.median(gaps), 3) if gaps else None


def sweep_text(name: str, seed: int) -> str:
    return f"name: bench-{name.replace(' ', '-')}-{seed}\n{BASE}{METHODS[name]}seed: {seed}\n" \
           f"budget: {{maxTrials: {TRIALS}, maxParallel: 2}}\n"


def run_in_process(name: str, seed: int, processes: int, tmp: Path) -> dict[str, Any]:
    """The same sweep with Optuna alone, no mlqueue: ``processes`` local processes share one journal file
    (Optuna's own way to run in parallel), each runs the same training function and reports every epoch
    to the same pruner. Its trial time is the baseline for what distributing a trial costs."""
    import multiprocessing

    import optuna

    from mlqueue import sweeps

    spec = sweeps.parse_text(sweep_text(name, seed), f"{name}.yaml", check_jobs=False)
    path = tmp / f"optuna-{name}-{seed}.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=f"{name}-{seed}", storage=storage, direction=spec.direction)
    started = time.monotonic()
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_optuna_process, args=(name, seed, i, str(path))) for i in range(processes)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    wall = time.monotonic() - started
    trials = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if "started" not in attrs:
            continue
        complete = t.state == optuna.trial.TrialState.COMPLETE
        trials.append({"state": "succeeded" if complete else "pruned" if t.state.name == "PRUNED" else "failed",
                       "started": datetime.fromisoformat(attrs["started"]),
                       "finished": datetime.fromisoformat(attrs["finished"]),
                       "loss": t.value if complete else None, "cpu": float(attrs.get("cpu") or 0.0),
                       "script": attrs["seconds"], "machine": attrs.get("process")})
    best = min((t["loss"] for t in trials if t["loss"] is not None), default=None)
    return {"method": f"optuna {name}", "seed": seed, "wallSeconds": round(wall, 2), "best": best, "trials": trials,
            "pruned": sum(t["state"] == "pruned" for t in trials),
            "machineSeconds": round(sum((t["finished"] - t["started"]).total_seconds() for t in trials), 2),
            "cpuSeconds": round(sum(t["cpu"] for t in trials), 2),
            "scriptSeconds": round(sum(t["script"] for t in trials), 2), "idleGap": idle_gap(trials),
            "rungWaitSeconds": 0.0}


def _optuna_process(name: str, seed: int, index: int, path: str) -> None:
    """One in-process Optuna worker: ask, train with per-epoch reports and pruning, tell; until the budget."""
    import optuna

    from ml_scripts import sklearn_mlp
    from mlqueue import sweeps

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = sweeps.parse_text(sweep_text(name, seed), f"{name}.yaml", check_jobs=False)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    if spec.file.method == "grid":
        sampler = optuna.samplers.GridSampler(spec.grid_space(), seed=seed)
    else:   # each process draws its own values, as one driver's sampler would not repeat a draw
        sampler = spec.sampler(seed + 7919 * index)
    study = optuna.load_study(study_name=f"{name}-{seed}", storage=storage, sampler=sampler, pruner=spec.pruner())
    metric, step_key = spec.report_metric, spec.file.earlyStopping.step

    def objective(trial: Any) -> float:
        job, _ = spec.trial_job(trial, "in-process", trial.number)
        began, clock = datetime.now().astimezone(), time.monotonic()
        last: dict[str, Any] = {}

        def report(**metrics: Any) -> None:
            last.update(metrics)
            trial.report(metrics[metric], metrics[step_key])
            # as in mlqueue (mlqueue.verdicts): a trial is not judged at its last epoch, it is done
            if metrics[step_key] < job["epochs"] and trial.should_prune():
                raise optuna.TrialPruned()

        def close() -> None:
            trial.set_user_attr("started", began.isoformat())
            trial.set_user_attr("finished", datetime.now().astimezone().isoformat())
            trial.set_user_attr("seconds", time.monotonic() - clock)
            trial.set_user_attr("cpu", last.get("cpuSeconds"))
            trial.set_user_attr("process", index)

        try:
            outcome = sklearn_mlp.run(job, report)
        except optuna.TrialPruned:
            close()
            raise
        last["cpuSeconds"] = outcome["cpuSeconds"]
        close()
        return outcome[spec.file.objective.field]

    sklearn_mlp.run({"epochs": 1}, lambda **_: None)   # warmed up as the workers are: no import in a trial
    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(TRIALS, states=None)])


def spent_until(trials: list[dict[str, Any]], moment: datetime) -> tuple[float, float]:
    """(worker seconds, CPU seconds) spent by every trial up to ``moment`` (a running trial: pro rata)."""
    machine = cpu = 0.0
    for t in trials:
        end = min(t["finished"], moment)
        if end > t["started"]:
            part = (end - t["started"]).total_seconds()
            whole = (t["finished"] - t["started"]).total_seconds() or 1.0
            machine += part
            cpu += t["cpu"] * part / whole
    return machine, cpu


def time_to_reach(trials: list[dict[str, Any]], target: float) -> tuple[float | None, float | None]:
    """Machine and CPU seconds spent until the first trial at least as good as ``target`` finished."""
    good = [t["finished"] for t in trials if t["loss"] is not None and t["loss"] <= target + 1e-12]
    if not good:
        return None, None
    machine, cpu = spent_until(trials, min(good))
    return round(machine, 2), round(cpu, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of every method, with different seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-process", default="grid,tpe+asha",
                        help="methods also run with Optuna alone, in-process, as the baseline (grid is the "
                             "baseline of trial time; empty: none)")
    parser.add_argument("--in-process-grids", type=int, default=1,
                        help="repeats (the first ones) that also run the in-process grid; the others compare "
                             "in-process methods with the last in-process grid run")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="comma-separated subset of: " + ", ".join(METHODS) + " (grid is always run)")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat of grid and tpe+asha, no in-process baseline (a look while developing)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.methods, args.in_process = 1, "grid,tpe+asha", ""
    tmp = Path(tempfile.mkdtemp(prefix="mlqueue-sweep-bench-"))
    redis_server, mongo_server = harness.start_servers(tmp)
    name = f"bench{secrets.token_hex(3)}"
    env = harness.child_env({**harness.mlqueue_env(tmp, redis_server, mongo_server, name), "PYTHONUNBUFFERED": "1"})
    # one worker = one machine: no BLAS thread pools competing for the cores of the other "machine"
    env.update({var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the workers and servers are stopped too
    from mlqueue import store

    settings = harness.connect(env)
    workers = start_workers(args.workers, env, tmp)
    runs: list[dict[str, Any]] = []
    try:
        harness.wait_until(lambda: store.db(settings).workers.count_documents({"online": True}) == args.workers,
                           120, "workers to register")
        warm_up(settings)
        names = ["grid"] + [m for m in args.methods.split(",") if m and m != "grid"]
        for repeat in range(args.repeats):
            # a different order each repeat, so a busy spell on the machine does not always hit one method
            for method in names[repeat % len(names):] + names[:repeat % len(names)]:
                run = run_sweep(method, seed=SEED + repeat, settings=settings)
                run["repeat"] = repeat
                runs.append(run)
                _print_run(repeat, run)
            for method in [m for m in args.in_process.split(",") if m]:
                if method == "grid" and repeat >= args.in_process_grids:
                    continue   # its result never changes (a fixed grid, deterministic training): only its time
                run = run_in_process(method, seed=SEED + repeat, processes=args.workers, tmp=tmp)
                run["repeat"] = repeat
                runs.append(run)
                _print_run(repeat, run)
    finally:
        harness.stop_workers(workers)
        mongo_server.stop()
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    harness.save(RESULTS, {"runs": runs}, default=str)   # kept even if the summary below fails
    report = summarise(runs, args)
    harness.save(RESULTS, report, default=str)
    print_table(report)
    print(f"saved {RESULTS.relative_to(ROOT)}")


def _print_run(repeat: int, run: dict[str, Any]) -> None:
    ratio = run["machineSeconds"] / max(run["cpuSeconds"], 1e-9)
    print(f"  repeat {repeat + 1} {run['method']:20s} best {run['best']:.4f}  machine {run['machineSeconds']:6.1f}s  "
          f"cpu {run['cpuSeconds']:5.1f}s  machine/cpu {ratio:4.2f}  script {run['scriptSeconds']:5.1f}s  "
          f"wall {run['wallSeconds']:5.1f}s  idle gap {run['idleGap']}s  pruned {run['pruned']}  "
          f"rung waits {run['rungWaitSeconds']:.1f}s", flush=True)


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    per_repeat = []
    in_process_grid = None
    for repeat in range(args.repeats):
        group = {r["method"]: r for r in runs if r["repeat"] == repeat}
        in_process_grid = group.get("optuna grid", in_process_grid)
        row = {}
        for method, run in group.items():
            # an in-process Optuna sweep is compared with the in-process grid, an mlqueue one with mlqueue's
            grid = (in_process_grid or group["grid"]) if method.startswith("optuna ") else group["grid"]
            machine, cpu = time_to_reach(run["trials"], grid["best"])
            row[method] = {"best": run["best"], "machineSeconds": run["machineSeconds"],
                           "cpuSeconds": run["cpuSeconds"], "wallSeconds": run["wallSeconds"],
                           "pruned": run["pruned"], "scriptSeconds": run["scriptSeconds"], "idleGap": run["idleGap"],
                           "rungWaitSeconds": run["rungWaitSeconds"],
                           "machinePerCpu": _fraction(run["machineSeconds"], run["cpuSeconds"]),
                           "machineSecondsToGridBest": machine, "cpuSecondsToGridBest": cpu,
                           "fractionOfGridMachineTime": _fraction(machine, grid["machineSeconds"]),
                           "fractionOfGridCpuTime": _fraction(cpu, grid["cpuSeconds"])}
        per_repeat.append(row)
    methods = list(dict.fromkeys(m for r in per_repeat for m in r))
    medians = {method: _medians([r[method] for r in per_repeat if method in r]) for method in methods}
    # the target, for every method with a pruner: fraction of the grid's machine time to reach its best
    fractions = {m: [r[m]["fractionOfGridMachineTime"] for r in per_repeat if m in r]
                 for m in [*PRUNED, *(f"optuna {p}" for p in PRUNED)] if m in methods}
    met = {m: f"{sum(f is not None and f <= 1 / 3 for f in fs)}/{len(fs)}" for m, fs in fractions.items()}
    # what distributing a trial costs: the grid's machine time in mlqueue over the same grid run by Optuna
    # alone in as many local processes, in the same repeat (the machine's load hits both alike)
    overhead = [round(r["grid"]["machineSeconds"] / r["optuna grid"]["machineSeconds"], 3)
                for r in per_repeat if "optuna grid" in r]
    return {
        "task": f"sklearn_mlp (MLPClassifier on sklearn digits, {EPOCHS} epochs, val log-loss; learning rate, L2, "
                f"width, batch size), {TRIALS} trials per method (the grid's size), maxParallel 2, "
                f"{args.workers} local workers",
        "trialsPerMethod": TRIALS, "repeats": args.repeats, "workers": args.workers,
        "target": "TPE+ASHA reaches the grid's best in <= 1/3 of the grid's machine time, in >= 4 of 5 repeats",
        "targetMet": met, "fractionOfGridMachineTime": fractions,
        "gridMachineTimeOverInProcess": overhead,
        "notes": "machineSeconds = worker time (Order started -> finished) summed over trials; cpuSeconds = the "
                 "training's processor time (load-independent, so comparable on a busy machine); *ToGridBest = "
                 "spent by all trials until the first trial as good as the grid's best finished",
        "median": medians, "perRepeat": per_repeat, "measuredAt": datetime.now().isoformat(timespec="seconds"),
        "loadAverageAtEnd": os.getloadavg(), "cpus": os.cpu_count(),
    }


def _fraction(part: float | None, whole: float) -> float | None:
    return round(part / whole, 3) if part is not None and whole else None


def _medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    keys = ("best", "machineSeconds", "machinePerCpu", "scriptSeconds", "idleGap", "rungWaitSeconds", "pruned",
            "cpuSeconds", "wallSeconds", "machineSecondsToGridBest", "cpuSecondsToGridBest",
            "fractionOfGridMachineTime", "fractionOfGridCpuTime")
    reached = sum(r["machineSecondsToGridBest"] is not None for r in rows)
    return {**{k: median(k) for k in keys}, "reachedGridBest": f"{reached}/{len(rows)}"}


def _show(value: float | None, fraction: float | None) -> str:
    return "never" if value is None else f"{value:.1f} ({fraction:.2f})"


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['task']}; medians over {report['repeats']} repeat(s) (to-grid-best: over repeats reaching it)")
    print(f"{'method':20s} {'best loss':>9s} {'machine s':>9s} {'cpu s':>7s} {'wall s':>7s} {'reached':>7s} "
          f"{'machine s to grid best (fraction)':>34s} {'cpu s to grid best (fraction)':>30s}")
    for method, m in report["median"].items():
        machine = _show(m["machineSecondsToGridBest"], m["fractionOfGridMachineTime"])
        cpu = _show(m["cpuSecondsToGridBest"], m["fractionOfGridCpuTime"])
        print(f"{method:20s} {m['best']:9.4f} {m['machineSeconds']:9.1f} {m['cpuSeconds']:7.1f} "
              f"{m['wallSeconds']:7.1f} {m['reachedGridBest']:>7s} {machine:>34s} {cpu:>30s}")
    print(f"target: {report['target']}")
    for method, met in report["targetMet"].items():
        fractions = report["fractionOfGridMachineTime"][method]
        print(f"  {method:20s} met in {met} repeats; fraction per repeat: {fractions}")
    print(f"grid's machine time in mlqueue / the same grid run by Optuna in-process, per repeat: "
          f"{report['gridMachineTimeOverInProcess']} (goal <= 1.2)")


if __name__ == "__main__":
    main()
