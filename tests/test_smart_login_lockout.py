"""Password guessing is throttled: after five wrong passwords for one username within 15
minutes, the sixth attempt is refused (429, Retry-After) without the password being looked
at, even a right one; an unknown username is treated the same (nothing tells which accounts
exist); every refusal is audited as a failed sign-in; a success clears the count."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from app.auth import lockout
from app.auth.pkce import s256
from tests.conftest import LiveServer
from tests.smart_helpers import CALLBACK, PASSWORD, Browser, register_client, register_user

SCOPE = "openid fhirUser user/Patient.rs"


def login_page(live_server: LiveServer) -> tuple[Browser, str]:
    """A browser at the login page of a fresh authorization request, and its request id."""
    root = live_server.settings.server_root
    app = register_client(live_server.app.state.auth, "public", SCOPE)
    query = httpx.QueryParams(
        response_type="code", client_id=app.client_id, redirect_uri=CALLBACK,
        scope=SCOPE, state="s", aud=live_server.base_url, code_challenge=s256("v" * 50),
        code_challenge_method="S256",
    )  # fmt: skip
    browser = Browser(root)
    page = browser.open(f"{root}/auth/authorize?{query}")
    assert "/auth/login" in str(page.url), page.text
    return browser, browser.request_id()


def attempt(live_server: LiveServer, username: str, password: str) -> httpx.Response:
    browser, request_id = login_page(live_server)
    return browser.http.post(
        "/auth/login", data={"request": request_id, "username": username, "password": password}
    )


@pytest.mark.parametrize("known", [True, False], ids=["known user", "unknown username"])
def test_five_wrong_passwords_lock_the_username(live_server: LiveServer, known: bool) -> None:
    auth = live_server.app.state.auth
    username = register_user(auth, "practitioner", None) if known else f"nobody-{uuid.uuid4()}"
    for _ in range(lockout.MAX_FAILURES):
        wrong = attempt(live_server, username, "not the password")
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    refused = attempt(live_server, username, PASSWORD)  # even the right one
    assert refused.status_code == 429, refused.text
    assert "Too many failed sign-ins" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= lockout.WINDOW_SECONDS
    # another username is not affected
    other = register_user(auth, "practitioner", None)
    assert attempt(live_server, other, PASSWORD).status_code == 303

    with auth.engine.connect() as conn:
        details = conn.execute(
            text("SELECT content FROM audit_event ORDER BY seq DESC LIMIT 40")
        ).scalars()
        texts = [bytes(c).decode() for c in details]
    assert any("refused: too many failed sign-ins" in t and username in t for t in texts)


def test_a_success_clears_the_failures(live_server: LiveServer) -> None:
    username = register_user(live_server.app.state.auth, "practitioner", None)
    for _ in range(2):
        for _ in range(lockout.MAX_FAILURES - 1):
            assert attempt(live_server, username, "nope").status_code == 401
        assert attempt(live_server, username, PASSWORD).status_code == 303


def test_failures_older_than_the_window_do_not_count(live_server: LiveServer) -> None:
    """The lock lasts until the oldest of the failures leaves the window."""
    username = f"old-{uuid.uuid4()}"
    engine = live_server.app.state.auth.engine
    now_us = 10**18
    with engine.begin() as conn:
        for k in range(lockout.MAX_FAILURES):
            lockout.note_failure(conn, username, now_us + k)
        assert lockout.seconds_locked(conn, username, now_us + 10) == lockout.WINDOW_SECONDS
        later = now_us + lockout.WINDOW_SECONDS * 1_000_000 + 1
        assert lockout.seconds_locked(conn, username, later) == 0
        lockout.clear(conn, username)
