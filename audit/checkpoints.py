"""Signed checkpoints: every partition's head (last pseq and chain hash) at one moment, signed
with the server's signing key (RS256, compact JWS).

A hash chain alone can be recomputed by anyone who can write the table; a checkpoint cannot be
forged without the key, whose private half is sealed under the master key. So a rewrite of
anything before the newest checkpoint, or a deletion of records it covers, is caught by
verify. Servers take one every `audit_checkpoint_seconds` when records were added; the CLI
takes one on demand (`medisentinel audit checkpoint`) and before archiving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.jwk import RSAKey
from sqlalchemy import Connection, Engine, func, insert, select

from app.auth.keys import KeyStore
from app.db import write_transaction
from app.fhir import storage
from audit.tables import audit_archive, audit_checkpoint, audit_event

Heads = dict[int, tuple[int, bytes]]  # partition -> (pseq, chain hash)


@dataclass(frozen=True)
class Checkpoint:
    id: int
    created: int
    heads: Heads
    valid: bool  # the signature verifies with a genuine server key
    kid: str


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
    created = storage.now_us()
    kid, token = sign(keys, {"created": created, "heads": encode_heads(heads)})
    with write_transaction(engine) as conn:
        return int(
            conn.execute(
                insert(audit_checkpoint)
                .values(created=created, kid=kid, jws=token)
                .returning(audit_checkpoint.c.id)
            ).scalar_one()
        )


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
        heads = decode_heads(payload["heads"]) if payload else {}
        found.append(Checkpoint(row.id, row.created, heads, valid, row.kid))
    return list(reversed(found))
