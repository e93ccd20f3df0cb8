"""Sweep files: describe a hyperparameter space once and let the farm search it.

A sweep file (YAML, or JSON which is read the same way) has these top-level keys::

    name: wine-nn                      # optional, shown by `mlqueue sweep status`
    base: {scriptName: nn.py, ...}     # the Job every trial starts from
    space:                             # what to vary: `path: spec`, applied in file order
      optimizer:     {choice: [adam, sgd, rmsprop]}
      learningRate:  {float: [1.0e-4, 0.1], log: true}
      batchSize:     {int: [16, 512], log: true}
      epochs:        {int: [10, 100], step: 10}
      momentum:      {float: [0.0, 0.99], when: {optimizer: [sgd, rmsprop]}}   # conditional
      hiddenLayers:                    # a list of variable length
        repeat: {int: [1, 4]}          #   how many elements (or a plain number)
        each:                          #   a space for every element, paths relative to it
          activation:    {choice: [relu, tanh]}
          widthModifier: {float: [0.5, 4]}
          dropout:       {float: [0, 0.5], step: 0.05}
      hiddenLayers[0].dropout: {float: [0, 0.2]}   # dotted path into the base Job's fields
      scalerType:    {value: robust}   # a fixed value (useful with `when`)
    objective: loss                    # or {field: metric, direction: maximize}
    method: tpe                        # grid | random | tpe | cmaes | qmc | gp | nsgaii
    methodOptions: {n_startup_trials: 5}   # passed to the Optuna sampler
    seed: 1
    budget: {maxTrials: 40, maxParallel: 4, maxWallSeconds: 3600}
    earlyStopping: asha                # none | median | asha | hyperband, or a mapping with options

Every trial is an ordinary Job: ``base`` with the sampled values written in, plus ``sweepId`` and
``trialNumber``. Optuna names each parameter by its full path (``hiddenLayers[2].dropout``); a
``repeat``'s element count is ``len(hiddenLayers)``. A ``when`` condition names a parameter defined
above it (in the same ``each`` or an enclosing level; naming a ``repeat`` means its element count).

Everything is checked here before anything is queued, and each problem names its place in the file
(``file:line:column``): a typo should cost seconds, not a night of wasted trials. Positions come from
PyYAML's node marks, so the checks run on the composed node tree as well as on the loaded values.
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, ValidationError

from mlqueue import jobs, scripts
from mlqueue.errors import InvalidInput
from mlqueue.settings import Settings, get_settings

Loc = tuple[str | int, ...]
JobPath = tuple[str | int, ...]

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
KINDS = ("choice", "int", "float", "value", "repeat")
GRID_MAX_POINTS = 100_000
PROBES_MAX = 60
PRIMITIVE = (str, int, float, bool, type(None))
Number = Annotated[float, Strict()]


class SweepError(InvalidInput):
    """A sweep file was refused; one line per problem, each with ``file:line:column``."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        super().__init__("\n".join([f"{where}: the sweep is not valid:", *[f"  {p}" for p in problems],
                                    "  Fix those and run the sweep again; nothing was queued."]))


# --------------------------------------------------------------------------- reading with positions


@dataclass(frozen=True)
class Position:
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass
class Problems:
    """Problems found so far, each with the location path of the value it is about."""

    where: str
    positions: dict[Loc, Position]
    found: list[tuple[Loc, str]] = field(default_factory=list)

    def add(self, loc: Loc, message: str) -> None:
        if (loc, message) not in self.found:
            self.found.append((tuple(loc), message))

    def position(self, loc: Loc) -> Position | None:
        """The position of ``loc`` or of its nearest enclosing value that has one."""
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.positions:
                return self.positions[loc[:cut]]
        return None

    def raise_if_any(self) -> None:
        if not self.found:
            return
        lines = []
        for loc, message in sorted(self.found, key=lambda p: _sort_key(self.position(p[0]))):
            pos = self.position(loc)
            place = f"{self.where}:{pos}" if pos else self.where
            lines.append(f"{place}: {dotted(loc) or '(file)'}: {message}")
        raise SweepError(self.where, lines)


