"""Who is calling the token, introspection and revocation endpoints (RFC 6749 section 2.3):
client_secret_basic, client_secret_post, private_key_jwt (RFC 7523), or a public client that
only names itself."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from sqlalchemy import Connection

from app.auth import clients, secrets
from app.auth.assertions import CLIENT_ASSERTION_TYPE, verify_client_assertion
from app.auth.clients import ClientRecord
from app.auth.errors import invalid_client, invalid_request


def authenticate_client(
    conn: Connection, form: dict[str, str], authorization: str | None, token_url: str
) -> ClientRecord:
    asserted = bool(form.get("client_assertion") or form.get("client_assertion_type"))
    basic = bool(authorization and authorization.lower().startswith("basic "))
    if asserted + basic + ("client_secret" in form) > 1:
        # RFC 6749 section 2.3: one method per request. Which would be the caller otherwise?
        raise invalid_request("use one client authentication method, not several")
    if asserted:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise invalid_client(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
        client = verify_client_assertion(
            form.get("client_assertion", ""),
            token_url=token_url,
            load_client=lambda client_id: clients.get_client(conn, client_id),
            conn=conn,
        )
        if form.get("client_id") and form["client_id"] != client.client_id:
            raise invalid_client("client_id differs from the assertion's subject")
        return client
    if basic and authorization:
        client_id, secret = _basic_credentials(authorization)
        if form.get("client_id") and form["client_id"] != client_id:
            raise invalid_client("client_id differs from the Basic credentials")
        return _by_secret(conn, client_id, secret)
    named = form.get("client_id")
    if not named:
        raise invalid_client("the client did not identify itself")
    if "client_secret" in form:
        return _by_secret(conn, named, form["client_secret"])
    public = clients.get_client(conn, named)
    if public is None:
        raise invalid_client("unknown client")
    if not public.is_public:
        raise invalid_client("this client must authenticate (secret or signed assertion)")
    return public


def _by_secret(conn: Connection, client_id: str, secret: str) -> ClientRecord:
    client = clients.get_client(conn, client_id)
    if client is None or client.secret_hash is None:
        secrets.verify_password(_DUMMY, secret)  # the same cost either way
        raise invalid_client("unknown client or wrong secret")
    if not secrets.verify_password(client.secret_hash, secret):
        raise invalid_client("unknown client or wrong secret")
    return client


def _basic_credentials(authorization: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(authorization.split(" ", 1)[1], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, IndexError) as exc:
        raise invalid_request("malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise invalid_request("malformed Basic credentials")
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


_DUMMY = secrets.hash_password("no such client")
