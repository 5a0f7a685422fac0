"""HTTP endpoints of the authorization server: discovery, JWKS, token, introspection,
revocation, EHR launch contexts and client registration; the browser pages of authorize
(login, picker, consent) are in sign_in.py, what both share in http.py."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.bodies import read_limited
from app.auth import clients, launch
from app.auth.client_auth import authenticate_client
from app.auth.clients import ClientRecord
from app.auth.discovery import openid_configuration, smart_configuration
from app.auth.enforcement import forbidden, token_required, unauthorized
from app.auth.errors import OAuthError, invalid_client, invalid_request
from app.auth.grant import Grant
from app.auth.http import (
    NO_STORE,
    auth_server,
    in_transaction,
    oauth_error_response,
    read_form,
    record_auth_event,
    settings_of,
)
from app.auth.sign_in import authorize, consent, login, picker
from app.auth.token_endpoint import exchange
from app.errors import FhirError
from app.fhir import jsonio

STYLE = {
    "color_background": "#f4f6f8", "color_error": "#8a1c1c", "color_highlight": "#1f6feb",
    "color_modal_backdrop": "", "color_success": "#1a7f37", "color_text": "#1d2733",
    "dim_border_radius": "8px", "dim_font_size": "16px", "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif",
}  # fmt: skip

JSON_LIMIT = 1024 * 1024  # bytes of an admin request (a registration with its keys: a few KB)


def routes() -> list[Route]:
    return [
        Route("/fhir/.well-known/smart-configuration", smart_config, methods=["GET"]),
        Route("/fhir/.well-known/openid-configuration", openid_config, methods=["GET"]),
        Route("/fhir/.well-known/smart-style.json", smart_style, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid_config, methods=["GET"]),
        Route("/auth/jwks", jwks, methods=["GET"]),
        Route("/auth/authorize", authorize, methods=["GET", "POST"]),
        Route("/auth/login", login, methods=["GET", "POST"]),
        Route("/auth/picker", picker, methods=["GET", "POST"]),
        Route("/auth/consent", consent, methods=["GET", "POST"]),
        Route("/auth/token", token, methods=["POST"]),
        Route("/auth/introspect", introspect, methods=["POST"]),
        Route("/auth/revoke", revoke, methods=["POST"]),
        Route("/auth/launch", create_launch, methods=["POST"]),
        Route("/auth/clients", client_registry, methods=["GET", "POST"]),
    ]


# ---------------------------------------------------------------------- discovery


async def smart_config(request: Request) -> Response:
    return JSONResponse(smart_configuration(settings_of(request)))


async def openid_config(request: Request) -> Response:
    return JSONResponse(openid_configuration(settings_of(request)))


async def smart_style(request: Request) -> Response:
    """The styling hints `smart_style_url` points apps to (SMART "context-style")."""
    return JSONResponse(STYLE, headers={"Cache-Control": "max-age=3600"})


async def jwks(request: Request) -> Response:
    keys = await run_in_threadpool(auth_server(request).keys.jwks)
    return JSONResponse(keys, headers={"Cache-Control": "max-age=300"})


# ---------------------------------------------------------------------- token endpoints


ClientAction = Callable[[Connection, ClientRecord, dict[str, str]], Any]


async def _as_client(request: Request, action: ClientAction) -> Any:
    """Authenticate the calling client from the form, then run `action` in one transaction.
    Raises OAuthError (rendered by the caller)."""
    form = await read_form(request)
    token_url = f"{settings_of(request).server_root}/auth/token"
    authorization = request.headers.get("authorization")

    def work(conn: Connection) -> Any:
        client = authenticate_client(conn, form, authorization, token_url)
        return action(conn, client, form)

    return await in_transaction(request, work)


def _token_param(form: dict[str, str]) -> str:
    if not form.get("token"):
        raise invalid_request("token is required")
    return form["token"]


async def token(request: Request) -> Response:
    tokens = auth_server(request).tokens
    form: dict[str, str] = {}
    try:
        form = await read_form(request)
        body = await _as_client(
            request, lambda conn, client, form: exchange(conn, tokens, client, form)
        )
    except OAuthError as exc:
        await record_auth_event(
            request, "token-refused", False, _caller_id(request, form), detail=_why(exc)
        )
        return oauth_error_response(exc)
    what = "token-refreshed" if form.get("grant_type") == "refresh_token" else "token-issued"
    grant = tokens.verify(body["access_token"])
    await record_auth_event(
        request, what, True, grant.client_id, grant=grant, detail=body.get("scope", "")
    )
    return JSONResponse(body, headers=NO_STORE)


async def introspect(request: Request) -> Response:
    """RFC 7662 section 2.1: only for clients that authenticate (a secret or a signed
    assertion; a public client only names itself, which anyone can), and each learns only
    about its own tokens."""
    return await _token_management(request, "token-introspected")


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was known; only the caller's own tokens are
    revoked (public clients too: they may give up what they were issued)."""
    return await _token_management(request, "token-revoked")


