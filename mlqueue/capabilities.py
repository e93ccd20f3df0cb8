"""What this machine is: the facts a Job's ``requires`` is matched against, published on its Worker.

Detection is cheap on purpose (a worker runs it at start and on every change it notices): CPUs, RAM
(capped by ``MLQUEUE_MAX_MEMORY``), free disk in the home, OS and architecture, Python, GPUs (NVIDIA
through NVML when ``nvidia-ml-py`` is importable, Apple Metal on Apple silicon, and the device lists of
TensorFlow/PyTorch only when the script already imported them — importing TensorFlow just to count GPUs
takes seconds and grabs GPU memory), battery or mains (psutil), and the versions of the ML packages
this Python can import. "Can import" is checked with the import system itself (``find_spec``), so a
package hidden by ``MLQUEUE_HIDE_PACKAGES`` or missing its top-level module does not count.

Two documented overrides, for tests and odd machines:
- ``MLQUEUE_CAPABILITIES='{"gpus": [{"model": "RTX 3060", "memoryGB": 12}], "memoryGB": 8}'`` is merged
  on top of what was detected (``packages`` merged name by name; ``null`` removes a package);
- ``MLQUEUE_HIDE_PACKAGES=tensorflow,torch`` makes those packages unimportable in the worker (a
  meta-path blocker installed at worker start): the worker behaves as a machine without them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from mlqueue.errors import InvalidInput
from mlqueue.settings import Settings, get_settings

# Distributions whose versions every worker publishes (others are probed when a requirement names them).
ML_PACKAGES = ("tensorflow", "keras", "torch", "jax", "scikit-learn", "xgboost", "lightgbm", "catboost",
               "numpy", "pandas", "optuna")
IMPORT_NAMES = {"scikit-learn": "sklearn", "opencv-python": "cv2", "pillow": "PIL", "pyyaml": "yaml",
                "tensorflow-cpu": "tensorflow", "nvidia-ml-py": "pynvml"}
OS_NAMES = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}


class CapabilitiesError(InvalidInput):
    """Raised when ``MLQUEUE_CAPABILITIES`` is not a JSON object."""


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them: ``Scikit_Learn`` -> ``scikit-learn``."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def import_name(distribution: str) -> str:
    dist = canonical(distribution)
    return IMPORT_NAMES.get(dist, dist.replace("-", "_"))


# --------------------------------------------------------------------------- hiding packages


class HiddenPackages(importlib.abc.MetaPathFinder):
    """Refuses to find the hidden top-level modules, so importing them fails as on a machine without them."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}' (hidden on this worker by MLQUEUE_HIDE_PACKAGES)",
                                      name=fullname)
        return None


def hidden(settings: Settings | None = None) -> set[str]:
    """Top-level module names hidden on this worker (``MLQUEUE_HIDE_PACKAGES``, comma-separated)."""
    raw = (settings or get_settings()).hide_packages or ""
    return {import_name(n) for n in raw.split(",") if n.strip()}


def install_blocker(settings: Settings | None = None) -> None:
    """Hide ``MLQUEUE_HIDE_PACKAGES`` from this process and the pool processes it forks."""
    names = hidden(settings)
    if names and not any(isinstance(f, HiddenPackages) for f in sys.meta_path):
        sys.meta_path.insert(0, HiddenPackages(names))


# --------------------------------------------------------------------------- detection


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution whose top-level module can be found, else None."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    try:
        found = importlib.util.find_spec(import_name(distribution)) is not None
    except (ImportError, ValueError):
        found = False
    return version if found else None


def packages(names: tuple[str, ...] | list[str] = ML_PACKAGES) -> dict[str, str]:
    found = {canonical(n): package_version(n) for n in names}
    return {n: v for n, v in found.items() if v}


def gpus() -> list[dict[str, Any]]:
    """GPUs of this machine: NVIDIA (NVML), Apple Metal, or what an already imported framework lists."""
    return _nvidia() or _metal() or _framework_devices()


def _allowed_indices(settings: Settings) -> set[int] | None:
    if settings.gpus is None or settings.gpus == "":
        return None
    return {int(i) for i in str(settings.gpus).split(",") if i.strip().isdigit()}


def _nvidia() -> list[dict[str, Any]]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU: NVML raises its own error types
        return []
    try:
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"index": index, "vendor": "nvidia", "model": name.decode() if isinstance(name, bytes) else name,
                        "memoryGB": round(memory.total / 2**30, 1), "freeMemoryGB": round(memory.free / 2**30, 1)})
        return out
    except Exception:  # noqa: BLE001 - a GPU that fell off the bus is a machine without it
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _metal() -> list[dict[str, Any]]:
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return [{"index": 0, "vendor": "apple", "model": "Apple silicon GPU (Metal)",
                 "memoryGB": round(psutil.virtual_memory().total / 2**30, 1)}]  # unified memory
    return []


