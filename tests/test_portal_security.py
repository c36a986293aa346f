"""meterd.portal.sessions, csrf and throttle, on a fake clock."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from meterd.portal import csrf as csrf_module
from meterd.portal.csrf import CsrfGuard, new_secret
from meterd.portal.sessions import SessionStore, Who, clear_cookie, session_cookie, session_key
from meterd.portal.throttle import LoginThrottle, client_key

ANA = Who("customer", "12345678909")
OPERATOR = Who("operator")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- sessions -------------------------------------------------------------------


def test_store_keeps_only_the_hash_of_the_cookie_id() -> None:
    store = SessionStore(Clock())
    session_id, session = store.create(ANA, "pt")
    assert session.key == hashlib.sha256(session_id.encode()).hexdigest() == session_key(session_id)
    assert session_id not in repr(session)
    # What the store holds does not log anyone in: its key is not a cookie.
    assert store.get(session.key) is None
    assert store.get(session_id) == session
    assert len(session_id) >= 43  # 32 random bytes


def test_each_login_gets_a_new_id() -> None:
    store = SessionStore(Clock())
    ids = {store.create(ANA, "pt")[0] for _ in range(50)}
    assert len(ids) == 50 and len(store) == 50


def test_idle_expiry_restarts_with_every_request() -> None:
    clock = Clock()
    store = SessionStore(clock, idle=600, absolute=3600)
    session_id, _ = store.create(ANA, "pt")
    clock.now += 599
    assert store.get(session_id) is not None  # still alive, and the idle timer restarts
    clock.now += 599
    assert store.get(session_id) is not None
    clock.now += 600
    assert store.get(session_id) is None
    assert len(store) == 0


def test_absolute_expiry_ends_a_busy_session() -> None:
    clock = Clock()
    store = SessionStore(clock, idle=600, absolute=3600)
    session_id, _ = store.create(OPERATOR, "en")
    for _ in range(11):
        clock.now += 300
        assert store.get(session_id) is not None
    clock.now += 300  # 3600 s after login
    assert store.get(session_id) is None


def test_logout_and_logout_everywhere() -> None:
    store = SessionStore(Clock())
    first, _ = store.create(ANA, "pt")
    second, _ = store.create(ANA, "en")
    other, _ = store.create(OPERATOR, "pt")
    store.logout(first)
    store.logout(first)  # twice is harmless
    store.logout(None)
    assert store.get(first) is None and store.get(second) is not None
    assert store.logout_everywhere(ANA) == 1
    assert store.get(second) is None and store.get(other) is not None


def test_a_stream_checks_its_session_by_key_without_keeping_it_alive() -> None:
    clock = Clock()
    store = SessionStore(clock, idle=600, absolute=3600)
    session_id, session = store.create(ANA, "pt")
    assert store.alive(session.key) and not store.alive(session_id)  # by its key, never its id
    clock.now += 599
    assert store.alive(session.key)
    clock.now += 1  # alive() did not restart the idle timer
    assert not store.alive(session.key) and store.get(session_id) is None
    other_id, other = store.create(ANA, "pt")
    store.logout(other_id)
    assert not store.alive(other.key)


def test_session_knows_who_and_its_language() -> None:
    store = SessionStore(Clock())
    session_id, session = store.create(ANA, "pt")
    assert session.who.customer_id == "12345678909" and session.lang == "pt"
    changed = store.set_lang(session_id, "en")
    assert changed is not None and changed.lang == "en"
    assert store.get(session_id).lang == "en"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        store.set_lang(session_id, "fr")
    assert store.set_lang("unknown", "en") is None
    with pytest.raises(ValueError):
        Who("customer")
    with pytest.raises(ValueError):
        Who("operator", "12345678909")


def test_store_is_bounded_and_evicts_the_least_recently_used() -> None:
    clock = Clock()
    store = SessionStore(clock, max_sessions=3)
    ids = []
    for _ in range(3):
        ids.append(store.create(ANA, "pt")[0])
        clock.now += 1
    store.get(ids[0])  # the oldest login is the most recently used now
    newest, _ = store.create(OPERATOR, "pt")
    assert len(store) == 3
    assert store.get(ids[1]) is None
    assert all(store.get(i) is not None for i in (ids[0], ids[2], newest))


def test_prune_drops_expired_sessions() -> None:
    clock = Clock()
    store = SessionStore(clock, idle=60, absolute=600)
    for _ in range(5):
        store.create(ANA, "pt")
    clock.now += 30
    kept, _ = store.create(ANA, "pt")
    clock.now += 40
    assert store.prune() == 5
    assert len(store) == 1 and store.get(kept) is not None


def test_cookie_attributes() -> None:
    assert session_cookie("abc", secure=False) == "meterd_portal=abc; Path=/; HttpOnly; SameSite=Strict"
    assert session_cookie("abc", secure=True) == "__Host-meterd_portal=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
    assert clear_cookie(secure=False) == "meterd_portal=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


# -- CSRF -------------------------------------------------------------------------


def test_csrf_token_is_bound_to_its_session_and_secret() -> None:
    guard = CsrfGuard(b"s" * 32)
    token = guard.token("session-a")
    assert token == guard.token("session-a")
    assert token == hmac.new(b"s" * 32, b"meterd-portal-csrf\x00session-a", hashlib.sha256).hexdigest()
    assert guard.check("session-a", token)
    assert not guard.check("session-b", token)
    assert not CsrfGuard(b"t" * 32).check("session-a", token)
    assert not guard.check("session-a", token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not guard.check("session-a", None)
    assert not guard.check("session-a", "")
    assert not guard.check("", token)
    assert not guard.check("session-a", "ünïcode")


def test_csrf_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(csrf_module.hmac, "compare_digest", spy)
    guard = CsrfGuard(new_secret())
    assert guard.check("s", guard.token("s"))
    assert not guard.check("s", "wrong")
    assert len(calls) == 2


def test_csrf_refuses_short_secrets_and_empty_bindings() -> None:
    with pytest.raises(ValueError):
        CsrfGuard(b"short")
    with pytest.raises(ValueError):
        CsrfGuard(new_secret()).token("")
    assert len(new_secret()) == 32 and new_secret() != new_secret()


# -- throttle -------------------------------------------------------------------


def _throttle(clock: Clock, **kw: float) -> LoginThrottle:
    options = {"free_failures": 3, "base_delay": 1.0, "max_delay": 60.0, "forget_after": 600.0, **kw}
    return LoginThrottle(clock, **options)  # type: ignore[arg-type]


def test_backoff_doubles_after_the_free_failures_up_to_the_cap() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    waits = []
    for _ in range(12):
        throttle.failed("10.0.0.1", "ana")
        waits.append(throttle.retry_after("10.0.0.1", "ana"))
    assert waits == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    clock.now += 59
    assert throttle.retry_after("10.0.0.1", "ana") == pytest.approx(1)
    clock.now += 1
    assert throttle.retry_after("10.0.0.1", "ana") == 0


def test_counts_per_address_and_per_login_id() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    for n in range(6):  # one client trying many ids
        throttle.failed("10.0.0.1", f"id{n}")
    assert throttle.retry_after("10.0.0.1", "fresh-id") == 8
    assert throttle.retry_after("10.0.0.2", "fresh-id") == 0
    for n in range(6):  # many clients trying one id
        throttle.failed(f"10.1.0.{n}", "ana")
    assert throttle.retry_after("10.9.9.9", "ana") == 8


def test_success_forgets_the_id_but_not_the_address() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(5):
        throttle.failed("10.0.0.1", "ana")
    throttle.succeeded("ana")
    assert throttle.retry_after("10.0.0.9", "ana") == 0
    assert throttle.retry_after("10.0.0.1", "other") == 4


def test_quiet_keys_start_over() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(8):
        throttle.failed("10.0.0.1", "ana")
    clock.now += 600
    assert throttle.retry_after("10.0.0.1", "ana") == 0
    throttle.failed("10.0.0.1", "ana")
    assert throttle.retry_after("10.0.0.1", "ana") == 0  # the first of a new count is free


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = _throttle(clock, max_entries=100)
    for n in range(5000):
        throttle.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"id{n}")
    assert len(throttle) == 200
    # The most recent failures are the ones kept.
    for _ in range(3):
        throttle.failed("10.0.19.135", "id4999")
    assert throttle.retry_after("10.0.19.135", "x") > 0


def test_delay_stays_finite_for_huge_counts() -> None:
    throttle = _throttle(Clock())
    assert throttle.delay(10**9) == 60.0
    assert throttle.delay(0) == 0.0


def test_ipv6_clients_are_counted_per_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("unix-socket") == "unix-socket"
    clock = Clock()
    throttle = _throttle(clock)
    for n in range(5):
        throttle.failed(f"2001:db8:1:2::{n + 1}", f"id{n}")
    assert throttle.retry_after("2001:db8:1:2::ffff", "new") == 4


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LoginThrottle(Clock(), base_delay=0)
    with pytest.raises(ValueError):
        LoginThrottle(Clock(), max_delay=100, forget_after=50)
    with pytest.raises(ValueError):
        SessionStore(Clock(), idle=10, absolute=5)
