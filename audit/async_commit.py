"""PostgreSQL: reads' audit records committed in batches from the event loop.

A read's record must be durable before its data leaves, and a statement with its commit per
read cost PostgreSQL about 170 µs and the server about 100 µs (bench: one record per
statement vs 35 and 28 µs each in batches of eight). Batching on worker threads cost more
than it saved: every read of a batch waited on a condition, and waking each thread cost a
context switch and the GIL. Here the batching is done where the requests already wait: a
FHIR request's thread hands its read's records back with the answer (`Trail.deferred`), the
request's coroutine awaits :meth:`AsyncGroupCommit.append`, and one task per process writes
everything pending in one statement on an asynchronous connection, then resolves every
waiting request at once, in the event loop's own thread. Records arriving while a batch is
being written form the next one.

Under load the statement is quick enough that batches stay small (2.2 records on average
with 16 clients over 2 processes, and one statement costs the server about as much whatever
its size), so the writer first waits a little for the reads still being served: a request
that may bring records says so (`expect`) before its work starts, and the writer holds a
batch for at most `FILL_SECONDS` while fewer requests are pending than are being served. A
lone request is never held: nobody else is in service.

The batches are chained on one partition of the process's appender pool (appender.py), held
for as long as it works: linking happens in this one task, so records are chained in the
order they are written. Any failure fails every request of the batch (AuditUnavailable: no
data leaves), drops the connection and gives the partition back to be reloaded from the
database; the next batch starts over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from audit.appender import Head, PartitionAppender, statement
from audit.chain import AuditRecord

log = logging.getLogger(__name__)


class AsyncGroupCommit:
    FILL_SECONDS = 0.002  # the longest a batch waits for reads still being served
    MAX_BATCH = 64  # requests per batch: the writer stops waiting at this many

    def __init__(self, appender: PartitionAppender) -> None:
        self._appender = appender
        self._pending: list[tuple[list[AuditRecord], asyncio.Future[None]]] = []
        self._in_service = 0  # requests that said they may bring records, not yet committed
        self._arrival: asyncio.Future[None] | None = None  # wakes a writer waiting to fill
        self._writer: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._head: Head | None = None  # the partition this task chains onto

    def expect(self) -> None:
        """A request that may bring records has started; it ends with `append` (records) or
        `unexpect` (none), in the event loop's thread like every method here."""
        self._in_service += 1

    def unexpect(self) -> None:
        self._in_service -= 1
        self._wake()

    async def append(self, records: list[AuditRecord], *, expected: bool = False) -> None:
        """Return once `records` are committed; raise what the commit raised otherwise.
        `expected`: the request called `expect` (it stops being in service here)."""
        if not records:
            if expected:
                self.unexpect()
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, done))
        if not expected:
            self._in_service += 1  # counted as in service until its batch is written
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        self._wake()
        await done

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._reset()

    async def _write_pending(self) -> None:
        while self._pending:
            await self._fill()
            batch, self._pending = self._pending, []
            self._in_service -= len(batch)
            records = [record for records, _ in batch for record in records]
            try:
                await self._write(records)
            except Exception as exc:
                log.error("audit batch of %d records failed: %s", len(records), exc)
                await self._reset()
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _fill(self) -> None:
        """Wait (at most FILL_SECONDS) while requests in service have not brought records."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.FILL_SECONDS
        while len(self._pending) < min(self._in_service, self.MAX_BATCH):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival = arrival = loop.create_future()
            timer = loop.call_later(remaining, _resolve, arrival)
            try:
                await arrival
            finally:
                timer.cancel()
                self._arrival = None

    def _wake(self) -> None:
        if self._arrival is not None:
            _resolve(self._arrival)

    async def _write(self, records: list[AuditRecord]) -> None:
        if self._head is None:
            # Taking a partition may talk to the database on the appender's holder connection.
            self._head = await asyncio.to_thread(self._appender.checkout)
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._appender.dsn, application_name="medisentinel audit batches", autocommit=True
            )
        sql, params, chain = statement(self._head, records)
        await self._conn.execute(sql, params, prepare=True)
        self._head.advance(chain)  # ours alone while it is out of the pool

    async def _reset(self) -> None:
        """After a failure (or at shutdown): a new connection and a reloaded partition."""
        if self._head is not None:
            head, self._head = self._head, None
            self._appender.checkin(head, None)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
