"""The space a sweep searches: its entries (choice, int, float, value, repeat, with ``when``), how they
are parsed from the file and how one trial walks them to fill in a Job.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, ValidationError

from mlqueue.sweeps.file import JobPath, Loc, Problems, add_pydantic, get_path, parse_path, set_path, unreachable
from mlqueue.values import is_whole

KINDS = ("choice", "int", "float", "value", "repeat")
PRIMITIVE = (str, int, float, bool, type(None))
Number = Annotated[float, Strict()]

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


def parse_space(raw: Any, loc: Loc, problems: Problems, outer: list[dict[str, Entry]]) -> tuple[Entry, ...]:
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
        add_pydantic(problems, loc, exc)
        return None
    ok = _check_spec(spec, loc, problems)
    count = None
    each: tuple[Entry, ...] = ()
    if isinstance(spec, Repeat):
        count = _parse_count(spec.repeat, (*loc, "repeat"), problems)
        each = parse_space(spec.each, (*loc, "each"), problems, scopes)
        ok = ok and count is not None
    when = _parse_when(spec.when, (*loc, "when"), problems, scopes)
    if not ok or when is None:
        return None
    return Entry(key=key, path=path, spec=spec, loc=loc, when=when, count=count, each=each)


def _parse_count(raw: Any, loc: Loc, problems: Problems) -> Choice | IntRange | Fixed | None:
    """A repeat's count: a plain number, ``{int: [low, high]}`` or ``{choice: [...]}`` of numbers."""
    if is_whole(raw):
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
        add_pydantic(problems, loc, exc)
        return None
    if not _check_spec(spec, loc, problems):
        return None
    if isinstance(spec, Choice) and not all(is_whole(c) and c >= 0
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
