"""Finding, identifying and loading the training scripts Jobs name.

A Job's ``scriptName`` ("toy", "toy.py", "nn.py") names a module in the scripts directory
(``ml_scripts/`` by default). Scripts are loaded from their file on every Job, so an edited script is
picked up without restarting the worker, and the Outcome records the exact file hash that ran.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mlqueue.settings import Settings, get_settings

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.py)?$")


class ScriptNotFound(LookupError):
    """The Job names a script this machine does not have."""


@dataclass(frozen=True)
class Script:
    name: str
    path: Path
    sha256: str

    @property
    def identity(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256}


def available(settings: Settings | None = None) -> list[str]:
    """Names of the scripts a Job may use (modules with a ``run`` function)."""
    settings = settings or get_settings()
    names = []
    for path in sorted(Path(settings.scripts_dir).glob("*.py")):
        if path.stem.startswith("_"):
            continue
        if "def run(" in path.read_text(errors="replace"):
            names.append(path.stem)
    return names


def resolve(script_name: str, settings: Settings | None = None) -> Script:
    """Map a ``scriptName`` to its file, or explain which names exist."""
    settings = settings or get_settings()
    if not NAME_RE.match(script_name or ""):
        raise ScriptNotFound(
            f"scriptName {script_name!r} is not a script name; use the name of a file in "
            f"{settings.scripts_dir} such as {', '.join(available(settings)) or 'toy'}"
        )
    stem = script_name[:-3] if script_name.endswith(".py") else script_name
    path = Path(settings.scripts_dir) / f"{stem}.py"
    if not path.is_file() or stem.startswith("_"):
        raise ScriptNotFound(
            f"unknown script {script_name!r}: no {path.name} in {settings.scripts_dir}. "
            f"Available scripts: {', '.join(available(settings)) or '(none)'}"
        )
    return Script(name=stem, path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def load(script: Script) -> ModuleType:
    """Import the script's file afresh (heavy libraries it imports stay cached in ``sys.modules``)."""
    module_name = f"ml_scripts.{script.name}"
    spec = importlib.util.spec_from_file_location(module_name, script.path)
    if spec is None or spec.loader is None:
        raise ScriptNotFound(f"cannot import {script.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ScriptNotFound(f"{script.path} has no run(job, report) function")
    return module
