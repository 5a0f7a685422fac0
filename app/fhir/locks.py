"""Serializing transactions on names: PostgreSQL transaction-scoped advisory locks.

Two writers that each look for a resource by its criteria and create it when none is found
(a conditional create, a conditional update that creates, an HL7 message naming a new
patient) would both find nothing and both create. Each first locks the name of what it looks
for, `Type?criteria` (`criteria_key`); the second waits for the first to commit, and its
search then sees the first's resource (READ COMMITTED: each statement sees what committed
before it). REST and HL7 spell a patient's identifier match alike
(`Patient?identifier=system|value`), so a conditional create and a message naming the same
patient wait for each other too.

Locks are taken in one statement, in ascending order, so two transactions locking several
common names cannot deadlock; a name taken again later in a transaction is already held.
SQLite needs none of it: a write transaction (BEGIN IMMEDIATE) excludes every other writer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import parse_qsl

from sqlalchemy import text

from app.fhir.storage import UnitOfWork

_LOCK = text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k")
_TRY_LOCK = text(
    "SELECT bool_and(pg_try_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"
)


def lock_keys(uow: UnitOfWork, keys: Iterable[str]) -> None:
    """Hold these names until the transaction ends, waiting for whoever holds one."""
    if uow.dialect != "postgresql":
        return
    numbers = _numbers(keys)
    if numbers:
        uow.conn.execute(_LOCK, {"keys": numbers})


def try_lock_keys(uow: UnitOfWork, keys: Iterable[str]) -> bool:
    """Take these names without waiting: False if another transaction holds one (waiting
    later in a transaction could deadlock with one waiting for a name this one holds)."""
    if uow.dialect != "postgresql":
        return True
    numbers = _numbers(keys)
    return not numbers or bool(uow.conn.execute(_TRY_LOCK, {"keys": numbers}).scalar_one())


def criteria_key(rtype: str, query: str) -> str:
    """The name of a search by criteria: `Type?name=value&...`, the pairs decoded and sorted,
    so that `identifier=a%7Cb` and `identifier=a|b` are one name."""
    pairs = sorted(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    return f"{rtype}?" + "&".join(f"{name}={value}" for name, value in pairs)


def key_number(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def _numbers(keys: Iterable[str]) -> list[int]:
    return sorted({key_number(k) for k in keys if k})
