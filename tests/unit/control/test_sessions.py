"""Signed session cookies, the CSRF checks and the failed-login throttle."""

from __future__ import annotations

import base64
import json

from galpipe.control.kube import Identity
from galpipe.control.sessions import LoginThrottle, SessionSigner, csrf_problem

KEY = "k" * 40
ALICE = Identity("alice", ("ops", "system:authenticated"), uid="u1", extra={"x": ("1",)})


def test_a_cookie_round_trips_and_holds_no_secret_but_the_csrf_token() -> None:
    signer = SessionSigner(KEY, clock=lambda: 100.0)
    value, session = signer.issue(ALICE)
    assert signer.read(value) == session
    assert session.identity == ALICE
    assert session.expires == 100.0 + signer.lifetime_s
    body = value.split(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert set(payload) == {"v", "u", "g", "i", "x", "e", "c"}


def test_tampered_forged_and_expired_cookies_are_refused() -> None:
    now = [100.0]
    signer = SessionSigner(KEY, lifetime_s=60, clock=lambda: now[0])
    value, _ = signer.issue(ALICE)
    _, signature = value.split(".")
    evil = (
        base64.urlsafe_b64encode(
            json.dumps(
                {"v": 1, "u": "admin", "g": [], "i": "", "x": {}, "e": 1e12, "c": "c"}
            ).encode()
        )
        .decode()
        .rstrip("=")
    )
    assert signer.read(f"{evil}.{signature}") is None
    assert SessionSigner("other" * 10).read(value) is None
    assert signer.read("garbage") is None
    assert signer.read(None) is None
    now[0] = 160.0
    assert signer.read(value) is None


def test_csrf_problem() -> None:
    _, session = SessionSigner(KEY).issue(ALICE)
    good = {"host": "c.example", "origin": "https://c.example", "x-csrf-token": session.csrf_token}
    assert csrf_problem(good, session) == ""
    assert csrf_problem({**good, "origin": "https://evil.example"}, session)
    assert csrf_problem({**good, "origin": "null"}, session)
    assert csrf_problem({**good, "x-csrf-token": "nope"}, session)
    no_origin = {k: v for k, v in good.items() if k != "origin"}
    assert csrf_problem(no_origin, session)
    assert csrf_problem({**no_origin, "referer": "https://c.example/ui"}, session) == ""
    assert csrf_problem({"host": "c.example"}, None, check_token=False) == ""
    assert csrf_problem({"host": "c.example", "origin": "https://x"}, None, check_token=False)


def test_login_throttle_refills() -> None:
    now = [0.0]
    throttle = LoginThrottle(burst=2, refill_per_s=0.5, clock=lambda: now[0])
    assert throttle.allow("a")
    throttle.record_failure("a")
    throttle.record_failure("a")
    assert not throttle.allow("a")
    assert throttle.allow("b")
    assert throttle.retry_after_s("a") == 2.0
    now[0] = 2.0
    assert throttle.allow("a")
    now[0] = 100.0
    assert throttle.allow("a")
    assert throttle._buckets == {}  # forgiven addresses are forgotten
