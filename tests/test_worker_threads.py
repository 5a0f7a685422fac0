"""app/api/worker_threads.py: the FHIR endpoint's hop to a worker thread keeps what anyio's
gave it: results and errors come back, context variables go along, and a cancelled caller
waits for the work to end (a read that ran must leave its audit records to be committed)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from app.api.worker_threads import run_in_worker

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_result_error_thread_and_context_variables() -> None:
    def work(x: int) -> tuple[int, str, bool]:
        return x + 1, request_id.get(), threading.current_thread() is threading.main_thread()

    def fails() -> None:
        raise ValueError("from the worker")

    async def scenario() -> tuple[int, str, bool]:
        request_id.set("r-1")
        with pytest.raises(ValueError, match="from the worker"):
            await run_in_worker(fails)
        return await run_in_worker(work, 41)

    assert asyncio.run(scenario()) == (42, "r-1", False)


def test_a_cancelled_caller_waits_for_the_work_to_end() -> None:
    ended = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        ended.set()

    async def scenario() -> bool:
        task = asyncio.create_task(run_in_worker(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ended.is_set()

    assert asyncio.run(scenario()) is True
