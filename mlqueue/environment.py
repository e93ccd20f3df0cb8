"""Telling the machine's fault from the Job's: which failed attempts are the environment's.

A Job that fails with ``ModuleNotFoundError`` on a machine without TensorFlow, runs out of GPU memory on
a small card, fills the disk, or loses its GPU mid-run would run fine on another machine. Such an attempt
ends with ``reason: environment``; ``orders.bounce`` puts the Order back for another machine without
charging it an attempt, and this worker stops taking the Job's requirement class until restarted
(``routing.refuse``). A missing module the Job did not declare becomes part of its requirement, so it
is routed only to machines that have it. ``max_environment_failures`` (default 5) still ends a Job that
fails everywhere, with a message that says so.

Judged from the Outcome (error type, message, traceback tail), so it covers module scripts, command-line
scripts (their stderr tail is in the message) and failures while loading a script or fetching its data.
"""

from __future__ import annotations

import re
from typing import Any

MISSING_MODULE = re.compile(r"No module named '([A-Za-z_][A-Za-z0-9_]*)")
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("gpu memory", ("CUDA out of memory", "OutOfMemoryError", "ResourceExhaustedError", "OOM when allocating",
                    "CUDA_ERROR_OUT_OF_MEMORY", "cudaErrorMemoryAllocation")),
    ("gpu gone", ("no CUDA-capable device", "CUDA_ERROR_NO_DEVICE", "GPU is lost", "fallen off the bus",
                  "CUDA driver version is insufficient", "cudaErrorDevicesUnavailable", "CUDA_ERROR_NOT_INITIALIZED",
                  "Failed call to cuInit")),
    ("disk full", ("No space left on device", "[Errno 28]", "ENOSPC")),
]
IMPORT_TYPES = {"ModuleNotFoundError", "ImportError"}
DISTRIBUTIONS = {"sklearn": "scikit-learn", "cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml",
                 "pynvml": "nvidia-ml-py"}


def judge(outcome: dict[str, Any]) -> dict[str, Any] | None:
    """``{"kind": ..., "module"?: ...}`` when a failed Outcome is the machine's fault, else None."""
    if outcome.get("reason") not in (None, "error"):
        return None
    error = outcome.get("error") or {}
    kind = error.get("type") or ""
    text = " ".join(str(x) for x in (outcome.get("message"), error.get("message"), error.get("traceback")) if x)
    missing = MISSING_MODULE.search(text)
    if kind in IMPORT_TYPES or missing or "ModuleNotFoundError" in text:
        found = {"kind": "missing module"}
        if missing:
            found["module"] = missing.group(1)
            found["package"] = DISTRIBUTIONS.get(missing.group(1), missing.group(1))
        return found
    if kind == "MemoryError":
        return {"kind": "out of memory"}
    for name, needles in KINDS:
        if any(n in text for n in needles):
            return {"kind": name}
    return None


def describe(judged: dict[str, Any]) -> str:
    """``missing module tensorflow``, ``gpu memory``..."""
    return judged["kind"] + (f" {judged['module']}" if judged.get("module") else "")
