"""PostgreSQL: this process's audit partitions, chained in Python.

A record's place in the chain is its partition and pseq; the previous record's chain hash
must be known to link it. On a partition that only this process appends to, both are known
here, so the hashes are computed in Python and a record costs one row in one statement. (A
shared head taken in SQL, `audit_take_head`, and linking in SQL cost a write about 220 µs of
PostgreSQL time for its record, pg_stat_statements: as much as its resource, history and
index rows together.)

* A unit of work's records (a read's or a write's) must commit with it. The unit takes a
  partition of its own from the process's pool, links its records after that partition's
  head, and sends the statement with its COMMIT (a read, in autocommit, sends just the
  statement: one round trip after its SELECT); the partition goes back to the pool when the
  unit has ended, with the new head if it committed. See :meth:`PartitionAppender.append_in`.
  Concurrent units never wait for each other: the pool grows when every partition is out.
  (Reads through the FHIR endpoint hand their records to the event loop's group commit
  instead, which holds one partition of the pool for its batches: async_commit.py.)
* Events outside the door (sign-ins, refused requests) have no unit: they are handed to the
  group commit (group.py), which appends a batch at a time onto the read partition, with one
  statement in autocommit. See :meth:`PartitionAppender.append`. (Reads went this way until
  session 8: waking the batch's waiting threads cost each read more server CPU than its own
  statement does, and its BEGIN and COMMIT round trips as much again.)

Holding partitions is a session advisory lock per partition, taken on a connection the
appender keeps (the "holder"). Correctness does not rest on it: (partition_id, pseq) is
unique, so if two appenders ever believed they held the same partition, the second to
append a pseq would fail; after any failure (a refused insert, a lost connection, a COMMIT
whose outcome is unknown) the partition's head is reloaded from the database before it is
used again, and if the holder connection itself was lost, every partition it held is let go
and taken again (or another one) with its head reloaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import psycopg

from app.db import libpq_dsn
from app.fhir import storage
from app.fhir.storage import UnitOfWork
from audit.chain import GENESIS, AuditRecord, Linked, linked
from audit.pg_arrays import ByteaArray, Int8Array, TextArray

LOCK_CLASS = 0x4D534150  # "MSAP": advisory lock (class, partition id) of an appender

# One statement: the records and the head move together or not at all. For a read unit and
# a group-commit batch it runs in autocommit, one round trip without pipeline mode or an
# explicit COMMIT (each cost as much Python as the statement itself); for a write it goes
# with the unit's COMMIT. The rows come as arrays, so the statement has one shape whatever
# the batch size, and is prepared once per connection. Parameters go in binary (%b): as
# text, every record's bytes were hex-encoded to twice their size first.
_APPEND = """
WITH added AS (
    INSERT INTO audit_event
        (id, partition_id, pseq, recorded, content, content_hash, prev_hash, chain_hash)
    SELECT r.id, %(partition)b, r.pseq, r.recorded, r.content, r.content_hash, r.prev_hash,
           r.chain_hash
    FROM unnest(%(ids)b::text[], %(pseqs)b::bigint[], %(recorded)b::bigint[],
                %(contents)b::bytea[], %(digests)b::bytea[], %(prevs)b::bytea[],
                %(chained)b::bytea[])
        AS r(id, pseq, recorded, content, content_hash, prev_hash, chain_hash)
)
UPDATE audit_partition SET last_pseq = %(last)b WHERE partition_id = %(partition)b
"""
# The same for one record (a read's, a single write's: most units), without arrays: psycopg
# dumped arrays in Python, element by element, which cost more than the rest of the
# statement (the batch statement's arrays are now packed in one pass: pg_arrays.py).
_APPEND_ONE = """
WITH added AS (
    INSERT INTO audit_event
        (id, partition_id, pseq, recorded, content, content_hash, prev_hash, chain_hash)
    VALUES (%(id)b::text, %(partition)b::integer, %(last)b::bigint, %(recorded)b::bigint,
            %(content)b::bytea, %(digest)b::bytea, %(prev)b::bytea, %(chained)b::bytea)
)
UPDATE audit_partition SET last_pseq = %(last)b WHERE partition_id = %(partition)b
"""
_DEDICATED = "SELECT partition_id FROM audit_partition WHERE dedicated ORDER BY partition_id"
_NEW_DEDICATED = (
    "INSERT INTO audit_partition (partition_id, last_pseq, created, dedicated) "
    "SELECT coalesce(max(partition_id), 0) + 1, 0, %s, true FROM audit_partition "
    "ON CONFLICT DO NOTHING RETURNING partition_id"
)
_LAST_RECORD = (
    "SELECT pseq, chain_hash FROM audit_event WHERE partition_id = %s ORDER BY pseq DESC LIMIT 1"
)


@dataclass
class Head:
    """A partition this process holds, and its last record."""

    partition_id: int
    pseq: int
    prev: bytes
    generation: int  # the holder connection it was locked on (see PartitionAppender)
    stale: bool = False  # its last commit's outcome is unknown: reload before use

    def advance(self, chain: list[Linked]) -> None:
        """`chain` (from :func:`statement`) was committed on this partition."""
        self.pseq, self.prev = chain[-1].pseq, chain[-1].chain_hash


class PartitionAppender:
    def __init__(self, database_url: str) -> None:
        self.dsn = libpq_dsn(database_url)
        self._lock = threading.Lock()  # the holder connection and the pool
        self._conn: psycopg.Connection[Any] | None = None
        self._generation = 0  # bumped whenever the holder connection is dropped
        self._reads: Head | None = None
        self._free: list[Head] = []  # write partitions not in use
        self._out: dict[int, Head] = {}  # write partitions in a transaction now

    @property
    def partition_id(self) -> int:
        """The read partition (0 before the first append)."""
        return self._reads.partition_id if self._reads is not None else 0

    def append(self, records: list[AuditRecord]) -> None:
        """Chain `records` onto the read partition and commit them; raise otherwise."""
        if not records:
            return
        with self._lock:
            try:
                conn = self._connection()
                if self._reads is None:
                    self._reads = self._take_partition(conn)
                sql, params, chain = statement(self._reads, records)
                conn.execute(sql, params, prepare=True)
            except Exception:
                self._drop()  # start over from what the database holds
                raise
            self._reads.advance(chain)

    def append_in(self, uow: UnitOfWork, records: list[AuditRecord]) -> None:
        """Chain `records` in `uow`'s transaction: sent with its COMMIT (storage.py), on a
        write partition the unit holds until the transaction has ended."""
        if not records:
            return
        head = self.checkout()
        try:
            sql, params, chain = statement(head, records)
        except BaseException:
            self.checkin(head, None)
            raise
        uow.with_commit.append((sql, params))
        uow.after_end.append(lambda committed: self.checkin(head, chain if committed else None))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def checkout(self) -> Head:
        """A partition of the pool for the caller alone, until :meth:`checkin`."""
        with self._lock:
            try:
                conn = self._connection()
                head = self._free.pop() if self._free else self._take_partition(conn)
                if head.stale:
                    head.pseq, head.prev = _head(conn, head.partition_id)
                    head.stale = False
            except Exception:
                self._drop()
                raise
            self._out[head.partition_id] = head
            return head

    def checkin(self, head: Head, chain: list[Linked] | None) -> None:
        """Back to the pool: with its new head after a commit; to be reloaded otherwise."""
        with self._lock:
            del self._out[head.partition_id]
            if head.generation != self._generation:
                return  # its lock went with the holder connection it was taken on
            if chain is None:
                head.stale = True
            else:
                head.advance(chain)
            self._free.append(head)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = psycopg.connect(
            self.dsn, application_name="medisentinel audit appender", autocommit=True
        )
        return self._conn

    def _take_partition(self, conn: psycopg.Connection[Any]) -> Head:
        """Lock a dedicated partition (not one this process holds already) and load its head."""
        mine = set(self._out) | {h.partition_id for h in self._free}
        if self._reads is not None:
            mine.add(self._reads.partition_id)
        with conn.transaction():
            partition_id = _hold_partition(conn, mine)
            pseq, prev = _head(conn, partition_id)
        return Head(partition_id, pseq, prev, self._generation)

    def _drop(self) -> None:
        """Let go of the holder connection and, with it, every partition it locked."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._generation += 1
        self._reads = None
        self._free.clear()  # partitions still out are let go when they come back


