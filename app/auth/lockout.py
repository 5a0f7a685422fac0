"""Sign-in throttling: after MAX_FAILURES wrong passwords for one username within
WINDOW_SECONDS, further attempts for that username are refused without looking at the
password until the oldest of those failures leaves the window.

HIPAA asks for log-in monitoring (45 CFR 164.308(a)(5)(ii)(C)); without a limit a password
can be guessed at the speed of the server. Counted per username as typed, known or not (the
answer never tells which accounts exist), in the database, so every server process sees the
same count. A successful sign-in clears the username's failures. Every refusal is audited
like a failed sign-in (sign_in.py). Attempts racing each other may pass the check together:
the limit holds up to the number of concurrent requests.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from app.auth.tables import login_failure

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
_WINDOW_US = WINDOW_SECONDS * 1_000_000


def seconds_locked(conn: Connection, username: str, now_us: int) -> int:
    """How long `username` must wait before its password is checked again; 0: not locked."""
    c = login_failure.c
    count, oldest = conn.execute(
        select(func.count(), func.min(c.at)).where(
            c.username == username, c.at > now_us - _WINDOW_US
        )
    ).one()
    if count < MAX_FAILURES:
        return 0
    # the newest MAX_FAILURES failures hold the lock until the earliest of them leaves the
    # window; with more (races), waiting for the oldest is a little longer: fine.
    return max(1, (int(oldest) + _WINDOW_US - now_us + 999_999) // 1_000_000)


def note_failure(conn: Connection, username: str, now_us: int) -> None:
    c = login_failure.c
    conn.execute(delete(login_failure).where(c.at <= now_us - _WINDOW_US))
    conn.execute(insert(login_failure).values(username=username, at=now_us))


def clear(conn: Connection, username: str) -> None:
    conn.execute(delete(login_failure).where(login_failure.c.username == username))
