"""app/api/worker_threads.py: the FHIR endpoint's hop to a worker thread keeps what anyio's
gave it: results and errors come back, context variables go along, and a cancelled caller
waits for the work to end (a read that ran must leave its audit records to be committed).
Reads of one resource by id take a small pool of their own; everything else the large one."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest

from app.api.fhir import is_instance_read
from app.api.worker_threads import READ_THREADS, run_in_worker, run_instance_read
from app.fhir.exchange import FhirRequest

RUNNERS = pytest.mark.parametrize("run", [run_in_worker, run_instance_read])

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@RUNNERS
def test_result_error_thread_and_context_variables(run: Any) -> None:
    def work(x: int) -> tuple[int, str, bool]:
        return x + 1, request_id.get(), threading.current_thread() is threading.main_thread()

    def fails() -> None:
        raise ValueError("from the worker")

    async def scenario() -> tuple[int, str, bool]:
        request_id.set("r-1")
        with pytest.raises(ValueError, match="from the worker"):
            await run(fails)
        return await run(work, 41)

    assert asyncio.run(scenario()) == (42, "r-1", False)


@RUNNERS
def test_a_cancelled_caller_waits_for_the_work_to_end(run: Any) -> None:
    ended = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        ended.set()

    async def scenario() -> bool:
        task = asyncio.create_task(run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ended.is_set()

    assert asyncio.run(scenario()) is True


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "Observation/abc-1", True),
        ("GET", "Patient/123", True),
        ("GET", "Patient", False),  # a search
        ("GET", "Patient/_history", False),  # type history
        ("GET", "Patient/$everything", False),  # an operation
        ("GET", "Patient/1/_history", False),
        ("GET", "Patient/1/_history/2", False),
        ("GET", "Patient/1/$everything", False),
        ("GET", "_history", False),
        ("GET", "$meta/x", False),
        ("GET", "metadata", False),
        ("GET", "", False),
        ("PUT", "Patient/1", False),
        ("DELETE", "Patient/1", False),
        ("POST", "Patient/_search", False),
    ],
)
def test_only_reads_of_one_resource_by_id_take_the_read_pool(
    method: str, path: str, expected: bool
) -> None:
    assert is_instance_read(FhirRequest(method=method, path=path)) is expected


def test_instance_reads_run_on_their_own_small_pool_and_the_rest_on_the_large_one() -> None:
    def where() -> str:
        time.sleep(0.02)  # long enough for the calls to overlap
        return threading.current_thread().name

    async def scenario() -> tuple[list[str], list[str]]:
        reads = await asyncio.gather(*(run_instance_read(where) for _ in range(3 * READ_THREADS)))
        others = await asyncio.gather(*(run_in_worker(where) for _ in range(3 * READ_THREADS)))
        return reads, others

    reads, others = asyncio.run(scenario())
    assert all(name.startswith("medisentinel-read") for name in reads)
    assert len(set(reads)) <= READ_THREADS
    assert all(name.startswith("medisentinel-fhir") for name in others)
    assert len(set(others)) > READ_THREADS  # the large pool is not capped at the read pool's size
