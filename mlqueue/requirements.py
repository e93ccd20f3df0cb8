"""What a Job needs from a machine: the ``requires`` object, its merge with the script's own, and matching.

A Job may say ``"requires": {"gpu": true, "memoryGB": 8, "packages": ["tensorflow>=2.16"], "os": "linux"}``;
a script may declare its defaults as a module-level literal ``REQUIRES = {...}`` (read from the source
text, never by importing it: the HQ need not have TensorFlow to queue TensorFlow Jobs). The Job's fields
win; package lists are merged by name.

Every distinct requirement has a *class*: ``req-`` and a short hash of its canonical form. Jobs of one
class share one Celery queue, so "which worker may run this" is answered by which workers consume it.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlqueue.capabilities import OS_NAMES, canonical
from mlqueue.errors import InvalidInput
from mlqueue.values import is_number

OS_ALIASES = {"darwin": "macos", "mac": "macos", "osx": "macos", "win": "windows", "win32": "windows",
              **{k.lower(): v for k, v in OS_NAMES.items()}}


class RequirementError(InvalidInput):
    """Raised when a ``requires`` object (a Job's or a script's ``REQUIRES``) is not valid."""


class Requires(BaseModel):
    """A machine must offer all of these to run the Job. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    gpu: bool | int | None = Field(default=None, description="true, or the number of GPUs needed")
    gpuMemoryGB: float | None = Field(default=None, gt=0, description="memory of one GPU, in GB")
    memoryGB: float | None = Field(default=None, gt=0, description="RAM the worker may use, in GB")
    diskGB: float | None = Field(default=None, gt=0, description="free disk in the worker's home, in GB")
    cpus: int | None = Field(default=None, ge=1)
    packages: list[str] = Field(default_factory=list, description="e.g. ['tensorflow>=2.16', 'xgboost']")
    os: list[str] | None = Field(default=None, description="linux, macos or windows (one or a list)")
    arch: list[str] | None = Field(default=None, description="x86_64 or arm64 (one or a list)")
    python: str | None = Field(default=None, description="a version specifier, e.g. '>=3.11'")
    mains: bool | None = Field(default=None, description="true: not on a laptop running on battery")

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        out = {}
        for text in value:
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                raise ValueError(f"{text!r} is not a package requirement like 'tensorflow>=2.16' ({exc})") from None
            out[canonical(req.name)] = f"{canonical(req.name)}{req.specifier}"
        return [out[k] for k in sorted(out)]

    @field_validator("os", "arch", mode="before")
    @classmethod
    def _one_or_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("os")
    @classmethod
    def _os(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for name in value:
            norm = OS_ALIASES.get(name.lower(), name.lower())
            if norm not in ("linux", "macos", "windows"):
                raise ValueError(f"unknown os {name!r}; use linux, macos or windows")
            out.append(norm)
        return sorted(set(out))

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: list[str] | None) -> list[str] | None:
        aliases = {"amd64": "x86_64", "aarch64": "arm64"}
        return sorted({aliases.get(a.lower(), a.lower()) for a in value}) if value is not None else None

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(SpecifierSet(value))
        except InvalidSpecifier:
            raise ValueError(f"{value!r} is not a version specifier like '>=3.11'") from None

    def canonical(self) -> dict[str, Any]:
        """The requirement as stored on the Order: only the fields that say something."""
        data = self.model_dump(exclude_none=True)
        if not data.get("packages"):
            data.pop("packages", None)
        if data.get("gpu") is False:
            data.pop("gpu")
        return data


