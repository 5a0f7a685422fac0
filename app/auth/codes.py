"""Authorization codes: single use, short-lived, stored as digests. Presenting a spent code
again revokes every token it produced (RFC 6749 section 4.1.2)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, insert, select, update

from app.auth import secrets
from app.auth.errors import invalid_grant
from app.auth.tables import authorization_code
from app.auth.tokens import TokenService


def create_code(conn: Connection, client_id: str, claims: dict[str, Any], lifetime: int) -> str:
    code = secrets.new_secret()
    conn.execute(
        insert(authorization_code).values(
            code_hash=secrets.digest(code),
            client_id=client_id,
            claims=json.dumps(claims),
            expires_at=secrets.now() + lifetime,
        )
    )
    return code


def consume_code(
    conn: Connection, tokens: TokenService, code: str, client_id: str
) -> tuple[str, dict[str, Any]]:
    """The code's family id and claims; it can never be used again."""
    key = secrets.digest(code)
    # Locked while this transaction decides: on PostgreSQL concurrent redemptions run side
    # by side at READ COMMITTED, and without the lock each saw the code unused and issued
    # tokens. Now the others wait for the first to commit, find the code used, and revoke
    # what it issued (a reuse), one after another.
    row = conn.execute(
        select(authorization_code).where(authorization_code.c.code_hash == key).with_for_update()
    ).first()
    if row is None:
        raise invalid_grant("unknown authorization code")
    if row.used_at is not None:
        tokens.revoke_family(conn, key)
        raise invalid_grant("the authorization code was already used; its tokens are revoked")
    conn.execute(
        update(authorization_code)
        .where(authorization_code.c.code_hash == key)
        .values(used_at=secrets.now())
    )
    if row.client_id != client_id:
        raise invalid_grant("the authorization code was issued to another client")
    if row.expires_at < secrets.now():
        raise invalid_grant("the authorization code has expired")
    return key, json.loads(row.claims)
