"""The searchable AuditEvent store, built from the chain after the fact.

A request writes only its chain record (chain.py): one row. Copying each record into the FHIR
store as well (resource, history and about twenty index rows, some fifty b-tree inserts)
cost an audited read three quarters of its throughput on PostgreSQL, so the copy is made
here instead, in batches:

* every server process runs a round every ``audit_index_seconds`` (1 s): everything when
  the process is idle, only records older than ``audit_index_max_lag_seconds`` while it
  serves requests (:class:`BackgroundCopier`);
* a search or read of AuditEvent catches up first (the audit hook calls :func:`catch_up`),
  so a compliance officer always sees every record committed before the search began.

What is copied is tracked per partition in ``audit_indexed`` (up to which pseq). Records of
one partition commit in pseq order (a writer holds the partition head until it commits), so
nothing can appear behind the cursor later. Copiers are serialized (a PostgreSQL advisory
lock; SQLite has one writer anyway), so a record is copied once; the copy and the cursor move
commit together. The chain stays the evidence: `audit verify` never reads the copy.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update

from app.context import RequestContext
from app.errors import printable
from app.fhir import jsonio, storage
from app.fhir.search.indexer import index_rows
from app.fhir.storage import StoredVersion, UnitOfWork
from audit.tables import audit_event, audit_indexed, audit_partition

log = logging.getLogger(__name__)

BATCH = 500  # records copied per statement round; a background round commits after each
_LOCK_KEY = 0x4D53_4155_4458  # "MSAUDX": the PostgreSQL advisory lock of the copier


def catch_up(
    uow: UnitOfWork, *, wait: bool = True, limit: int | None = None, before: int | None = None
) -> int:
    """Copy records not yet searchable, inside `uow`'s transaction; how many were copied.

    `wait=False` gives up at once when another copier is at work (background rounds);
    `limit` stops after about that many (so a background transaction stays short);
    `before` (epoch µs) leaves records recorded from then on for a later round."""
    if not _serialize(uow, wait):
        return 0
    copied = 0
    for partition_id, done in _cursors(uow).items():
        while limit is None or copied < limit:
            rows = _next_batch(uow, partition_id, done, before)
            full = len(rows) == BATCH
            if not rows:
                break
            for row in rows:
                _stage_copy(uow, row.id, row.recorded, bytes(row.content))
            done = rows[-1].pseq
            copied += len(rows)
            _move_cursor(uow, partition_id, done)
            if not full:
                break
        uow.flush_bulk()
    return copied


def catch_up_all(
    engine: Engine, *, before: int | None = None, stop: Callable[[], bool] = lambda: False
) -> int:
    """A background round: copy the backlog (recorded before `before`, if given),
    committing every few batches, until done or `stop()` says so."""
    total = 0
    while not stop():
        with storage.open_unit_of_work(engine, RequestContext.system(), write=True) as uow:
            copied = catch_up(uow, wait=False, limit=4 * BATCH, before=before)
        total += copied
        if copied < 4 * BATCH:
            break
    return total


class BackgroundCopier:
    """Each server process's background rounds, yielding to requests.

    Copying a record costs about as much as the read it records (its resource, history and
    index rows), so a round that copies while requests are being served takes that capacity
    from them. A round therefore copies everything only when this process has started no
    unit of work for `IDLE_SECONDS`; while it is busy, only what has waited `max_lag`
    seconds. Under sustained load the copy thus runs `max_lag` behind and pays the same
    cost, later; a search of AuditEvent still catches up on everything first (AuditCatchUpHook).
    """

    IDLE_SECONDS = 0.5

    def __init__(self, engine: Engine, last_busy: Callable[[], float], max_lag: float) -> None:
        self.engine = engine
        self.last_busy = last_busy  # monotonic time this process last started a unit of work
        self.max_lag_us = int(max_lag * 1_000_000)
        # Set at shutdown: a round runs on a thread that cancelling its task cannot stop, and
        # the process would wait for it to copy the whole backlog before exiting.
        self.stopping = threading.Event()

    def round(self) -> int:
        stop = self.stopping.is_set
        if self.max_lag_us <= 0 or time.monotonic() - self.last_busy() >= self.IDLE_SECONDS:
            return catch_up_all(self.engine, stop=stop)
        return catch_up_all(self.engine, before=storage.now_us() - self.max_lag_us, stop=stop)


def catch_up_now(engine: Engine) -> int:
    """Catch up in a transaction of its own, waiting for a copier already at work."""
    with storage.open_unit_of_work(engine, RequestContext.system(), write=True) as uow:
        return catch_up(uow)


def backlog(engine: Engine) -> int:
    """How many chain records are not yet searchable (the copier's lag)."""
    with engine.connect() as conn:
        heads = conn.execute(
            select(func.coalesce(func.sum(audit_partition.c.last_pseq), 0))
        ).scalar_one()
        done = conn.execute(select(func.coalesce(func.sum(audit_indexed.c.pseq), 0))).scalar_one()
    return max(0, int(heads) - int(done))


def _serialize(uow: UnitOfWork, wait: bool) -> bool:
    if uow.dialect != "postgresql":
        return True  # a SQLite write transaction is already the only writer
    if wait:
        uow.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        return True
    return bool(
        uow.conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}).scalar()
    )