def statement(head: Head, records: list[AuditRecord]) -> tuple[str, dict[str, Any], list[Linked]]:
    """`records` chained after `head`, and the statement (SQL, parameters) that adds them."""
    chain = linked(records, head.partition_id, head.pseq, head.prev)
    if len(chain) == 1:
        (only,) = chain
        return (
            _APPEND_ONE,
            {
                "partition": head.partition_id,
                "id": only.record.id,
                "last": only.pseq,
                "recorded": only.record.recorded,
                "content": only.record.content,
                "digest": only.content_hash,
                "prev": only.prev_hash,
                "chained": only.chain_hash,
            },
            chain,
        )
    params = {
        "partition": head.partition_id,
        "ids": TextArray.of(link.record.id for link in chain),
        "pseqs": Int8Array.of(link.pseq for link in chain),
        "recorded": Int8Array.of(link.record.recorded for link in chain),
        "contents": ByteaArray.of(link.record.content for link in chain),
        "digests": ByteaArray.of(link.content_hash for link in chain),
        "prevs": ByteaArray.of(link.prev_hash for link in chain),
        "chained": ByteaArray.of(link.chain_hash for link in chain),
        "last": chain[-1].pseq,
    }
    return _APPEND, params, chain


def _hold_partition(conn: psycopg.Connection[Any], mine: set[int]) -> int:
    """A dedicated partition no other appender holds, made if there is none. (`mine`: those
    this session holds already, which its advisory locks would hand out again.)"""
    for (partition_id,) in conn.execute(_DEDICATED).fetchall():
        if partition_id not in mine and _try_lock(conn, partition_id):
            return int(partition_id)
    while True:  # two processes may propose the same number; ON CONFLICT makes one retry
        made = conn.execute(_NEW_DEDICATED, (storage.now_us(),)).fetchone()
        if made is not None:
            # Invisible to others until we commit, so nobody else can be locking it.
            if not _try_lock(conn, made[0]):
                raise RuntimeError(f"new audit partition {made[0]} is locked by another session")
            return int(made[0])


def _try_lock(conn: psycopg.Connection[Any], partition_id: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, partition_id))
    return bool(row.fetchone()[0])  # type: ignore[index]


def _head(conn: psycopg.Connection[Any], partition_id: int) -> tuple[int, bytes]:
    """The partition's last record (pseq, chain hash), checked against its head row."""
    last = conn.execute(_LAST_RECORD, (partition_id,)).fetchone()
    pseq, chained = (int(last[0]), bytes(last[1])) if last else (0, GENESIS)
    head = conn.execute(
        "SELECT last_pseq FROM audit_partition WHERE partition_id = %s", (partition_id,)
    ).fetchone()
    if head is None or int(head[0]) != pseq:
        raise RuntimeError(
            f"audit partition {partition_id}: head row says {head and head[0]}, "
            f"last record is {pseq}; run `medisentinel audit verify`"
        )
    return pseq, chained
