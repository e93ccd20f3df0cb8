"""Invite codes as people type them, and the brake on guessing."""

from __future__ import annotations

import pytest

from mlqueue import invites


def test_codes_are_short_and_typos_of_look_alike_symbols_are_forgiven() -> None:
    code = invites.new_code()
    assert len(code) == 9 and code[4] == "-" and invites.normalize(code) == code
    assert invites.normalize(" k7qm 2xrd ") == "K7QM-2XRD"
    assert invites.normalize("O1IL-ooll") == invites.normalize("0111-0011")
    assert invites.digest("k7qm2xrd") == invites.digest("K7QM-2XRD")


@pytest.mark.parametrize("typed", ["", "K7QM-2XR", "K7QM-2XRDD", "K7QM-2XR!", "UUUU-UUUU"])
def test_what_is_not_a_code_says_what_a_code_looks_like(typed: str) -> None:
    with pytest.raises(invites.InviteError, match="not an invite code: a code is 8 letters and digits"):
        invites.normalize(typed)


def test_only_failures_count_per_client_and_in_total() -> None:
    limiter = invites.RateLimiter(limit=2, total=3)
    assert limiter.allow("a") and limiter.allow("a")
    limiter.failed("a")
    limiter.failed("a")
    assert not limiter.allow("a") and limiter.allow("b")
    limiter.failed("b")
    assert not limiter.allow("c")  # three failures in the window, from anyone, close the door for everyone
