"""The chain verification status the console shows: `audit.verify.verify` run on a worker
thread, its result kept for a minute.

A walk of the whole trail costs ~40 µs of CPU per record (millions of records a day at a
busy site), so the console walks all of it once, then at most every `FULL_WALK_SECONDS`; in
between, each refresh checks only what was appended since the last walk, resuming from the
records it ended at (which must still be there, unchanged). The status says which. The
`medisentinel audit verify` command always walks everything.

A page never waits for a walk longer than `WAIT_SECONDS`: a stale result is shown (marked
with its age) while a fresh one is computed in the background, and the very first page load
shows "running" if the walk takes longer. One walk at a time per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

log = logging.getLogger("medisentinel.audit")

FRESH_SECONDS = 60.0
WAIT_SECONDS = 5.0
FULL_WALK_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class Status:
    state: str  # verified | failed | running | unavailable
    checked_at: float | None = None  # epoch seconds of the walk shown
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    full_walk_at: float | None = None  # epoch seconds of the last walk of the whole trail

    @property
    def age_seconds(self) -> int | None:
        return None if self.checked_at is None else int(time.time() - self.checked_at)

    @property
    def full_walk_age_seconds(self) -> int | None:
        return None if self.full_walk_at is None else int(time.time() - self.full_walk_at)


Heads = dict[int, tuple[int, bytes]]


def _walk(
    engine: Any, keys: Any, checkpoint_seconds: int, resume: Heads | None
) -> tuple[dict[str, Any], Heads | None]:
    """(summary, where to resume next time: None after a failed walk)."""
    from audit.verify import verify  # imported late: the console works (status unavailable)
    # even while the verifier is being changed

    report = verify(engine, keys, checkpoint_seconds=checkpoint_seconds, resume=resume)
    return dict(report.summary()), (report.heads if report.ok else None)


class Verifier:
    def __init__(self, engine: Any, keys: Any, checkpoint_seconds: int) -> None:
        self.engine, self.keys = engine, keys
        self.checkpoint_seconds = checkpoint_seconds
        self.last: Status | None = None
        self.task: asyncio.Task[Status] | None = None
        self.resume: Heads | None = None  # where the last good walk ended
        self.full_walk_at: float | None = None
        self.records = 0  # walked since (and including) the last full walk

    async def status(self) -> Status:
        last = self.last
        if last is not None and last.checked_at and time.time() - last.checked_at < FRESH_SECONDS:
            return last
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        if last is not None:
            return last  # stale, shown with its age; the fresh one is on its way
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), WAIT_SECONDS)
        except TimeoutError:
            return Status("running")

    async def _run(self) -> Status:
        started = time.time()
        full = self.full_walk_at is None or started - self.full_walk_at >= FULL_WALK_SECONDS
        resume = None if full else self.resume
        try:
            summary, self.resume = await asyncio.to_thread(
                _walk, self.engine, self.keys, self.checkpoint_seconds, resume
            )
        except Exception as exc:
            log.exception("audit chain verification could not run")
            self.resume = None
            status = Status("unavailable", time.time(), error=f"{type(exc).__name__}: {exc}")
        else:
            if resume is None:
                self.full_walk_at, self.records = started, 0
            self.records += int(summary.get("records", 0))
            summary["records"] = self.records
            state = "verified" if summary.get("ok") else "failed"
            status = Status(state, time.time(), summary, full_walk_at=self.full_walk_at)
        if self.resume is None:
            self.full_walk_at = None  # after a failure, walk everything again next time
        self.last = status
        return status


def verifier(request: Request) -> Verifier:
    state = request.app.state
    found = getattr(state, "audit_console_verifier", None)
    if found is None:
        found = state.audit_console_verifier = Verifier(
            state.engine, state.auth.keys, state.settings.audit_checkpoint_seconds
        )
    return found  # type: ignore[no-any-return]