def parse(value: Any, where: str = "requires") -> Requires:
    """Validate a ``requires`` object; errors name the field and say how to fix it."""
    if not isinstance(value, dict):
        raise RequirementError(f"{where}: must be an object such as {{\"gpu\": true}}, got {type(value).__name__}")
    try:
        return Requires.model_validate(value)
    except ValidationError as exc:
        lines = [f"{where}: not a valid requirement:"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  - field '{where}.{field}': {err['msg']}")
        raise RequirementError("\n".join(lines)) from None


def declared(path: Path) -> dict[str, Any]:
    """A script's ``REQUIRES = {...}``, read from its source (a literal; the script is not imported)."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (OSError, SyntaxError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "REQUIRES" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise RequirementError(f"{path.name}: REQUIRES must be a literal dict such as "
                                       "{'packages': ['tensorflow']}") from None
            parse(value, f"{path.name}: REQUIRES")
            return value
    return {}


def merge(script: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    """The script's defaults under the Job's own ``requires``; packages merged by name (the Job's win)."""
    base = parse(script, "script REQUIRES").canonical() if script else {}
    mine = parse(job).canonical() if job else {}
    packages = {canonical(Requirement(p).name): p for p in base.get("packages", [])}
    packages.update({canonical(Requirement(p).name): p for p in mine.get("packages", [])})
    out = {**base, **mine}
    if packages:
        out["packages"] = [packages[k] for k in sorted(packages)]
    return parse(out).canonical()


def class_name(requires: dict[str, Any] | None) -> str | None:
    """``req-<hash>`` for a non-empty requirement (the same requirement always gives the same class)."""
    if not requires:
        return None
    text = json.dumps(parse(requires).canonical(), sort_keys=True, separators=(",", ":"))
    return "req-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def describe(requires: dict[str, Any]) -> str:
    """The requirement in words: ``gpu, 8 GB memory, tensorflow>=2.16``."""
    return ", ".join(_phrase(k, v) for k, v in requires.items() if k != "packages") + \
        (", " if len(requires) > 1 and requires.get("packages") else "") + ", ".join(requires.get("packages", []))


def _phrase(key: str, value: Any) -> str:
    if key == "gpu":
        return "gpu" if value is True or value == 1 else f"{value} gpus"
    units = {"gpuMemoryGB": "GB gpu memory", "memoryGB": "GB memory", "diskGB": "GB free disk", "cpus": "cpus"}
    if key in units:
        return f"{value:g} {units[key]}"
    if key in ("os", "arch"):
        return " or ".join(value)
    if key == "python":
        return f"python{value}"
    if key == "mains":
        return "mains power" if value else "battery"
    return f"{key}={value}"


def unmet(caps: dict[str, Any], requires: dict[str, Any] | None) -> list[str]:
    """What ``caps`` lacks of ``requires``, in words (empty: the machine satisfies it)."""
    if not requires:
        return []
    req = parse(requires)
    missing: list[str] = []
    gpus = [g for g in caps.get("gpus") or []]
    need_gpus = int(req.gpu) if req.gpu else 0
    if need_gpus and len(gpus) < need_gpus:
        missing.append(_phrase("gpu", req.gpu))
    if req.gpuMemoryGB and not any(_number(g, "memoryGB") >= req.gpuMemoryGB for g in gpus if isinstance(g, dict)):
        missing.append(_phrase("gpuMemoryGB", req.gpuMemoryGB))
    for key in ("memoryGB", "cpus"):
        if getattr(req, key) and _number(caps, key if key != "memoryGB" else "memoryGB", "ramGb") < getattr(req, key):
            missing.append(_phrase(key, getattr(req, key)))
    if req.diskGB and _number(caps, "diskFreeGB") < req.diskGB:
        missing.append(_phrase("diskGB", req.diskGB))
    if req.os and caps.get("os") not in req.os:
        missing.append(_phrase("os", req.os))
    if req.arch and caps.get("arch") not in req.arch:
        missing.append(_phrase("arch", req.arch))
    if req.python and not _version_in(caps.get("python"), req.python):
        missing.append(_phrase("python", req.python))
    if req.mains and (caps.get("battery") or {}).get("pluggedIn") is False:
        missing.append(_phrase("mains", True))
    have = caps.get("packages") or {}
    for text in req.packages:
        wanted = Requirement(text)
        version = have.get(canonical(wanted.name))
        if version is None or not _version_in(version, str(wanted.specifier)):
            missing.append(text if version is None else f"{text} (has {version})")
    return missing


def satisfies(caps: dict[str, Any], requires: dict[str, Any] | None) -> bool:
    return not unmet(caps, requires)


def _number(doc: dict[str, Any], key: str, fallback: str | None = None) -> float:
    value = doc.get(key, doc.get(fallback) if fallback else None)
    return float(value) if is_number(value) else 0.0


def _version_in(version: Any, specifier: str) -> bool:
    if not specifier:
        return version is not None
    try:
        return Version(str(version)) in SpecifierSet(specifier)
    except (InvalidVersion, InvalidSpecifier):
        return False
