"""Revocations pushed to every process (app/auth/revocations.py), on a real PostgreSQL.

A process trusts a token it has seen live only while it listens for revocations; a committed
revocation reaches it in about a millisecond, a rolled-back one never; a lost listener means
every request asks the database again. On SQLite there is no listener: every request asks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.auth.revocations import RevocationWatch
from app.auth.tokens import TokenService
from app.db import write_transaction
from tests.conftest import LiveServer
from tests.smart_helpers import register_client

SCOPE = "system/Patient.rs"


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def postgres_only(is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("revocation notifications are a PostgreSQL feature (SQLite asks every time)")


@pytest.fixture
def watch(postgres_only: None, database_url: str) -> Iterator[RevocationWatch]:
    started = RevocationWatch(database_url, max_token_seconds=3600)
    started.start()
    assert started.wait_connected(10), "the listener did not connect"
    yield started
    started.stop()


def _token(live_server: LiveServer) -> tuple[str, str]:
    """(access token, its jti) for a fresh backend client."""
    auth = live_server.app.state.auth
    app = register_client(auth, "backend", SCOPE, jwks={"keys": []})
    token = str(auth.local_token(app.name, SCOPE)["access_token"])
    return token, str(auth.tokens.verify(token).token_id)


def _elsewhere(live_server: LiveServer) -> TokenService:
    """The token service of another process: it revokes without telling our watch directly."""
    auth = live_server.app.state.auth
    return TokenService(auth.keys, live_server.settings)


def test_a_committed_revocation_is_heard_and_a_rolled_back_one_is_not(
    watch: RevocationWatch, live_server: LiveServer
) -> None:
    engine = live_server.app.state.engine
    ours = TokenService(live_server.app.state.auth.keys, live_server.settings)
    ours.watch = watch
    token, jti = _token(live_server)
    with engine.connect() as conn:
        assert ours.is_live(conn, jti)
    assert watch.is_known_live(jti, int(time.time()))  # from now on no lookup is needed

    other = _elsewhere(live_server)
    with engine.connect() as conn, conn.begin() as tx:
        other.revoke(conn, token)
        tx.rollback()
    time.sleep(0.3)  # a notification would have arrived by now; none is sent on rollback
    assert watch.is_known_live(jti, int(time.time()))

    with write_transaction(engine) as conn:
        other.revoke(conn, token)
    assert _until(lambda: not watch.is_known_live(jti, int(time.time())), 2.0)
    with engine.connect() as conn:
        assert not ours.is_live(conn, jti)  # asked the database: revoked
    assert not watch.is_known_live(jti, int(time.time()))


def test_a_lookup_that_raced_a_revocation_is_not_remembered(watch: RevocationWatch) -> None:
    now = int(time.time())
    generation = watch.generation()
    assert generation is not None
    watch.mark_revoked(["raced"])  # heard while the lookup was in flight
    watch.note_live("raced", now + 60, generation)
    assert not watch.is_known_live("raced", now)
    watch.note_live("stale", now + 60, generation - 1)  # began under an older connection
    assert not watch.is_known_live("stale", now)
    watch.note_live("unwatched", now + 60, None)  # began while nobody listened
    assert not watch.is_known_live("unwatched", now)
    watch.note_live("fine", now + 60, generation)
    assert watch.is_known_live("fine", now)
    assert not watch.is_known_live("fine", now + 61)  # expired: never trusted


def test_a_lost_listener_trusts_nothing_until_it_is_back(
    watch: RevocationWatch, database_url: str
) -> None:
    now = int(time.time())
    first = watch.generation()
    assert first is not None
    watch.note_live("before", now + 600, first)
    assert watch.is_known_live("before", now)
    admin = create_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": watch.backend_pid})
    admin.dispose()
    assert _until(lambda: watch.generation() != first, 5.0)
    assert not watch.is_known_live("before", now)  # forgotten: revocations may have been missed
    assert _until(lambda: watch.generation() is not None, 10.0), "did not reconnect"
    generation = watch.generation()
    assert generation is not None and generation > first
    assert not watch.is_known_live("before", now)


def test_the_server_hears_a_revocation_made_by_another_process(
    postgres_only: None, live_server: LiveServer
) -> None:
    server_watch = live_server.app.state.auth.tokens.watch
    assert server_watch is not None and server_watch.wait_connected(10)
    token, jti = _token(live_server)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{live_server.base_url}/Patient", headers=headers).status_code == 200
    assert server_watch.is_known_live(jti, int(time.time()))
    with write_transaction(live_server.app.state.engine) as conn:
        _elsewhere(live_server).revoke(conn, token)
    assert _until(lambda: not server_watch.is_known_live(jti, int(time.time())), 2.0)
    assert httpx.get(f"{live_server.base_url}/Patient", headers=headers).status_code == 401


def test_sqlite_has_no_listener_and_asks_every_time(
    is_postgres: bool, live_server: LiveServer
) -> None:
    if is_postgres:
        pytest.skip("the SQLite set-up")
    assert live_server.app.state.auth.tokens.watch is None
    token, _jti = _token(live_server)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{live_server.base_url}/Patient", headers=headers).status_code == 200
    with write_transaction(live_server.app.state.engine) as conn:
        _elsewhere(live_server).revoke(conn, token)
    assert httpx.get(f"{live_server.base_url}/Patient", headers=headers).status_code == 401


class _DeafWatch(RevocationWatch):
    """A listener whose notifications stop arriving (a pooling proxy that moved its LISTEN to
    another server connection, or a half-open TCP connection): stands for what is outside."""

    deaf = False

    def _send_beat(self, conn: Any) -> None:
        if not self.deaf:
            super()._send_beat(conn)


def test_a_listener_that_stops_hearing_itself_trusts_nothing(
    postgres_only: None, database_url: str
) -> None:
    watch = _DeafWatch(database_url, max_token_seconds=3600, trust_seconds=1.5)
    watch.start()
    try:
        assert watch.wait_connected(10)
        now = int(time.time())
        watch.note_live("jti-1", now + 600, watch.generation())
        assert watch.is_known_live("jti-1", now)
        watch.deaf = True  # revocations might now be missed: stop trusting within 1.5 s
        assert _until(lambda: not watch.is_known_live("jti-1", int(time.time())), 4.0)
        assert watch.generation() is None
        watch.deaf = False  # heard again after reconnecting: trusted again, memory cleared
        assert watch.wait_connected(10)
        assert not watch.is_known_live("jti-1", int(time.time()))
    finally:
        watch.stop()