def _next_batch(uow: UnitOfWork, partition_id: int, done: int, before: int | None) -> list[Any]:
    """The partition's records after pseq `done` (up to BATCH), stopping at the first one
    recorded at or after `before` if given: the cursor says "everything up to pseq", so a
    round must stop at a recent record, not skip it, even if one after it is older."""
    after_done = [audit_event.c.partition_id == partition_id, audit_event.c.pseq > done]
    if before is not None:
        # A busy process's round usually copies nothing: the next record is too recent. Asking
        # for its time alone is one index probe; the positions below read up to 500 rows
        # (0.78 ms of PostgreSQL per partition and round, every second, in each process).
        following = uow.conn.execute(
            select(audit_event.c.recorded).where(
                audit_event.c.partition_id == partition_id, audit_event.c.pseq == done + 1
            )
        ).scalar()
        if following is not None and following >= before:
            return []  # (none at done + 1: nothing new, or a gap; the query below tells)
        # Positions first, documents only for what is old enough: fetching 500 documents to
        # drop them cost 2.7 ms.
        positions = uow.conn.execute(
            select(audit_event.c.pseq, audit_event.c.recorded)
            .where(*after_done)
            .order_by(audit_event.c.pseq)
            .limit(BATCH)
        ).all()
        recent = next((i for i, r in enumerate(positions) if r.recorded >= before), None)
        if recent is not None:
            positions = positions[:recent]
        if not positions:
            return []
        after_done.append(audit_event.c.pseq <= positions[-1].pseq)
    return list(
        uow.conn.execute(
            select(audit_event.c.id, audit_event.c.pseq, audit_event.c.recorded,
                   audit_event.c.content)
            .where(*after_done)
            .order_by(audit_event.c.pseq)
            .limit(BATCH)
        ).all()
    )  # fmt: skip


def _cursors(uow: UnitOfWork) -> dict[int, int]:
    """Every partition and how far it is copied (0 for a partition never copied)."""
    partitions = uow.conn.execute(select(audit_partition.c.partition_id)).scalars().all()
    done = dict(uow.conn.execute(select(audit_indexed.c.partition_id, audit_indexed.c.pseq)).all())
    return {int(p): int(done.get(p, 0)) for p in sorted(partitions)}


def _move_cursor(uow: UnitOfWork, partition_id: int, pseq: int) -> None:
    moved = uow.conn.execute(
        update(audit_indexed).where(audit_indexed.c.partition_id == partition_id).values(pseq=pseq)
    )
    if moved.rowcount == 0:
        uow.conn.execute(insert(audit_indexed).values(partition_id=partition_id, pseq=pseq))


def _stage_copy(uow: UnitOfWork, event_id: str, recorded: int, content: bytes) -> None:
    version = StoredVersion("AuditEvent", event_id, 1, recorded, False, content)
    storage.stage_insert_current(uow, version)
    storage.stage_history(uow, version, "POST")
    # Our own bytes (json.dumps of a record we built): nothing to refuse, and an AuditEvent
    # has no decimal to keep exact, so the fast parser (a third of jsonio.loads' cost).
    event = jsonio.loads_stored(content)
    if _CONTROL_ESCAPE.search(content):  # written before records went through printable
        event = _printable_strings(event)
    rows = index_rows("AuditEvent", event_id, event)
    storage.replace_index(uow, "AuditEvent", event_id, rows, new=True)


# A JSON escape of a control character (below U+0020). Records hold none since
# app.errors.printable, but an older one with a NUL (a client_id sent as "a%00") made every
# copy round fail on PostgreSQL, whose text refuses NUL: its index rows get the visible form.
# The copy itself keeps the record's exact bytes (verify compares them with the chain).
_CONTROL_ESCAPE = re.compile(rb"\\u00[01][0-9a-fA-F]")


def _printable_strings(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_strings(v) for v in value]
    return value
