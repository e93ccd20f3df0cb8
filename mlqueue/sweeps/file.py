"""Reading a sweep file with positions: every value keeps its ``file:line:column`` for the error messages.

Also the dotted paths (``hiddenLayers[0].dropout``) a sweep uses to name a field of the base Job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from mlqueue.errors import InvalidInput

Loc = tuple[str | int, ...]
JobPath = tuple[str | int, ...]


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


def add_pydantic(problems: Problems, loc: Loc, exc: ValidationError,
                  hint: str | Callable[[Loc], str] = "") -> None:
    for err in exc.errors():
        where = (*loc, *err["loc"])
        if err["type"] == "extra_forbidden":
            problems.add(where, f"unknown key{hint(where) if callable(hint) else hint}")
        else:
            given = err.get("input")
            shown = "" if isinstance(given, dict) else f" (got {json.dumps(given, default=str)[:40]})"
            problems.add(where, f"{err['msg']}{shown}")
