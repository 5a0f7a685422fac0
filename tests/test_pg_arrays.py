"""audit/pg_arrays.py: arrays packed for PostgreSQL's binary format read back as what went in
(empty strings and bytes, NULs, non-ASCII text, negative and 64-bit integers, no elements)."""

from __future__ import annotations

import psycopg
import pytest

from app.db import libpq_dsn
from audit.pg_arrays import ByteaArray, Int8Array, TextArray


def test_packed_arrays_round_trip(database_url: str, is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("PostgreSQL's binary array format")
    texts = ["", "a", "é — ✓", "x" * 5000]
    blobs = [b"", b"\x00\x01", bytes(range(256)) * 10]
    numbers = [0, -1, 2**63 - 1, -(2**63), 1_795_318_309_554_661]
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        row = conn.execute(
            "SELECT %b::text[], %b::bytea[], %b::bigint[], %b::text[],"
            " cardinality(%b::bigint[])",
            (TextArray.of(texts), ByteaArray.of(blobs), Int8Array.of(numbers),
             TextArray.of([]), Int8Array.of([7, 8, 9])),
        ).fetchone()  # fmt: skip
    assert row is not None
    assert row[0] == texts
    assert row[1] == blobs
    assert row[2] == numbers
    assert row[3] == []
    assert row[4] == 3
