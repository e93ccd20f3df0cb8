"""A whole sweep file checked: objective, budget, method and early stopping, and every trial Job
probed against its script before anything is queued.

Over 400 lines because the checks of one file belong together: they share the ``Problems`` collector so
a user sees every mistake at once, and splitting them would pass it through another module for nothing.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlqueue import jobs, scripts, verdicts
from mlqueue.settings import Settings, get_settings
from mlqueue.sweeps.file import JobPath, Loc, Position, Problems, SweepError, add_pydantic, dotted, load_text
from mlqueue.sweeps.space import (
    Choice,
    Entry,
    Fixed,
    FloatRange,
    IntRange,
    Repeat,
    Source,
    Walk,
    iter_entries,
    parse_space,
    suggest,
    walk,
)
from mlqueue.values import is_whole

# method -> (Optuna sampler class name, extra package it needs or None)
METHODS: dict[str, tuple[str, str | None]] = {
    "grid": ("GridSampler", None),
    "random": ("RandomSampler", None),
    "tpe": ("TPESampler", None),
    "cmaes": ("CmaEsSampler", "cmaes"),
    "qmc": ("QMCSampler", "scipy"),
    "gp": ("GPSampler", "torch"),
    "nsgaii": ("NSGAIISampler", None),
}
EARLY_STOPPING = ("none", "median", "asha", "hyperband")
DIRECTION_ALIASES = {"minimise": "minimize", "min": "minimize", "maximise": "maximize", "max": "maximize"}
GRID_MAX_POINTS = 100_000
PROBES_MAX = 60

# --------------------------------------------------------------------------- objective, budget, early stopping


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(default="loss", min_length=1, description="Outcome field to optimise")
    direction: Literal["minimize", "maximize"] | None = None

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("maximize" if self.field == "metric" else "minimize")


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    maxTrials: int | None = Field(default=None, ge=1, le=100_000)
    maxParallel: int = Field(default=2, ge=1, le=10_000)
    maxWallSeconds: float | None = Field(default=None, gt=0)


class EarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "none"
    metric: str | None = Field(default=None, description="reported metric to judge; default: the objective's")
    step: str = Field(default="epoch", description="reported field that counts progress")
    minResource: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="first rung; auto: a ninth of the base Job's epochs (Sweep.min_resource)")
    maxResource: int | Literal["auto"] = "auto"
    reductionFactor: int = Field(default=3, ge=2)
    startupTrials: int = Field(default=3, ge=0)
    warmupSteps: int = Field(default=0, ge=0)


class SweepFile(BaseModel):
    """The top level of a sweep file, as written."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    base: dict[str, Any]
    space: dict[str, Any]
    objective: Objective = Field(default_factory=Objective)
    method: str = "tpe"
    methodOptions: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    budget: Budget = Field(default_factory=Budget)
    earlyStopping: EarlyStopping = Field(default_factory=EarlyStopping)


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: everything the driver needs to ask Optuna for trials and turn them into Jobs."""

    file: SweepFile
    space: tuple[Entry, ...]
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.file.name or f"{self.file.base.get('scriptName')}-{self.file.method}"

    @property
    def direction(self) -> str:
        return self.file.objective.resolved_direction

    @property
    def max_trials(self) -> int | None:
        """The trial budget; a grid never asks for more trials than it has points."""
        size = self.grid_size()
        limit = self.file.budget.maxTrials
        if size is not None:
            return min(limit, size) if limit else size
        return limit

    @property
    def report_metric(self) -> str:
        return self.file.earlyStopping.metric or self.file.objective.field

    def grid_space(self) -> dict[str, list[Any]] | None:
        """Optuna GridSampler's search space (every parameter with its values), for method grid."""
        if self.file.method != "grid":
            return None
        grid: dict[str, list[Any]] = {}
        _grid_entries(self.space, "", grid)
        return grid

    def grid_size(self) -> int | None:
        grid = self.grid_space()
        return math.prod(len(v) for v in grid.values()) if grid is not None else None

    def sampler(self, seed: int | None = None) -> Any:
        """A fresh Optuna sampler for this sweep (``seed`` lets a restarted driver draw new values)."""
        import optuna

        cls_name, _ = METHODS[self.file.method]
        cls = getattr(optuna.samplers, cls_name)
        options = dict(self.file.methodOptions)
        if seed is not None:
            options.setdefault("seed", seed)
        if self.file.method == "grid":
            return _ask_tell_grid_sampler()(self.grid_space(), **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            return cls(**options)

    def min_resource(self) -> int:
        """ASHA's and Hyperband's first rung. ``auto`` (the default): a ninth of the base Job's ``epochs`` with
        the default reduction factor 3 (epochs // factor**2, at least 1), so there are rungs at 1/9 and 1/3 of
        training. Judging from the first epoch ranks trials by how fast they start, not where they end: on
        the sweep bench (docs/performance.md, Sweeps) minResource 1 found the grid's best far less often."""
        es = self.file.earlyStopping
        if isinstance(es.minResource, int):
            return es.minResource
        epochs = self.file.base.get("epochs") if es.step == "epoch" else None
        if not is_whole(epochs):
            return 1
        return max(1, epochs // es.reductionFactor ** 2)

    def pruner(self) -> Any:
        """The Optuna pruner for ``earlyStopping`` (ASHA is Optuna's asynchronous successive halving)."""
        import optuna

        es = self.file.earlyStopping
        if es.method == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=es.startupTrials, n_warmup_steps=es.warmupSteps)
        if es.method == "asha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.min_resource(),
                                                          reduction_factor=es.reductionFactor)
        if es.method == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_resource(), max_resource=es.maxResource,
                                                  reduction_factor=es.reductionFactor)
        return optuna.pruners.NopPruner()

    def rung_steps(self) -> list[int]:
        """The steps where the pruner can decide, so a trial waits for its verdict there and nowhere else
        (``mlqueue.verdicts``): ASHA's and Hyperband's rungs. The median pruner may decide at any step
        after its warm-up, so its trials never wait (their pruning comes one report late, as before)."""
        es = self.file.earlyStopping
        if es.method not in ("asha", "hyperband"):
            return []
        top = es.maxResource if isinstance(es.maxResource, int) else None
        return verdicts.rung_steps(self.min_resource(), es.reductionFactor, top)

    def trial_job(self, trial: Any, sweep_id: str, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Ask ``trial`` (an Optuna Trial) for every active parameter; return (Job, chosen values)."""
        result = walk(self.space, self.file.base, lambda name, spec: suggest(trial, name, spec))
        return self._finish(result.job, sweep_id, number), result.chosen

    def job_for(self, chosen: dict[str, Any], sweep_id: str, number: int) -> dict[str, Any]:
        """Rebuild a trial's Job from its chosen values (recovery, `sweep best`)."""
        result = walk(self.space, self.file.base, lambda name, spec: chosen[name])
        return self._finish(result.job, sweep_id, number)

    def _finish(self, job: dict[str, Any], sweep_id: str, number: int) -> dict[str, Any]:
        job["sweepId"] = sweep_id
        job["trialNumber"] = number
        es = self.file.earlyStopping
        last = job.get("epochs") if es.step == "epoch" else None   # a trial's last epoch needs no verdict
        if is_whole(last):
            steps = [s for s in self.rung_steps() if s < last]
        else:
            steps = [s for s in self.rung_steps() if not isinstance(es.maxResource, int) or s < es.maxResource]
        if steps:
            job["pruneSteps"] = {"field": es.step, "steps": steps}
        return job


@functools.cache
def _ask_tell_grid_sampler() -> type:
    """Optuna's GridSampler without its ``study.stop()`` when the grid is used up.

    That call only works inside ``study.optimize``; with ask-and-tell it raises on the last tell. The
    driver never asks past the grid's size (``Sweep.max_trials``), so nothing else is needed.
    """
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return AskTellGridSampler


def _grid_entries(entries: Sequence[Entry], prefix: str, out: dict[str, list[Any]]) -> None:
    for entry in entries:
        drawn = entry.drawn
        if isinstance(drawn, Choice):
            out[prefix + entry.name] = drawn.categories()
        elif isinstance(drawn, IntRange | FloatRange):
            out[prefix + entry.name] = drawn.values()
        if isinstance(entry.spec, Repeat) and isinstance(entry.count, Fixed):
            for i in range(entry.count.value):
                _grid_entries(entry.each, f"{prefix}{entry.key}[{i}].", out)


# --------------------------------------------------------------------------- parsing a file


def parse_file(path: str | Path, settings: Settings | None = None) -> tuple[Sweep, str]:
    """Read and check a sweep file; return the Sweep and the file's text (kept with the sweep)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(str(path), [f"{path}: no such file"])
    text = path.read_text()
    return parse_text(text, str(path), settings), text


def parse_text(text: str, where: str = "sweep", settings: Settings | None = None, check_jobs: bool = True) -> Sweep:
    data, positions = load_text(text, where)
    return parse_data(data, where, positions, settings, check_jobs)


def parse_data(data: Any, where: str = "sweep", positions: dict[Loc, Position] | None = None,
               settings: Settings | None = None, check_jobs: bool = True) -> Sweep:
    """Check a loaded sweep document; raise ``SweepError`` listing every problem with its position."""
    problems = Problems(where, positions or {})
    if not isinstance(data, dict):
        problems.add((), "a sweep file holds a mapping with base, space, objective, method, budget, earlyStopping")
        problems.raise_if_any()
    data = {k: _shorthand(k, v) for k, v in data.items()}
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        add_pydantic(problems, (), exc, hint=_keys_hint)
        problems.raise_if_any()
        raise
    if not spec.space:
        problems.add(("space",), "the space is empty: give at least one parameter to search, e.g. "
                                 "`learningRate: {float: [1.0e-4, 0.1], log: true}`")
    space = parse_space(spec.space, ("space",), problems, [])
    if spec.space and not problems.found and not any(e.drawn for e in iter_entries(space)):
        problems.add(("space",), "the space has nothing to search (only fixed values); add a choice or a range")
    _check_method(spec, space, problems)
    _check_early_stopping(spec, problems)
    if not spec.budget.maxTrials and not spec.budget.maxWallSeconds and spec.method != "grid":
        problems.add(("budget",), "give budget.maxTrials (or budget.maxWallSeconds): a sweep must end")
    problems.raise_if_any()
    sweep = Sweep(file=spec, space=space, raw=data)
    if check_jobs:
        _check_trial_jobs(sweep, problems, settings or get_settings())
        problems.raise_if_any()
    return sweep


def _shorthand(key: str, value: Any) -> Any:
    """``objective: loss`` and ``earlyStopping: asha`` are short for their mapping forms."""
    if key == "objective" and isinstance(value, str):
        return {"field": value}
    if key == "objective" and isinstance(value, dict) and value.get("direction") in DIRECTION_ALIASES:
        return {**value, "direction": DIRECTION_ALIASES[value["direction"]]}
    if key == "earlyStopping" and isinstance(value, str):
        return {"method": value}
    if key == "earlyStopping" and value is None:
        return {"method": "none"}
    return value


def _check_method(spec: SweepFile, space: tuple[Entry, ...], problems: Problems) -> None:
    if spec.method not in METHODS:
        problems.add(("method",), f"unknown method {spec.method!r}; choose one of {', '.join(METHODS)}")
        return
    _, package = METHODS[spec.method]
    if package and find_spec(package) is None:
        problems.add(("method",), f"method {spec.method} needs the `{package}` package on the HQ: "
                                  f"pip install {package}")
        return
    if spec.method == "grid":
        for entry in iter_entries(space):
            if entry.when:
                problems.add((*entry.loc, "when"), "a grid is the product of fixed value lists, so it takes no "
                                                   "conditions; use method random or tpe, or drop `when`")
            if isinstance(entry.spec, Repeat) and not isinstance(entry.count, Fixed):
                problems.add((*entry.loc, "repeat"), "a grid needs a fixed element count (repeat: 3); use "
                                                     "method random or tpe for a variable one")
            drawn = entry.drawn
            if isinstance(drawn, FloatRange) and drawn.step is None:
                problems.add((*entry.loc, "float"), "a grid needs a finite set of values: give a `step`, or "
                                                    "use {choice: [...]}")
        if not problems.found:
            size = math.prod(len(v) for v in _grid_of(space).values())
            if size > GRID_MAX_POINTS:
                problems.add(("space",), f"the grid has {size} points (more than {GRID_MAX_POINTS}); narrow it "
                                         "or use method random/tpe")
    if spec.methodOptions and not problems.found:
        try:
            Sweep(file=spec, space=space, raw={}).sampler()
        except (TypeError, ValueError) as exc:
            problems.add(("methodOptions",), f"not accepted by Optuna's {METHODS[spec.method][0]}: {exc}")


def _grid_of(space: tuple[Entry, ...]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    _grid_entries(space, "", grid)
    return grid


def _check_early_stopping(spec: SweepFile, problems: Problems) -> None:
    es = spec.earlyStopping
    if es.method not in EARLY_STOPPING:
        problems.add(("earlyStopping", "method") if ("earlyStopping", "method") in problems.positions
                     else ("earlyStopping",),
                     f"unknown early stopping {es.method!r}; choose one of {', '.join(EARLY_STOPPING)}")
    elif isinstance(es.maxResource, int) and isinstance(es.minResource, int) and es.maxResource < es.minResource:
        problems.add(("earlyStopping", "maxResource"), f"maxResource {es.maxResource} < minResource "
                                                       f"{es.minResource}")


# --------------------------------------------------------------------------- trial Jobs checked before queueing


def _check_trial_jobs(sweep: Sweep, problems: Problems, settings: Settings) -> None:
    """Build representative trial Jobs (every bound, every choice) and check each as a Job.

    A script that declares a pydantic ``Params`` model refuses fields it does not take and values it
    cannot use; its complaints are mapped back to the space entry (or base field) that caused them.
    """
    base = sweep.file.base
    try:
        jobs.JobSpec.model_validate(base)
        script = scripts.resolve(str(base.get("scriptName")), settings, pinned=base.get("scriptHash"))
    except ValidationError as exc:
        add_pydantic(problems, ("base",), exc)
        return
    except scripts.ScriptNotFound as exc:
        problems.add(("base", "scriptName"), str(exc))
        return
    params = None
    if base.get("scriptMode") != "subprocess" and script.has_run_function:  # never import a command-line script
        try:
            params = getattr(scripts.load(script), "Params", None)
        except Exception as exc:  # noqa: BLE001 - a broken script is the user's error to see
            problems.add(("base", "scriptName"), f"script {script.name} cannot be loaded: "
                                                 f"{type(exc).__name__}: {exc}")
            return
    walks = [walk(sweep.space, base, source) for source in _probes(sweep)]
    always_missing = set.intersection(*[{loc for loc, _ in w.missing} for w in walks])
    for loc, message in walks[0].missing + walks[-1].missing:
        if loc in always_missing:
            problems.add(loc, message)
    for result in walks:
        job = sweep._finish(result.job, "0" * 24, 0)
        for model, who in ((jobs.JobSpec, "mlqueue"), (params, f"script {script.name}")):
            if model is None:
                continue
            try:
                model.model_validate(job)
            except ValidationError as exc:
                _map_job_errors(exc, result, who, model, problems)
        if problems.found:
            return
    try:
        jobs.validate(sweep._finish(walks[0].job, "0" * 24, 0), "trial Job", settings)
    except jobs.JobError as exc:
        problems.add(("base",), str(exc))


def _map_job_errors(exc: ValidationError, result: Walk, who: str, model: type[BaseModel],
                    problems: Problems) -> None:
    for err in exc.errors():
        loc = tuple(err["loc"])
        best: tuple[JobPath, Loc] | None = None
        for job_path, file_loc in result.written:
            covers = loc[:len(job_path)] == job_path or job_path[:len(loc)] == loc
            if covers and (best is None or len(job_path) > len(best[0])):
                best = (job_path, file_loc)
        where = best[1] if best else ("base", *loc)
        if err["type"] == "extra_forbidden":
            if loc and loc[0] in ("sweepId", "trialNumber"):
                message = f"{who} does not take the field '{loc[0]}', which every sweep trial carries; its " \
                          "Params model must accept sweepId and trialNumber"
                where = ("base", "scriptName")
            else:
                message = f"{who} does not take a field '{dotted(loc)}' (its Params model forbids unknown " \
                          f"fields; it takes {', '.join(sorted(model.model_fields))})"
        else:
            message = f"{who} refuses {dotted(loc)} = {json.dumps(err.get('input'), default=str)[:40]}: {err['msg']}"
        problems.add(where, message)


def _probes(sweep: Sweep) -> Iterator[Source]:
    """Value sources for representative trials: all low ends, all high ends, then each choice in turn."""
    yield lambda name, spec: _low(spec)
    yield lambda name, spec: _high(spec)
    made = 2
    for entry in iter_entries(sweep.space):
        drawn = entry.drawn
        if not isinstance(drawn, Choice):
            continue
        for value in drawn.choice:
            if made >= PROBES_MAX:
                return
            made += 1
            yield lambda name, spec, target=drawn, value=value: value if spec is target else _low(spec)


def _low(spec: Choice | IntRange | FloatRange) -> Any:
    if isinstance(spec, Choice):
        return spec.choice[0]
    return spec.int_[0] if isinstance(spec, IntRange) else spec.float_[0]


def _high(spec: Choice | IntRange | FloatRange) -> Any:
    if isinstance(spec, Choice):
        return spec.choice[-1]
    if isinstance(spec, IntRange):
        return spec.values()[-1]
    return spec.values()[-1] if spec.step else spec.float_[1]


def grid_points(sweep: Sweep) -> list[dict[str, Any]]:
    """Every point of a grid sweep as {parameter: value}, in product order (for people and tests)."""
    grid = sweep.grid_space() or {}
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def _keys_hint(where: Loc) -> str:
    """For an unknown key in a sweep file: the keys its mapping takes, and the closest one."""
    models: dict[Any, type[BaseModel]] = {"objective": Objective, "budget": Budget, "earlyStopping": EarlyStopping}
    model = models.get(where[0]) if len(where) == 2 else SweepFile
    if model is None:
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(where[-1]), allowed, n=1, cutoff=0.6)
    owner = "a sweep file" if model is SweepFile else f"{where[0]}"
    return (f"; did you mean {close[0]!r}?" if close else "") + f" ({owner} takes {', '.join(allowed)})"