def _sort_key(pos: Position | None) -> tuple[int, int]:
    return (pos.line, pos.column) if pos else (0, 0)


def dotted(loc: Sequence[str | int]) -> str:
    """A location as people write it: ``space.hiddenLayers.each.dropout`` or ``base.hiddenLayers[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_text(text: str, where: str) -> tuple[Any, dict[Loc, Position]]:
    """Parse YAML/JSON text into plain values plus the position of every key and list item."""
    if where.endswith(".json"):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise SweepError(where, [f"{where}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"]) from None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters at once
    except yaml.YAMLError as exc:
        raise SweepError(where, [f"{where}: not valid YAML: {str(exc).splitlines()[0]}"]) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc)
        context, started = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and started and started is not mark:
            problem += f" ({context} at {started.line + 1}:{started.column + 1})"
        raise SweepError(where, [f"{place}: not valid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    positions: dict[Loc, Position] = {(): Position(1, 1)}
    problems: list[str] = []
    if node is not None:
        _collect_positions(node, (), positions, problems, where)
    if problems:
        raise SweepError(where, problems)
    return data, positions


def _collect_positions(node: yaml.Node, loc: Loc, out: dict[Loc, Position], problems: list[str],
                       where: str) -> None:
    """Walk the composed node tree, recording where each key and item starts; flag duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            here = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                problems.append(f"{where}:{here}: {dotted((*loc, key))}: key given twice (the second would "
                                "silently win); keep one")
            seen.add(key)
            out[(*loc, key)] = here
            _collect_positions(value_node, (*loc, key), out, problems, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*loc, i)] = Position(item.start_mark.line + 1, item.start_mark.column + 1)
            _collect_positions(item, (*loc, i), out, problems, where)


