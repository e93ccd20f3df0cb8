"""One-time invite codes: how a machine joins the house without anyone pasting passwords.

The HQ mints a short code (``K7QM-2XRD``: 8 symbols of Crockford's base 32, 40 bits) that a person reads
off one screen and types on another. A code is valid for 10 minutes and for one exchange. The store keeps
only its SHA-256, so reading the ``invites`` collection never yields a usable code. Spending a code is one
conditional update ("still unused and not expired"), the ``orders`` style: two machines racing with the
same code cannot both win. Guessing is slowed by ``RateLimiter`` on the exchange route — with 2^40 codes,
a few tries a minute and a 10-minute life, a guess succeeds about never.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlqueue import store
from mlqueue.errors import MlqueueError
from mlqueue.settings import Settings, get_settings

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U to misread
CODE_LENGTH = 8
VALID_FOR = timedelta(minutes=10)
TYPO_FIXES = str.maketrans({"O": "0", "I": "1", "L": "1"})


class InviteError(MlqueueError, ValueError):
    """A code that cannot be spent; the message says why and what to do."""

    status = 403


def now() -> datetime:
    return datetime.now(UTC)


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalize(code: str) -> str:
    """What a person typed to the canonical form: case, spaces and dashes ignored, O/0 and I/1 alike."""
    cleaned = "".join(ch for ch in code.upper() if ch.isalnum()).translate(TYPO_FIXES)
    if len(cleaned) != CODE_LENGTH or any(ch not in ALPHABET for ch in cleaned):
        raise InviteError(f"{code!r} is not an invite code: a code is {CODE_LENGTH} letters and digits like "
                          "K7QM-2XRD; run `mlqueue invite` on the HQ to get one")
    return f"{cleaned[:4]}-{cleaned[4:]}"


def digest(code: str) -> str:
    return hashlib.sha256(f"mlqueue-invite:{normalize(code)}".encode()).hexdigest()


def create(by: str = "cli", settings: Settings | None = None, valid_for: timedelta = VALID_FOR) -> dict[str, Any]:
    """Mint a code; only its hash is stored. Returns ``{"code", "expires"}`` (the code is shown once)."""
    from mlqueue.access import require_write

    require_write("invite machines")
    settings = settings or get_settings()
    code = new_code()
    created = now()
    expires = created + valid_for
    store.durable(lambda: store.db(settings).invites.insert_one(
        {"_id": digest(code), "createdDate": created, "expires": expires, "by": by, "usedAt": None}),
        "store an invite", settings)
    return {"code": code, "expires": expires}


def spend(code: str, machine: str, settings: Settings | None = None) -> dict[str, Any]:
    """Mark the code used by ``machine`` — once, and only before it expires — or say why not."""
    settings = settings or get_settings()
    key = digest(code)
    invites = store.db(settings).invites
    when = now()
    result = store.durable(lambda: invites.update_one(
        {"_id": key, "usedAt": None, "expires": {"$gt": when}},
        {"$set": {"usedAt": when, "usedBy": machine}}), "spend an invite", settings)
    if result.matched_count == 1:
        return invites.find_one({"_id": key})
    found = invites.find_one({"_id": key})
    if found is None:
        raise InviteError("unknown invite code: check for a typo, or run `mlqueue invite` on the HQ for a new one")
    if found.get("usedAt") is not None:
        raise InviteError(f"this invite code was already used (by {found.get('usedBy')}); codes work once — "
                          "run `mlqueue invite` on the HQ for a new one")
    raise InviteError("this invite code has expired (codes are valid for 10 minutes); "
                      "run `mlqueue invite` on the HQ for a new one")


@dataclass
class RateLimiter:
    """At most ``limit`` failed attempts per ``window`` seconds per client, and ``total`` for everyone.

    Only failures count: a guesser is slowed down, a machine with a valid code never is. In memory: the
    HQ's API is one process, and forgetting the counts on a restart costs nothing.
    """

    limit: int = 5
    total: int = 30
    window: float = 60.0
    _failed: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: str, moment: float) -> deque[float]:
        recent = self._failed.setdefault(key, deque())
        while recent and moment - recent[0] > self.window:
            recent.popleft()
        return recent

    def allow(self, client: str) -> bool:
        moment = time.monotonic()
        with self._lock:
            return len(self._recent(client, moment)) < self.limit and len(self._recent("*", moment)) < self.total

    def failed(self, client: str) -> None:
        moment = time.monotonic()
        with self._lock:
            self._recent(client, moment).append(moment)
            self._recent("*", moment).append(moment)