async def _token_management(request: Request, what: str) -> Response:
    tokens = auth_server(request).tokens

    def action(conn: Connection, client: ClientRecord, form: dict[str, str]) -> Any:
        token = _token_param(form)
        if what == "token-revoked":
            owner = tokens.revoke(conn, token, client.client_id)
            return client.client_id, None, _revocation_detail(client.client_id, owner)
        if client.is_public:
            raise invalid_client("introspection needs client authentication")
        body = tokens.introspect(conn, token, client.client_id)
        owner = tokens.owner(conn, token)
        return client.client_id, body, _introspection_detail(client.client_id, owner, body)

    form: dict[str, str] = {}
    try:
        form = await read_form(request)
        client_id, body, detail = await _as_client(request, action)
    except OAuthError as exc:
        await record_auth_event(request, what, False, _caller_id(request, form), detail=_why(exc))
        return oauth_error_response(exc)
    await record_auth_event(request, what, True, client_id, detail=detail)
    if body is None:
        return Response(status_code=200, headers=NO_STORE)
    return JSONResponse(body, headers=NO_STORE)


def _revocation_detail(caller: str, owner: str | None) -> str:
    """What the audit record says was affected (the answer to the caller says nothing)."""
    if owner is None:
        return "unknown token: nothing revoked"
    if owner != caller:
        return f"token of client {owner}, not the caller's: nothing revoked"
    return f"token of client {owner}: revoked with its family"


def _introspection_detail(caller: str, owner: str | None, body: dict[str, Any]) -> str:
    active = f"active={str(bool(body.get('active'))).lower()}"
    if owner is None:
        return f"{active}; unknown token"
    if owner != caller:
        return f"{active}; token of client {owner}, not the caller's"
    return f"{active}; token of client {owner}, subject {body.get('sub', '?')}"


def _caller_id(request: Request, form: dict[str, str]) -> str | None:
    """Who a refused client said it was (form, assertion issuer or Basic user), unverified."""
    if form.get("client_id"):
        return form["client_id"]
    if form.get("client_assertion"):
        return _assertion_issuer(form["client_assertion"])
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            return base64.b64decode(authorization[6:]).decode().split(":", 1)[0] or None
        except ValueError:
            return None
    return None


def _assertion_issuer(assertion: str) -> str | None:
    """The `iss` a client assertion claims, read without verifying it: only ever recorded as
    who a refused caller said it was."""
    try:
        claims = jsonio.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError):  # jsonio: bounded nesting, no lone surrogates
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer[:255] if isinstance(issuer, str) and issuer else None


def _why(exc: OAuthError) -> str:
    return f"{exc.error}: {exc.description}"


# ---------------------------------------------------------------------- admin API


def _admin_grant(request: Request, conn: Connection) -> Grant:
    """A live token with a system scope that may create anything, or an admin user's."""
    grant = auth_server(request).authenticate(request.headers.get("authorization"))
    if grant is None:
        raise token_required()
    if grant.token_id and not auth_server(request).tokens.is_live(conn, grant.token_id):
        raise unauthorized("the access token was revoked or has expired")
    system = any(
        s.context == "system" and s.resource_type == "*" and "c" in s.permissions
        for s in grant.scopes.resources
    )
    if not (system or grant.role == "admin"):
        raise forbidden("this needs a system/*.c scope (or an administrator)")
    return grant


async def create_launch(request: Request) -> Response:
    """POST /auth/launch {"patient": "123", "encounter": "456", "client_id": "..."} ->
    {"launch": "..."}; client_id (optional) binds it to that app."""
    body = await _json_body(request)

    def work(conn: Connection) -> dict[str, Any]:
        grant = _admin_grant(request, conn)
        try:
            made = launch.create_launch(
                conn,
                patient=body.get("patient"),
                encounter=body.get("encounter"),
                created_by=grant.subject,
                client=body.get("client_id"),
            )
        except ValueError as exc:
            raise invalid_request(str(exc)) from exc
        return {"launch": made.launch_id, "patient": made.patient,
                "encounter": made.encounter, "client_id": made.client_id}  # fmt: skip

    try:
        return JSONResponse(await in_transaction(request, work), status_code=201)
    except OAuthError as exc:
        return oauth_error_response(exc)


async def client_registry(request: Request) -> Response:
    """GET lists registrations; POST registers one (RFC 7591-like body: client_name, kind,
    scope, redirect_uris, launch_uri, jwks, jwks_uri)."""
    body = await _json_body(request) if request.method == "POST" else {}

    def work(conn: Connection) -> Any:
        _admin_grant(request, conn)
        if request.method == "GET":
            return [clients.describe(c) for c in clients.list_clients(conn)]
        made = clients.create_client(
            conn,
            body.get("client_name"),
            str(body.get("kind", "")),
            scope=body.get("scope", ""),
            redirect_uris=body.get("redirect_uris"),
            launch_uri=body.get("launch_uri"),
            jwks=body.get("jwks"),
            jwks_uri=body.get("jwks_uri"),
        )
        out = clients.describe(made.record)
        if made.client_secret:
            out["client_secret"] = made.client_secret
        return out

    try:
        result = await in_transaction(request, work)
    except OAuthError as exc:
        return oauth_error_response(exc)
    status = 201 if request.method == "POST" else 200
    return JSONResponse(result, status_code=status, headers=NO_STORE)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        # FHIR's parser: it bounds nesting (the standard one recursed into a RecursionError
        # that dropped the connection) and refuses a lone surrogate no database could store.
        body = jsonio.loads(await read_limited(request, JSON_LIMIT) or b"{}")
    except ValueError as exc:
        raise FhirError(f"the body must be JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise FhirError("the body must be a JSON object")
    return body
