"""Signed checkpoints: every partition's head (last pseq and chain hash) at one moment, signed
with the server's signing key (RS256, compact JWS).

Checkpoints chain to each other: each payload carries its number `n` (1, 2, 3 ...) and `prev`,
the SHA-256 of the previous checkpoint's JWS. Rows of `audit_checkpoint` can be deleted by
anyone who can write the database but not re-signed, so verify finds a gap in the numbers, a
broken link, or (all of them deleted, or the newest ones) chain records older than the
checkpoint interval that no checkpoint covers. Checkpoints signed before numbering (no `n`)
still anchor heads but take no part in the sequence.

A hash chain alone can be recomputed by anyone who can write the table; a checkpoint cannot be
forged without the key, whose private half is sealed under the master key. So a rewrite of
anything before the newest checkpoint, or a deletion of records it covers, is caught by
verify. Servers take one every `audit_checkpoint_seconds` when records were added; the CLI
takes one on demand (`medisentinel audit checkpoint`) and before archiving.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.jwk import RSAKey
from sqlalchemy import Connection, Engine, func, insert, select, text

from app.auth.keys import KeyStore
from app.db import write_transaction
from app.fhir import storage
from audit.tables import audit_archive, audit_checkpoint, audit_event

Heads = dict[int, tuple[int, bytes]]  # partition -> (pseq, chain hash)
_LOCK_KEY = 0x4D53_4155_4443  # "MSAUDC": PostgreSQL advisory lock numbering the checkpoints


@dataclass(frozen=True)
class Checkpoint:
    id: int
    created: int
    heads: Heads
    valid: bool  # the signature verifies with a genuine server key
    kid: str
    n: int | None = None  # its number in the sequence (None: signed before numbering)
    prev: str = ""  # SHA-256 (hex) of the previous checkpoint's JWS
    digest: str = ""  # SHA-256 (hex) of its own JWS: what the next one's `prev` must be


def jws_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def current_heads(conn: Connection) -> Heads:
    last = (
        select(audit_event.c.partition_id, func.max(audit_event.c.pseq).label("pseq"))
        .group_by(audit_event.c.partition_id)
        .subquery()
    )
    rows = conn.execute(
        select(audit_event.c.partition_id, audit_event.c.pseq, audit_event.c.chain_hash).join(
            last,
            (audit_event.c.partition_id == last.c.partition_id)
            & (audit_event.c.pseq == last.c.pseq),
        )
    )
    return {r.partition_id: (r.pseq, bytes(r.chain_hash)) for r in rows}


def sign(keys: KeyStore, payload: dict[str, Any]) -> tuple[str, str]:
    key = keys.signing_key()
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    token = jws.serialize_compact({"alg": "RS256", "kid": key.kid}, body, key.private)
    return key.kid, token


def open_signed(keys: KeyStore, kid: str, token: str) -> dict[str, Any] | None:
    """The signed payload, or None if the signature does not verify with a genuine key."""
    key: RSAKey | None = keys.genuine_key(kid)
    if key is None:
        return None
    try:
        verified = jws.deserialize_compact(token, key, algorithms=["RS256"])
    except Exception:
        return None
    payload: dict[str, Any] = json.loads(verified.payload)
    return payload


def encode_heads(heads: Heads) -> dict[str, list[Any]]:
    return {str(pid): [pseq, digest.hex()] for pid, (pseq, digest) in sorted(heads.items())}


def decode_heads(raw: dict[str, list[Any]]) -> Heads:
    return {int(pid): (int(v[0]), bytes.fromhex(v[1])) for pid, v in raw.items()}


def take(engine: Engine, keys: KeyStore, *, only_if_changed: bool = True) -> int | None:
    """Sign the current heads; None when nothing changed since the last checkpoint."""
    with engine.connect() as conn:
        heads = current_heads(conn)
        if only_if_changed:
            last = load_all(conn, keys, limit_latest=1)
            if last and last[-1].heads == heads:
                return None
    keys.signing_key()  # first use may create it in a transaction of its own: not inside ours
    with write_transaction(engine) as conn:
        # Numbered in one writer at a time (SQLite: the write lock taken at BEGIN), so two
        # server processes never both sign number n + 1.
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        number, prev = _next_number(conn)
        created = storage.now_us()
        payload = {"created": created, "heads": encode_heads(heads), "n": number, "prev": prev}
        kid, token = sign(keys, payload)
        return int(
            conn.execute(
                insert(audit_checkpoint)
                .values(created=created, kid=kid, jws=token)
                .returning(audit_checkpoint.c.id)
            ).scalar_one()
        )


def _next_number(conn: Connection) -> tuple[int, str]:
    """The next checkpoint's number and `prev` link. The newest row's payload is read without
    checking its signature: if it was planted, the new checkpoint links to a forgery and
    verify reports the break (the forgery is found invalid, the sequence does not follow)."""
    row = conn.execute(
        select(audit_checkpoint.c.jws).order_by(audit_checkpoint.c.id.desc()).limit(1)
    ).first()
    if row is None:
        return 1, ""
    try:
        number = int(_payload(row.jws)["n"])
    except Exception:
        number = 0  # signed before numbering (or unreadable): the sequence starts again at 1
    return number + 1, jws_digest(row.jws)


def _payload(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(jws.extract_compact(token.encode()).payload)
    return payload


def latest_archive(conn: Connection, keys: KeyStore) -> tuple[int, Heads | None] | None:
    """The newest archive marker: (its id, the heads it anchors, or None if its signature
    does not verify); None when nothing was ever archived."""
    row = conn.execute(select(audit_archive).order_by(audit_archive.c.id.desc())).first()
    if row is None:
        return None
    payload = open_signed(keys, row.kid, row.jws)
    return row.id, decode_heads(payload["heads"]) if payload else None


def load_all(
    conn: Connection, keys: KeyStore, *, limit_latest: int | None = None
) -> list[Checkpoint]:
    """Checkpoints oldest first, each with its signature checked."""
    query = select(audit_checkpoint).order_by(audit_checkpoint.c.id.desc())
    if limit_latest:
        query = query.limit(limit_latest)
    found = []
    for row in conn.execute(query):
        payload = open_signed(keys, row.kid, row.jws)
        valid = payload is not None and payload.get("created") == row.created
        signed = payload or {}
        heads = decode_heads(signed["heads"]) if payload else {}
        number = signed.get("n")
        found.append(
            Checkpoint(row.id, row.created, heads, valid, row.kid,
                       int(number) if number is not None else None,
                       str(signed.get("prev", "")), jws_digest(row.jws))
        )  # fmt: skip
    return list(reversed(found))