def _framework_devices() -> list[dict[str, Any]]:
    """GPUs as TensorFlow or PyTorch see them, only if this process already imported them (cheap then)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        try:
            return [{"index": i, "vendor": "tensorflow", "model": d.name}
                    for i, d in enumerate(tf.config.list_physical_devices("GPU"))]
        except Exception:  # noqa: BLE001
            return []
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda"):
        try:
            return [{"index": i, "vendor": "torch", "model": torch.cuda.get_device_name(i)}
                    for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001
            return []
    return []


def battery() -> dict[str, Any] | None:
    """Charge and mains/battery, or None on a machine without a battery."""
    try:
        state = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return None
    if state is None:
        return None
    return {"percent": round(state.percent, 1), "pluggedIn": bool(state.power_plugged)}


def detect(settings: Settings | None = None) -> dict[str, Any]:
    """This machine's capabilities, override included."""
    settings = settings or get_settings()
    ram = round(psutil.virtual_memory().total / 2**30, 1)
    memory = min(ram, settings.max_memory) if settings.max_memory else ram
    home = Path(settings.home)
    disk_root = home if home.exists() else Path(home.anchor or "/")
    caps: dict[str, Any] = {
        "cpus": os.cpu_count() or 1,
        "ramGb": ram,
        "memoryGB": memory,
        "diskFreeGB": round(shutil.disk_usage(disk_root).free / 2**30, 1),
        "os": OS_NAMES.get(platform.system(), platform.system().lower()),
        "osRelease": platform.release(),
        "arch": _arch(platform.machine()),
        "python": platform.python_version(),
        "gpus": gpus(),
        "battery": battery(),
        "packages": packages(),
        "versions": _versions(),
    }
    if hidden(settings):
        caps["packages"] = {n: v for n, v in caps["packages"].items() if import_name(n) not in hidden(settings)}
    caps = merge(caps, override(settings))
    allowed = _allowed_indices(settings)
    if allowed is not None:  # --gpus / MLQUEUE_GPUS: the GPUs this worker may use
        caps["gpus"] = [g for g in caps["gpus"] if g.get("index") in allowed]
    return caps


def _versions() -> dict[str, str]:
    """mlqueue's own stack (kept for the Workers page)."""
    out = {}
    for name in ("mlqueue", "celery", "pymongo"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _arch(machine: str) -> str:
    machine = machine.lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)


def override(settings: Settings | None = None) -> dict[str, Any]:
    """``MLQUEUE_CAPABILITIES`` as a dict (empty when unset); a malformed value is an error that says so."""
    raw = (settings or get_settings()).capabilities
    if not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CapabilitiesError(f"MLQUEUE_CAPABILITIES is not valid JSON ({exc.msg} at column {exc.colno}); "
                                "give an object such as '{\"gpus\": [{\"model\": \"RTX 3060\"}]}'") from None
    if not isinstance(data, dict):
        raise CapabilitiesError("MLQUEUE_CAPABILITIES must be a JSON object, e.g. '{\"memoryGB\": 8}'")
    return data


def merge(caps: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` on top of ``caps``; ``packages`` merged name by name (a null version removes one)."""
    out = {**caps, **{k: v for k, v in extra.items() if k != "packages"}}
    if isinstance(extra.get("packages"), dict):
        merged = {**caps.get("packages", {}), **{canonical(k): v for k, v in extra["packages"].items()}}
        out["packages"] = {k: str(v) for k, v in merged.items() if v is not None}
    out["gpus"] = [_gpu(g, i) for i, g in enumerate(out.get("gpus") or [])]
    return out


def _gpu(value: Any, index: int) -> dict[str, Any]:
    """An override may list GPUs as plain names; the rest of mlqueue sees dicts."""
    if isinstance(value, dict):
        return {"index": index, **value}
    return {"index": index, "model": str(value)}


def gpu_label(gpu: Any) -> str:
    """One GPU as a short text: ``RTX 3060 (12 GB)``."""
    if not isinstance(gpu, dict):
        return str(gpu)
    memory = f" ({gpu['memoryGB']:g} GB)" if isinstance(gpu.get("memoryGB"), int | float) else ""
    return f"{gpu.get('model') or gpu.get('vendor') or 'gpu'}{memory}"
