"""Handing memory back to the system after a whole read of the store.

Why: reading 100,000 Orders builds and drops hundreds of MB of small objects; glibc's allocator keeps
the freed pages in the process, so the HQ's resident memory stayed near its peak (~1.1 GB measured)
long after the read, though the tables it keeps hold a tenth of that. ``malloc_trim`` returns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger(__name__)


def give_back() -> bool:
    """Collect garbage and return the heap's free pages to the system (glibc only; elsewhere a no-op).
    Whether any were returned."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to hand back this way
        log.debug("malloc_trim is not available here", exc_info=True)
        return False
