"""Registered client applications: public (PKCE), confidential (client secret), and
asymmetric / backend-services clients (JWKS inline or by URL)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from app.auth import client_metadata as metadata
from app.auth import secrets
from app.auth.errors import OAuthError
from app.auth.scopes import parse_scopes
from app.auth.tables import oauth_client

KINDS = ("public", "confidential", "backend")


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    name: str
    kind: str  # public | confidential | backend
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    launch_uri: str | None
    scope: str  # the scopes this client may ever be granted
    jwks: dict[str, Any] | None  # registered JWK Set, for private_key_jwt
    jwks_uri: str | None

    @property
    def is_public(self) -> bool:
        return self.kind == "public"

    @property
    def uses_key_assertion(self) -> bool:
        """Authenticates with private_key_jwt (RFC 7523) rather than a secret."""
        return self.jwks is not None or self.jwks_uri is not None

    @property
    def allowed_scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())


@dataclass(frozen=True)
class NewClient:
    record: ClientRecord
    client_secret: str | None  # shown once, never stored


def create_client(
    conn: Connection,
    name: Any,
    kind: str,
    *,
    scope: Any,
    redirect_uris: Any = None,
    launch_uri: Any = None,
    jwks: Any = None,
    jwks_uri: Any = None,
) -> NewClient:
    """Register a client; the metadata is checked here (client_metadata.py) for every way in:
    the values may come straight from a JSON body."""
    if kind not in KINDS:
        raise OAuthError("invalid_client_metadata", f"kind must be one of {', '.join(KINDS)}")
    name = metadata.check_name(name)
    if not isinstance(scope, str):
        raise OAuthError("invalid_client_metadata", "scope must be a string")
    parse_scopes(scope)  # refuses malformed scopes at registration, not at first use
    redirect_uris = metadata.check_redirect_uris(redirect_uris)
    launch_uri = metadata.check_web_uri("launch_uri", launch_uri)
    jwks = metadata.check_jwks(jwks)
    jwks_uri = metadata.check_web_uri("jwks_uri", jwks_uri)
    if kind in ("public", "confidential") and not redirect_uris:
        raise OAuthError("invalid_redirect_uri", f"a {kind} client needs a redirect URI")
    if kind == "backend" and not (jwks or jwks_uri):
        raise OAuthError("invalid_client_metadata", "a backend client needs --jwks or --jwks-uri")
    if conn.execute(select(oauth_client.c.client_id).where(oauth_client.c.name == name)).first():
        raise OAuthError("invalid_client_metadata", f"a client named {name!r} already exists")
    secret = None
    if kind == "confidential" and not (jwks or jwks_uri):
        secret = secrets.new_secret()
    record = ClientRecord(
        client_id=uuid.uuid4().hex,
        name=name,
        kind=kind,
        secret_hash=secrets.hash_password(secret) if secret else None,
        redirect_uris=tuple(redirect_uris),
        launch_uri=launch_uri,
        scope=" ".join(scope.split()),
        jwks=jwks,
        jwks_uri=jwks_uri,
    )
    conn.execute(
        insert(oauth_client).values(
            client_id=record.client_id,
            name=name,
            kind=kind,
            secret_hash=record.secret_hash,
            redirect_uris=json.dumps(list(record.redirect_uris)),
            launch_uri=launch_uri,
            scope=record.scope,
            jwks=json.dumps(jwks) if jwks is not None else None,
            jwks_uri=jwks_uri,
            created_at=secrets.now(),
        )
    )
    return NewClient(record, secret)


def get_client(conn: Connection, client_id: str) -> ClientRecord | None:
    row = conn.execute(select(oauth_client).where(oauth_client.c.client_id == client_id)).first()
    return _record(row) if row else None


def get_client_by_name(conn: Connection, name: str) -> ClientRecord | None:
    row = conn.execute(select(oauth_client).where(oauth_client.c.name == name)).first()
    return _record(row) if row else None


def list_clients(conn: Connection) -> list[ClientRecord]:
    return [_record(r) for r in conn.execute(select(oauth_client).order_by(oauth_client.c.name))]


def _record(row: Any) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        kind=row.kind,
        secret_hash=row.secret_hash,
        redirect_uris=tuple(json.loads(row.redirect_uris or "[]")),
        launch_uri=row.launch_uri,
        scope=row.scope,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_uri=row.jwks_uri,
    )


def describe(record: ClientRecord) -> dict[str, Any]:
    """The public view of a registration (never the secret)."""
    out: dict[str, Any] = {
        "client_id": record.client_id,
        "client_name": record.name,
        "kind": record.kind,
        "scope": record.scope,
        "redirect_uris": list(record.redirect_uris),
    }
    if record.launch_uri:
        out["launch_uri"] = record.launch_uri
    if record.jwks_uri:
        out["jwks_uri"] = record.jwks_uri
    if record.jwks is not None:
        out["jwks"] = record.jwks
    return out
