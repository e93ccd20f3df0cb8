"""Checks on values read from JSON documents (Jobs, Outcomes, metric points), written once.

JSON has no separate integer and boolean worlds the way Python does: ``True`` is an ``int`` to
``isinstance``, so "a number" must say "and not a bool" every time. Here it says it once.
"""

from __future__ import annotations

from typing import Any, TypeGuard


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or a float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_whole(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an int, and not a bool (an epoch, a step, a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def number_or_none(value: Any) -> int | float | None:
    """``value`` if it is a number (not a bool), else None."""
    return value if is_number(value) else None
