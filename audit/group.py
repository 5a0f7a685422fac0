"""Group commit: the audit records of many concurrent reads, in one transaction.

A read's audit record must be durable before its data leaves (fail closed), but on SQLite a
read has nothing else to commit: its unit is a shared (deferred) transaction that must not
write at all. Here concurrent reads hand their records to whichever of them is writing next;
it appends everything pending in one transaction, and wakes the others when it has committed
-- or failed, in which case every read of the batch is refused (AuditUnavailable, 500), as a
lone read would be. Events outside the door (sign-ins, refused requests) come here too, on
either database. (A PostgreSQL read unit chains its own record instead: trail.py.)

What writes a batch depends on the database (trail.py picks): on SQLite a unit of work on a
connection of its own (UnitOfWorkWriter: a pool of one, never one from the request pool: a
writer waiting for a pool connection held by readers that wait for the writer would be a
deadlock); on PostgreSQL this process's partition appender (appender.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Engine

from app.context import RequestContext
from app.db import create_db_engine
from app.fhir import storage
from audit import chain
from audit.chain import AuditRecord

WAIT_SECONDS = 30.0  # longer than any healthy commit; then the read is refused


@dataclass(eq=False)
class _Slot:
    records: list[AuditRecord]
    done: bool = False
    error: BaseException | None = field(default=None)


class GroupCommit:
    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer
        self._cv = threading.Condition()
        self._pending: list[_Slot] = []
        self._writing = False

    def append(self, records: list[AuditRecord]) -> None:
        """Return once `records` are committed; raise what the commit raised otherwise."""
        slot = _Slot(records)
        with self._cv:
            self._pending.append(slot)
            while not slot.done:
                if self._writing:
                    if not self._cv.wait(WAIT_SECONDS) and not slot.done:
                        raise TimeoutError("the audit group commit did not finish in time")
                    continue
                self._writing = True
                batch, self._pending = self._pending, []
                self._cv.release()  # others queue up while this batch is written
                try:
                    self._write(batch)
                finally:
                    self._cv.acquire()
                    self._writing = False
                    self._cv.notify_all()
        if slot.error is not None:
            raise slot.error

    def close(self) -> None:
        self._writer.close()

    def _write(self, batch: list[_Slot]) -> None:
        records = [record for slot in batch for record in slot.records]
        error: BaseException | None = None
        try:
            self._writer.append(records)
        except Exception as exc:  # handed to every read of the batch
            error = exc
        for slot in batch:
            slot.error, slot.done = error, True


class BatchWriter(Protocol):
    """Commits one batch of records (one caller at a time)."""

    def append(self, records: list[AuditRecord]) -> None: ...

    def close(self) -> None: ...


class UnitOfWorkWriter:
    """A batch chained like any write (chain.append), in a transaction of its own."""

    def __init__(self, engine: Engine) -> None:
        self._source = engine
        self._engine: Engine | None = None

    def append(self, records: list[AuditRecord]) -> None:
        context = RequestContext.system()
        with storage.open_unit_of_work(self._writer_engine(), context, write=True) as uow:
            chain.append(uow, records)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _writer_engine(self) -> Engine:
        if self._engine is None:
            url = self._source.url.render_as_string(hide_password=False)
            self._engine = create_db_engine(url, pool_size=1)
        return self._engine