def _scalar_key(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return yaml.SafeLoader("").construct_object(node)
    return yaml.serialize(node).strip()


# --------------------------------------------------------------------------- paths into a Job

PATH_PART = re.compile(r"(?P<dot>\.)?(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)|\[(?P<index>\d+)\]")


def parse_path(text: str) -> JobPath:
    """``hiddenLayers[0].dropout`` -> ("hiddenLayers", 0, "dropout"); ValueError if malformed."""
    parts: list[str | int] = []
    pos = 0
    for match in PATH_PART.finditer(text):
        if match.start() != pos or (match["name"] and parts and not match["dot"]) or (match["dot"] and not parts):
            break
        parts.append(match["name"] if match["name"] else int(match["index"]))
        pos = match.end()
    if pos != len(text) or not parts or not isinstance(parts[0], str):
        raise ValueError(f"{text!r} is not a field path; write e.g. learningRate, optimizer.beta1 or "
                         "hiddenLayers[0].dropout")
    return tuple(parts)


class MissingPath(LookupError):
    """A path goes through a list element or a non-object the Job does not have."""


def set_path(target: dict[str, Any], path: JobPath, value: Any) -> None:
    """Write ``value`` at ``path``, creating missing objects (never missing list elements)."""
    here: Any = target
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(part, int):
            if not isinstance(here, list) or part >= len(here):
                raise MissingPath(f"{dotted(path[:i + 1])} does not exist (the list has "
                                  f"{len(here) if isinstance(here, list) else 0} elements)")
            here = here[part]
            continue
        if not isinstance(here, dict):
            raise MissingPath(f"{dotted(path[:i])} is not an object")
        if part not in here:
            if isinstance(nxt, int):
                raise MissingPath(f"{dotted(path[:i + 1])} does not exist in the Job, so it has no element {nxt}")
            here[part] = {}
        here = here[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(here, list) or last >= len(here):
            raise MissingPath(f"{dotted(path)} does not exist (the list has "
                              f"{len(here) if isinstance(here, list) else 0} elements)")
        here[last] = value
    elif isinstance(here, dict):
        here[last] = value
    else:
        raise MissingPath(f"{dotted(path[:-1])} is not an object")


def unreachable(target: Any, path: JobPath) -> str | None:
    """Why ``set_path`` could not write ``path`` here (a list element this Job lacks), or None."""
    here = target
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(part, int):
            if not isinstance(here, list) or part >= len(here):
                return f"{dotted(path[:i + 1])} is not in the Job (it has " \
                       f"{len(here) if isinstance(here, list) else 'no'} elements there)"
        elif not isinstance(here, dict):
            return f"{dotted(path[:i])} is not an object, so it has no field {part}"
        elif part not in here and not last:
            later_index = any(isinstance(p, int) for p in path[i + 1:])
            return f"{dotted(path[:i + 1])} is not in the Job" if later_index else None
        if last:
            return None
        here = here[part]
    return None


def get_path(target: Any, path: JobPath) -> Any:
    here = target
    for part in path:
        if isinstance(part, int) and isinstance(here, list) and part < len(here):
            here = here[part]
        elif isinstance(part, str) and isinstance(here, dict) and part in here:
            here = here[part]
        else:
            return None
    return here


# --------------------------------------------------------------------------- the space


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    when: dict[str, Any] | None = None


class Choice(_Spec):
    choice: list[Any] = Field(min_length=1)

    @property
    def encoded(self) -> bool:
        """Optuna takes only plain values as categories; lists/objects travel as JSON strings."""
        return not all(isinstance(c, PRIMITIVE) for c in self.choice)

    def categories(self) -> list[Any]:
        return [json.dumps(c, sort_keys=True) for c in self.choice] if self.encoded else list(self.choice)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value


class IntRange(_Spec):
    int_: tuple[StrictInt, StrictInt] = Field(alias="int")
    step: StrictInt = Field(default=1, ge=1)
    log: StrictBool = False

    def values(self) -> list[int]:
        return list(range(self.int_[0], self.int_[1] + 1, self.step))


class FloatRange(_Spec):
    float_: tuple[Number, Number] = Field(alias="float")
    step: Number | None = Field(default=None, gt=0)
    log: StrictBool = False

    def values(self) -> list[float]:
        low, high = self.float_
        count = int(math.floor((high - low) / self.step + 1e-9)) + 1 if self.step else 0
        return [round(low + i * self.step, 12) for i in range(count)]


class Fixed(_Spec):
    value: Any


class Repeat(_Spec):
    repeat: StrictInt | dict[str, Any]
    each: dict[str, Any] = Field(default_factory=dict)
    template: Any = None


SPEC_MODELS: dict[str, type[_Spec]] = {"choice": Choice, "int": IntRange, "float": FloatRange, "value": Fixed,
                                       "repeat": Repeat}


@dataclass(frozen=True)
class Condition:
    """``when: {name: value-or-values}``: the referenced parameter, ``up`` levels above this one."""

    name: str
    up: int
    allowed: tuple[Any, ...]


@dataclass(frozen=True)
class Entry:
    """One line of the space: where it writes in the Job, what it draws, and where it was written."""

    key: str
    path: JobPath
    spec: Choice | IntRange | FloatRange | Fixed | Repeat
    loc: Loc
    when: tuple[Condition, ...] = ()
    count: Choice | IntRange | Fixed | None = None   # a repeat's element count
    each: tuple[Entry, ...] = ()

    @property
    def name(self) -> str:
        """The local parameter name (a repeat's is its element count)."""
        return f"len({self.key})" if isinstance(self.spec, Repeat) else self.key

    @property
    def drawn(self) -> Choice | IntRange | FloatRange | None:
        """What Optuna samples for this entry, if anything."""
        if isinstance(self.spec, Repeat):
            return self.count if isinstance(self.count, Choice | IntRange) else None
        return None if isinstance(self.spec, Fixed) else self.spec


def _parse_space(raw: Any, loc: Loc, problems: Problems, outer: list[dict[str, Entry]]) -> tuple[Entry, ...]:
    """Turn a ``space`` (or a ``repeat``'s ``each``) mapping into Entries, recording every problem."""
    if not isinstance(raw, dict):
        problems.add(loc, f"must be a mapping of `path: spec`, got {type(raw).__name__}")
        return ()
    entries: list[Entry] = []
    scope: dict[str, Entry] = {}
    for key, value in raw.items():
        here = (*loc, key)
        try:
            path = parse_path(str(key))
        except ValueError as exc:
            problems.add(here, str(exc))
            continue
        entry = _parse_entry(str(key), path, value, here, problems, [*outer, scope])
        if entry is None:
            continue
        entries.append(entry)
        scope[entry.key] = entry
        if isinstance(entry.spec, Repeat):
            scope[entry.name] = entry
    return tuple(entries)


def _parse_entry(key: str, path: JobPath, raw: Any, loc: Loc, problems: Problems,
                 scopes: list[dict[str, Entry]]) -> Entry | None:
    if not isinstance(raw, dict):
        problems.add(loc, f"give a spec such as {{choice: [...]}}, {{int: [low, high]}}, {{float: [low, high]}}, "
                          f"{{value: ...}} or {{repeat: ..., each: ...}}; got {json.dumps(raw, default=str)[:40]}")
        return None
    kinds = [k for k in KINDS if k in raw]
    if len(kinds) != 1:
        what = "none of" if not kinds else "more than one of"
        problems.add(loc, f"a spec needs exactly one of {', '.join(KINDS)}; this has {what} them")
        return None
    kind = kinds[0]
    try:
        spec = SPEC_MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        _add_pydantic(problems, loc, exc)
        return None
    ok = _check_spec(spec, loc, problems)
    count = None
    each: tuple[Entry, ...] = ()
    if isinstance(spec, Repeat):
        count = _parse_count(spec.repeat, (*loc, "repeat"), problems)
        each = _parse_space(spec.each, (*loc, "each"), problems, scopes)
        ok = ok and count is not None
    when = _parse_when(spec.when, (*loc, "when"), problems, scopes)
    if not ok or when is None:
        return None
    return Entry(key=key, path=path, spec=spec, loc=loc, when=when, count=count, each=each)


def _parse_count(raw: Any, loc: Loc, problems: Problems) -> Choice | IntRange | Fixed | None:
    """A repeat's count: a plain number, ``{int: [low, high]}`` or ``{choice: [...]}`` of numbers."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            problems.add(loc, f"a list cannot have {raw} elements")
            return None
        return Fixed(value=raw)
    kinds = [k for k in ("int", "choice") if k in raw]
    if len(kinds) != 1 or "when" in raw:
        problems.add(loc, "the element count is a number, {int: [low, high]} or {choice: [numbers]}")
        return None
    try:
        spec = SPEC_MODELS[kinds[0]].model_validate(raw)
    except ValidationError as exc:
        _add_pydantic(problems, loc, exc)
        return None
    if not _check_spec(spec, loc, problems):
        return None
    if isinstance(spec, Choice) and not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                            for c in spec.choice):
        problems.add((*loc, "choice"), "element counts must be whole numbers >= 0")
        return None
    if isinstance(spec, IntRange) and spec.int_[0] < 0:
        problems.add((*loc, "int"), "a list cannot have fewer than 0 elements")
        return None
    return spec


def _check_spec(spec: _Spec, loc: Loc, problems: Problems) -> bool:
    """The checks pydantic's types cannot express: ranges the right way round, log scales above 0."""
    before = len(problems.found)
    if isinstance(spec, IntRange | FloatRange):
        key = "int" if isinstance(spec, IntRange) else "float"
        low, high = spec.int_ if isinstance(spec, IntRange) else spec.float_
        if low > high:
            problems.add((*loc, key), f"range is reversed: low {low} > high {high}; write [{high}, {low}]")
        if spec.log and low <= 0:
            problems.add((*loc, "log"), f"a log scale needs low > 0, got {low}")
        if spec.log and isinstance(spec, FloatRange) and spec.step is not None:
            problems.add((*loc, "step"), "give either log: true or a step, not both")
        if spec.log and isinstance(spec, IntRange) and spec.step != 1:
            problems.add((*loc, "step"), "a log-scaled int range takes no step")
        if isinstance(spec, FloatRange) and not all(math.isfinite(v) for v in spec.float_):
            problems.add((*loc, key), "bounds must be finite numbers")
    if isinstance(spec, Choice):
        seen = [json.dumps(c, sort_keys=True, default=str) for c in spec.choice]
        for i, s in enumerate(seen):
            if s in seen[:i]:
                problems.add((*loc, "choice", i), f"{s} is listed twice")
    return len(problems.found) == before


def _parse_when(raw: dict[str, Any] | None, loc: Loc, problems: Problems,
                scopes: list[dict[str, Entry]]) -> tuple[Condition, ...] | None:
    """Resolve each ``when`` name to a parameter defined above; check the values it may take."""
    if not raw:
        return ()
    conditions = []
    for name, allowed in raw.items():
        found = None
        for up, scope in enumerate(reversed(scopes)):
            target = scope.get(name) or scope.get(f"len({name})")
            if target is not None:
                found = (up, target)
                break
        if found is None:
            problems.add((*loc, name), "names no parameter defined above it; a condition refers to an earlier "
                                       "space entry (same level or enclosing), e.g. `when: {optimizer: sgd}`")
            continue
        up, target = found
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        drawn = target.drawn
        if drawn is None:
            problems.add((*loc, name), f"{name} is a fixed value, so a condition on it is always the same")
            continue
        possible = _possible_values(drawn)
        if possible is not None:
            for v in values:
                if v not in possible:
                    problems.add((*loc, name), f"{json.dumps(v, default=str)} is not a value {name} can take "
                                               f"({', '.join(json.dumps(p, default=str) for p in possible[:12])})")
        conditions.append(Condition(name=target.name, up=up, allowed=values))
    return tuple(conditions)


def _possible_values(spec: Choice | IntRange | FloatRange) -> list[Any] | None:
    if isinstance(spec, Choice):
        return list(spec.choice)
    if isinstance(spec, IntRange) and len(range(spec.int_[0], spec.int_[1] + 1, spec.step)) <= 1000:
        return spec.values()
    return None


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


def _add_pydantic(problems: Problems, loc: Loc, exc: ValidationError,
                  hint: str | Callable[[Loc], str] = "") -> None:
    for err in exc.errors():
        where = (*loc, *err["loc"])
        if err["type"] == "extra_forbidden":
            problems.add(where, f"unknown key{hint(where) if callable(hint) else hint}")
        else:
            given = err.get("input")
            shown = "" if isinstance(given, dict) else f" (got {json.dumps(given, default=str)[:40]})"
            problems.add(where, f"{err['msg']}{shown}")


# --------------------------------------------------------------------------- walking the space

Source = Callable[[str, Any], Any]   # (full parameter name, spec drawn) -> value


@dataclass
class Walk:
    """One pass over the space that writes a Job: the values chosen and where each entry wrote."""

    job: dict[str, Any]
    chosen: dict[str, Any] = field(default_factory=dict)
    written: list[tuple[JobPath, Loc]] = field(default_factory=list)
    missing: list[tuple[Loc, str]] = field(default_factory=list)


def walk(entries: Sequence[Entry], base: dict[str, Any], source: Source) -> Walk:
    """Build a Job from ``base``, asking ``source`` for each active parameter in file order."""
    result = Walk(job=copy.deepcopy(base))
    _walk(entries, result.job, (), [""], source, result)
    return result


def _walk(entries: Sequence[Entry], target: dict[str, Any], at: JobPath, prefixes: list[str],
          source: Source, result: Walk) -> None:
    prefix = prefixes[-1]
    for entry in entries:
        if not _active(entry, prefixes, result.chosen):
            continue
        reason = unreachable(target, entry.path)
        if reason:
            result.missing.append((entry.loc, reason))
            continue
        spec = entry.spec
        if isinstance(spec, Repeat):
            value = _draw(entry.count, f"{prefix}{entry.name}", source, result)
            current = get_path(target, entry.path)
            items = [_element(spec, current, i) for i in range(value)]
            for i, item in enumerate(items):
                if entry.each and not isinstance(item, dict):
                    result.missing.append((entry.loc, f"element {i} of {entry.key} is not an object; give a "
                                                      "`template` object for `each` to write into"))
                    break
                _walk(entry.each, item, (*at, *entry.path, i), [*prefixes, f"{prefix}{entry.key}[{i}]."],
                      source, result)
            set_path(target, entry.path, items)
        else:
            value = _draw(spec, f"{prefix}{entry.key}", source, result)
            set_path(target, entry.path, value)
        result.written.append(((*at, *entry.path), entry.loc))


def _draw(spec: Any, name: str, source: Source, result: Walk) -> Any:
    if isinstance(spec, Fixed):
        return copy.deepcopy(spec.value)
    value = source(name, spec)
    result.chosen[name] = value
    return value


def _element(spec: Repeat, current: Any, i: int) -> Any:
    """Element ``i`` before its own parameters: the template, else the base list's element i (or last)."""
    if spec.template is not None:
        return copy.deepcopy(spec.template)
    if isinstance(current, list) and current:
        return copy.deepcopy(current[min(i, len(current) - 1)])
    return {}


def _active(entry: Entry, prefixes: list[str], chosen: dict[str, Any]) -> bool:
    for cond in entry.when:
        prefix = prefixes[-1 - cond.up]
        name = f"{prefix}{cond.name}"
        if name not in chosen or chosen[name] not in cond.allowed:
            return False
    return True


def suggest(trial: Any, name: str, spec: Choice | IntRange | FloatRange) -> Any:
    """Ask an Optuna trial for one value (the one place that maps specs onto Optuna's API)."""
    if isinstance(spec, Choice):
        return spec.decode(trial.suggest_categorical(name, spec.categories()))
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.int_[0], spec.int_[1], step=spec.step, log=spec.log)
    value = trial.suggest_float(name, spec.float_[0], spec.float_[1], step=spec.step, log=spec.log)
    return round(value, 10) if spec.step else value   # 0.3, not 0.30000000000000004, in the Job


def iter_entries(entries: Sequence[Entry]) -> Iterator[Entry]:
    for entry in entries:
        yield entry
        yield from iter_entries(entry.each)


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
    minResource: int = Field(default=1, ge=1)
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

    def pruner(self) -> Any:
        """The Optuna pruner for ``earlyStopping`` (ASHA is Optuna's asynchronous successive halving)."""
        import optuna

        es = self.file.earlyStopping
        if es.method == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=es.startupTrials, n_warmup_steps=es.warmupSteps)
        if es.method == "asha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=es.minResource,
                                                          reduction_factor=es.reductionFactor)
        if es.method == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=es.minResource, max_resource=es.maxResource,
                                                  reduction_factor=es.reductionFactor)
        return optuna.pruners.NopPruner()

    def trial_job(self, trial: Any, sweep_id: str, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Ask ``trial`` (an Optuna Trial) for every active parameter; return (Job, chosen values)."""
        result = walk(self.space, self.file.base, lambda name, spec: suggest(trial, name, spec))
        return self._finish(result.job, sweep_id, number), result.chosen

    def job_for(self, chosen: dict[str, Any], sweep_id: str, number: int) -> dict[str, Any]:
        """Rebuild a trial's Job from its chosen values (recovery, `sweep best`)."""
        result = walk(self.space, self.file.base, lambda name, spec: chosen[name])
        return self._finish(result.job, sweep_id, number)

    @staticmethod
    def _finish(job: dict[str, Any], sweep_id: str, number: int) -> dict[str, Any]:
        job["sweepId"] = sweep_id
        job["trialNumber"] = number
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
        _add_pydantic(problems, (), exc, hint=_keys_hint)
        problems.raise_if_any()
        raise
    if not spec.space:
        problems.add(("space",), "the space is empty: give at least one parameter to search, e.g. "
                                 "`learningRate: {float: [1.0e-4, 0.1], log: true}`")
    space = _parse_space(spec.space, ("space",), problems, [])
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
    elif isinstance(es.maxResource, int) and es.maxResource < es.minResource:
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
        _add_pydantic(problems, ("base",), exc)
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
        job = Sweep._finish(result.job, "0" * 24, 0)
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
        jobs.validate(Sweep._finish(walks[0].job, "0" * 24, 0), "trial Job", settings)
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
