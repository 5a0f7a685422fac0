"""The FHIR endpoint's hop from the event loop to a worker thread, the short way.

Every FHIR request runs the door (blocking SQLAlchemy and psycopg) on a worker thread.
Starlette's `run_in_threadpool` goes through anyio: a checkpoint (an extra turn of the event
loop), a capacity limiter, a cancel scope and a context switch of the async library for every
call, ~100 µs of CPU per call against ~55 µs for asyncio's own executor (measured in process,
8 concurrent callers). Kept from anyio: the caller's context variables go with the call, at
most 40 calls run at once (anyio's default), and a cancelled caller still waits for the call
to finish (a read that ran leaves its audit records for the caller's `finally` to commit).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREADS = 40  # anyio's default limit for run_in_threadpool
# Reads of one resource by id (a primary-key lookup each) get a small pool of their own. Under
# load a read spends far longer waiting for its thread and the GIL than working (BENCHMARKS.md
# session 12: ~8-10 ms of hand-offs for under 1 ms of work, with 40 threads contending);
# four threads for them read 5-11 % faster side by side (bench/audit_ab.py --versus). Only
# these: anything that may run long (searches, history, operations, writes) keeps the large
# pool, so it cannot hold up the rest.
READ_THREADS = 4
_executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="medisentinel-fhir")
_read_executor = ThreadPoolExecutor(
    max_workers=READ_THREADS, thread_name_prefix="medisentinel-read"
)


async def run_in_worker(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await _run(_executor, func, *args, **kwargs)


async def run_instance_read(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`run_in_worker` for a read of one resource by id (see READ_THREADS)."""
    return await _run(_read_executor, func, *args, **kwargs)


async def _run(
    executor: ThreadPoolExecutor, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    done = asyncio.get_running_loop().run_in_executor(executor, call)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        # The work goes on in its thread whatever happens here: let it end first.
        await asyncio.wait([done])
        raise
