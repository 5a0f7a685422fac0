"""Which access tokens are known to be live, kept per process and told of revocations by
PostgreSQL (LISTEN/NOTIFY), so that a request need not look its token up.

Every request through the door checks that its token was not revoked (tokens.is_live). Asking
the database each time costs a query per request (about a third of a read's throughput,
BENCHMARKS.md). Instead, on PostgreSQL:

* a revocation sends ``NOTIFY medisentinel_token_revoked, '<jti> <jti> ...'`` in the revoking
  transaction, so every listener hears it when, and only if, the revocation commits;
* each process keeps a listening connection (a thread) and, while it is connected, remembers
  the tokens it has seen live in the database; those are trusted without a query until a
  notification names them;
* whenever the listener is not connected (starting, lost, SQLite), nothing is trusted and
  every request asks the database, as before: fail closed.

A connection can look alive and hear nothing: a half-open TCP connection after a failover, or
a transaction-pooling proxy (PgBouncer) that runs LISTEN on a server connection it then gives
to someone else. So the listener notifies *itself* every second and trusts only while its own
heartbeat keeps coming back (within `trust_seconds`); otherwise it reconnects, and meanwhile
every request asks the database.

Races. A token looked up as live just before its revocation committed is remembered only if no
notification named it meanwhile (`revoked` keeps every jti named since the listener connected,
for as long as an access token can live), and the listener's connection generation is the one
the lookup started under. The revoking process marks its own revocations at once; other
processes learn of them when the notification arrives, about a millisecond after the commit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import psycopg
from sqlalchemy import Connection, text

from app.db import libpq_dsn

log = logging.getLogger(__name__)

CHANNEL = "medisentinel_token_revoked"
LIVE_CACHE_SIZE = 10_000
RETRY_SECONDS = 2.0
POLL_SECONDS = 1.0  # how often the listener sends its heartbeat and looks up from waiting
TRUST_SECONDS = 5.0  # trust nothing when our own heartbeat has not come back for this long
_BEAT = "~beat"  # heartbeat payloads start with this (a jti is hex: never confused)
_NOTIFY_CHUNK = 100  # jtis per notification (the payload limit is 8,000 bytes)


def notify_revoked(conn: Connection, token_ids: list[str]) -> None:
    """Tell every process's watch, when `conn`'s transaction commits, that these are revoked."""
    if conn.dialect.name != "postgresql":
        return
    for start in range(0, len(token_ids), _NOTIFY_CHUNK):
        payload = " ".join(token_ids[start : start + _NOTIFY_CHUNK])
        conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": CHANNEL, "payload": payload})  # fmt: skip


class RevocationWatch:
    def __init__(
        self, database_url: str, max_token_seconds: int, *, trust_seconds: float = TRUST_SECONDS
    ) -> None:
        self._dsn = libpq_dsn(database_url)
        self._max_age = max_token_seconds
        self._lock = threading.Lock()
        self._live: OrderedDict[str, int] = OrderedDict()  # jti -> expires_at (epoch s)
        self._revoked: dict[str, float] = {}  # jti -> when we heard (monotonic)
        self._generation = 0  # +1 on every (re)connection; 0 = never connected
        self._connected = False
        self._trust_seconds = trust_seconds
        self._heard_beat = 0.0  # when our own heartbeat last came back (monotonic)
        self._beat_payload = f"{_BEAT} {os.getpid()}-{id(self)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.backend_pid: int | None = None  # the listening session's, for diagnostics

    # ------------------------------------------------------------------ the request side

    def generation(self) -> int | None:
        """The current connection generation, None when not listening (trust nothing)."""
        with self._lock:
            return self._generation if self._trusting() else None

    def is_known_live(self, token_id: str, now: int) -> bool:
        with self._lock:
            if not self._trusting() or token_id in self._revoked:
                return False
            expires_at = self._live.get(token_id)
            return expires_at is not None and expires_at > now

    def note_live(self, token_id: str, expires_at: int, generation: int | None) -> None:
        """The database said `token_id` is live, in a lookup that began under `generation`."""
        with self._lock:
            if generation is None or not self._trusting() or generation != self._generation:
                return
            if token_id in self._revoked:
                return
            self._live[token_id] = expires_at
            self._live.move_to_end(token_id)
            if len(self._live) > LIVE_CACHE_SIZE:
                self._live.popitem(last=False)

    def _trusting(self) -> bool:
        """Listening, and heard from ourselves lately (call with the lock held)."""
        fresh = time.monotonic() - self._heard_beat < self._trust_seconds
        return self._connected and fresh

    def mark_revoked(self, token_ids: list[str]) -> None:
        with self._lock:
            heard = time.monotonic()
            for token_id in token_ids:
                self._revoked[token_id] = heard
                self._live.pop(token_id, None)

    # ------------------------------------------------------------------ the listener

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="revocation-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL_SECONDS + 2)
            self._thread = None

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.generation() is not None:
                return True
            time.sleep(0.02)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # lost or refused: trust nothing until reconnected
                log.warning("token revocation listener down, checking every request: %s", exc)
            self._set_disconnected()
            self._stop.wait(RETRY_SECONDS)

    def _listen(self) -> None:
        with psycopg.connect(
            self._dsn, autocommit=True, application_name="medisentinel revocation watch"
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            with self._lock:
                # Anything remembered before may have been revoked while nobody listened.
                self._live.clear()
                self._generation += 1
                self._connected = True
            connected_at = time.monotonic()
            while not self._stop.is_set():
                self._send_beat(conn)
                for note in conn.notifies(timeout=POLL_SECONDS):
                    self._heard(note.payload)
                silent_since = max(self._heard_beat, connected_at)
                if time.monotonic() - silent_since >= self._trust_seconds:
                    raise RuntimeError("our own notifications do not come back")
                self._forget_old_revocations()

    def _send_beat(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._beat_payload))

    def _heard(self, payload: str) -> None:
        if payload == self._beat_payload:
            with self._lock:
                self._heard_beat = time.monotonic()
        elif not payload.startswith(_BEAT):  # other processes' heartbeats are theirs
            self.mark_revoked(payload.split())

    def _set_disconnected(self) -> None:
        with self._lock:
            self._connected = False
            self._live.clear()

    def _forget_old_revocations(self) -> None:
        """A revoked jti need not be kept longer than an access token can live."""
        horizon = time.monotonic() - self._max_age - 60
        with self._lock:
            for token_id in [t for t, heard in self._revoked.items() if heard < horizon]:
                del self._revoked[token_id]
