"""PostgreSQL: one process's read records, chained in batches onto a partition of its own.

A read's record must be durable before its data leaves (fail closed), yet a read has nothing
else to commit. Chained in the read's own transaction, every read became a writing
transaction with two more statements (take a shared head, link in SQL): about 300 µs of
PostgreSQL time per read (pg_stat_statements), ten times the read itself. Instead the records
of a process's concurrent reads (and of events outside the door: sign-ins, refused requests)
go in one transaction at a time (group.py decides who writes), onto a partition this process
holds while it runs. The previous chain hash is then known here: hashes are computed in
Python and a batch is one statement (its rows and the head's new position) in autocommit:
one round trip.

Holding a partition is a session advisory lock, taken on a connection the appender keeps.
Correctness does not rest on it: (partition_id, pseq) is unique, so if two appenders ever
believed they held the same partition, the second to append a pseq would fail; and after any
failure (a refused insert, a lost connection, a COMMIT whose outcome is unknown) the appender
drops its connection and reloads the head from the database before appending again.
Writes keep chaining in their own transactions (chain.py): `audit_take_head` never hands out
a dedicated partition.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from app.db import libpq_dsn
from app.fhir import storage
from audit.chain import GENESIS, AuditRecord, linked

LOCK_CLASS = 0x4D534150  # "MSAP": advisory lock (class, partition id) of an appender

# One statement, run in autocommit: the records and the head move together or not at all,
# in one round trip without pipeline mode or an explicit COMMIT (each cost as much Python as
# the statement itself). The rows come as arrays, so the statement has one shape whatever
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
_DEDICATED = "SELECT partition_id FROM audit_partition WHERE dedicated ORDER BY partition_id"
_NEW_DEDICATED = (
    "INSERT INTO audit_partition (partition_id, last_pseq, created, dedicated) "
    "SELECT coalesce(max(partition_id), 0) + 1, 0, %s, true FROM audit_partition "
    "ON CONFLICT DO NOTHING RETURNING partition_id"
)
_LAST_RECORD = (
    "SELECT pseq, chain_hash FROM audit_event WHERE partition_id = %s ORDER BY pseq DESC LIMIT 1"
)


class PartitionAppender:
    def __init__(self, database_url: str) -> None:
        self._dsn = libpq_dsn(database_url)
        self._lock = threading.Lock()  # callers serialize already; this makes it certain
        self._conn: psycopg.Connection[Any] | None = None
        self.partition_id = 0
        self._pseq = 0
        self._prev = GENESIS

    def append(self, records: list[AuditRecord]) -> None:
        """Chain `records` onto this process's partition and commit them; raise otherwise."""
        if not records:
            return
        with self._lock:
            try:
                conn = self._connection()
                params, pseq, prev = self._link(records)
                conn.execute(_APPEND, params, prepare=True)
            except Exception:
                self._drop()  # start over from what the database holds
                raise
            self._pseq, self._prev = pseq, prev

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _link(self, records: list[AuditRecord]) -> tuple[dict[str, Any], int, bytes]:
        """The statement's parameters, and the head after it."""
        chain = linked(records, self.partition_id, self._pseq, self._prev)
        params = {
            "partition": self.partition_id,
            "ids": [link.record.id for link in chain],
            "pseqs": [link.pseq for link in chain],
            "recorded": [link.record.recorded for link in chain],
            "contents": [link.record.content for link in chain],
            "digests": [link.content_hash for link in chain],
            "prevs": [link.prev_hash for link in chain],
            "chained": [link.chain_hash for link in chain],
            "last": chain[-1].pseq,
        }
        return params, chain[-1].pseq, chain[-1].chain_hash

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self._dsn, application_name="medisentinel audit appender", autocommit=True
        )
        try:
            with conn.transaction():
                self.partition_id = _hold_partition(conn)
                self._pseq, self._prev = _head(conn, self.partition_id)
        except Exception:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # its advisory lock goes with it
        self._conn = None


def _hold_partition(conn: psycopg.Connection[Any]) -> int:
    """A dedicated partition no other appender holds, made if there is none."""
    for (partition_id,) in conn.execute(_DEDICATED).fetchall():
        if _try_lock(conn, partition_id):
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
