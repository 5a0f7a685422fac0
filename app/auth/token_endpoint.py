"""POST /auth/token: authorization_code (PKCE S256), refresh_token (rotation, reuse
detection, no widening) and client_credentials (backend services, private_key_jwt)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from app.auth import pkce
from app.auth.clients import ClientRecord
from app.auth.codes import consume_code
from app.auth.errors import OAuthError, invalid_grant, invalid_request, invalid_scope
from app.auth.scopes import narrow
from app.auth.tokens import TokenService


def exchange(
    conn: Connection, tokens: TokenService, client: ClientRecord, form: dict[str, str]
) -> dict[str, Any]:
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        return _authorization_code(conn, tokens, client, form)
    if grant_type == "refresh_token":
        token = form.get("refresh_token")
        if not token:
            raise invalid_request("refresh_token is required")
        return tokens.refresh(conn, client.client_id, token, form.get("scope"))
    if grant_type == "client_credentials":
        return _client_credentials(conn, tokens, client, form)
    if not grant_type:
        raise invalid_request("grant_type is required")
    raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")


def _authorization_code(
    conn: Connection, tokens: TokenService, client: ClientRecord, form: dict[str, str]
) -> dict[str, Any]:
    code = form.get("code")
    if not code:
        raise invalid_request("code is required")
    family, claims = consume_code(conn, tokens, code, client.client_id)
    sent = form.get("redirect_uri")
    if (sent is not None or claims.get("redirect_uri_required", True)) and (
        sent != claims["redirect_uri"]
    ):
        raise invalid_grant("redirect_uri differs from the one in the authorization request")
    if not pkce.verifier_matches(form.get("code_verifier"), claims["code_challenge"]):
        raise invalid_grant("code_verifier is missing or does not match the code_challenge")
    return tokens.issue(conn, client.client_id, claims, family=family, with_id_token=True)


def _client_credentials(
    conn: Connection, tokens: TokenService, client: ClientRecord, form: dict[str, str]
) -> dict[str, Any]:
    if not client.uses_key_assertion:
        raise OAuthError(
            "unauthorized_client", "client_credentials is for backend clients with keys"
        )
    claims = backend_claims(client, form.get("scope") or "")
    return tokens.issue(conn, client.client_id, claims, backend=True)


def backend_claims(client: ClientRecord, requested: str) -> dict[str, Any]:
    """The claims of a token whose subject is a backend client itself: `client_credentials`
    and an operator's `medisentinel token` alike. No user and no patient stand behind such a
    token, so only system/ scopes make sense in it (a patient/ scope without a patient in
    context would name no one; user/ scopes need a user), and only a backend registration may
    hold one: an app registered to act for people must not get a token that acts for no one."""
    if client.kind != "backend":
        raise OAuthError(
            "unauthorized_client", f"a {client.kind} client gets tokens only through launch"
        )
    granted, refused = narrow(requested, client.scope)
    if refused:
        raise invalid_scope(f"not registered for this client: {' '.join(refused)}")
    if not granted.resources:
        raise invalid_scope("ask for at least one system/ scope")
    if any(scope.context != "system" for scope in granted.resources):
        raise invalid_scope("backend services are granted system/ scopes only")
    return {"scope": granted.text, "sub": client.client_id, "sub_kind": "client"}
