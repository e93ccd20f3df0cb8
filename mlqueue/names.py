"""Names users and scripts supply that end up as file paths: checked once, here, before any file is touched.

A dataset name, a project, an artifact name or a zip entry of a pushed script becomes part of a path on
some machine (a worker's cache, the directory ``mlqueue artifacts --get`` writes to). Left unchecked, a
name such as ``../../../../tmp/x.csv`` makes every worker that fetches it write outside its cache. So
each such name is refused at the edge (``file_name``), and every place that builds a path from a stored
name checks again that the result stays inside the directory it meant (``inside``) — a name stored
before this check existed, or written straight into the store, cannot escape either.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from mlqueue.errors import InvalidInput

MAX_NAME = 255


class UnsafeName(InvalidInput):
    """Raised when a name would lead outside the directory it belongs in; the message says what is allowed."""


def file_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is one plain file name (no directories, no ``..``), else raise ``UnsafeName``."""
    if not isinstance(value, str) or not value:
        raise UnsafeName(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME:
        raise UnsafeName(f"{what} {value[:40]!r}... is longer than {MAX_NAME} characters")
    if "/" in value or "\\" in value or value in (".", "..") or any(ord(c) < 32 for c in value):
        raise UnsafeName(f"{what} {value!r} is not a plain file name: it may not contain '/', '\\', control "
                         "characters or be '.' or '..'; use a name such as 'wine.csv'")
    return value


def relative_path(value: str, what: str = "path") -> str:
    """Return ``value`` if it is a relative path that stays inside its base (e.g. a zip entry), else raise."""
    pure = PurePosixPath(value.replace("\\", "/"))
    if not value or pure.is_absolute() or ".." in pure.parts or any(ord(c) < 32 for c in value) \
            or (len(value) > 1 and value[1] == ":"):
        raise UnsafeName(f"{what} {value!r} leaves its folder (absolute, a drive, or '..'); "
                         "only paths inside the folder are allowed")
    return value


def inside(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing any result (after resolving ``..`` and symlinks) outside ``root``."""
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base.joinpath(*parts)))
    if target != base and base not in target.parents:
        raise UnsafeName(f"{'/'.join(parts)!r} would lead outside {root}; refused")
    return target
