"""The chain verification status the console shows: `audit.verify.verify` run on a worker
thread, its result kept for a minute.

Verifying walks the whole chain, so a page never waits for it longer than `WAIT_SECONDS`:
a stale result is shown (marked with its age) while a fresh one is computed in the
background, and the very first page load shows "running" if the walk takes longer.
One walk at a time per process.
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


@dataclass(frozen=True)
class Status:
    state: str  # verified | failed | running | unavailable
    checked_at: float | None = None  # epoch seconds of the walk shown
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def age_seconds(self) -> int | None:
        return None if self.checked_at is None else int(time.time() - self.checked_at)


def _walk(engine: Any, keys: Any, checkpoint_seconds: int) -> dict[str, Any]:
    from audit.verify import verify  # imported late: the console works (status unavailable)
    # even while the verifier is being changed

    report = verify(engine, keys, checkpoint_seconds=checkpoint_seconds)
    return dict(report.summary())


class Verifier:
    def __init__(self, engine: Any, keys: Any, checkpoint_seconds: int) -> None:
        self.engine, self.keys = engine, keys
        self.checkpoint_seconds = checkpoint_seconds
        self.last: Status | None = None
        self.task: asyncio.Task[Status] | None = None

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
        try:
            summary = await asyncio.to_thread(
                _walk, self.engine, self.keys, self.checkpoint_seconds
            )
        except Exception as exc:
            log.exception("audit chain verification could not run")
            status = Status("unavailable", time.time(), error=f"{type(exc).__name__}: {exc}")
        else:
            status = Status("verified" if summary.get("ok") else "failed", time.time(), summary)
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
