"""The console's sign-in: a SMART authorization-code + PKCE flow against this server's own
/auth/authorize, with a built-in public client, and the session it leaves.

* `console_client` registers the client on first use ("medisentinel-audit-console",
  redirect URI <server_root>/audit/callback, scope "openid fhirUser user/AuditEvent.rs").
* `begin` answers a visit without a session: a sealed, short-lived cookie keeps the state,
  the PKCE verifier and the page asked for; the browser goes to /auth/authorize.
* `exchange_code` redeems the code at /auth/token. The request goes through the app itself
  (an in-process ASGI call, no socket): the token endpoint, with everything it does (code
  reuse detection, its own audit), runs exactly as for any other client.
* The access token is kept in an HttpOnly, SameSite=Lax cookie (Secure whenever the browser
  honours it), sealed with AES-256-GCM under a key derived from the master key: the cookie
  is useless as a bearer token elsewhere, and never appears in a URL.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import update
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.auth import clients
from app.auth.errors import OAuthError
from app.auth.grant import Grant
from app.auth.keys import load_master_key
from app.auth.pkce import s256
from app.auth.server import AuthServer
from app.auth.tables import oauth_client
from app.db import write_transaction
from app.errors import Unauthorized
from app.settings import Settings

CLIENT_NAME = "medisentinel-audit-console"
SCOPE = "openid fhirUser user/AuditEvent.rs"
SESSION_COOKIE = "medisentinel_audit"
LOGIN_COOKIE = "medisentinel_audit_login"
COOKIE_PATH = "/audit"
ROLE = "compliance"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class SignInFailed(Exception):
    """The callback cannot complete the sign-in (shown as a page, never redirected)."""

    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.description, self.status = description, status


@dataclass(frozen=True)
class Session:
    token: str
    grant: Grant


# ---------------------------------------------------------------------- the built-in client


def redirect_uri(settings: Settings) -> str:
    return f"{settings.server_root}/audit/callback"


def console_client(auth: AuthServer) -> str:
    """The console's client_id, registering it (or its redirect URI for this base URL)
    the first time it is needed."""
    uri = redirect_uri(auth.settings)
    for _ in range(3):
        with write_transaction(auth.engine) as conn:
            found = clients.get_client_by_name(conn, CLIENT_NAME)
            if found is None:
                try:
                    made = clients.create_client(
                        conn, CLIENT_NAME, "public", scope=SCOPE, redirect_uris=[uri]
                    )
                except OAuthError:  # another worker registered it first: read it again
                    continue
                return made.record.client_id
            if uri not in found.redirect_uris:
                # The server moved (another MEDISENTINEL_BASE_URL): its own callback is added.
                conn.execute(
                    update(oauth_client)
                    .where(oauth_client.c.client_id == found.client_id)
                    .values(redirect_uris=json.dumps([*found.redirect_uris, uri]))
                )
            return found.client_id
    raise RuntimeError(f"could not register the {CLIENT_NAME} client")


# ---------------------------------------------------------------------- sealed cookies


class CookieSealer:
    """AES-256-GCM under a key derived (HKDF, its own label) from the master key; the cookie
    name is bound as associated data, so one cookie cannot be replayed as the other."""

    def __init__(self, settings: Settings) -> None:
        master = load_master_key(settings.master_key, settings.master_key_file)
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"medisentinel-audit-console"
        )
        self._aead = AESGCM(hkdf.derive(master))

    def seal(self, name: str, value: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, json.dumps(value).encode(), name.encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, name: str, cookie: str | None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            value = json.loads(self._aead.decrypt(raw[:12], raw[12:], name.encode()))
        except Exception:  # tampered, truncated, or sealed under another master key
            return None
        return value if isinstance(value, dict) else None


def sealer(request: Request) -> CookieSealer:
    state = request.app.state
    found = getattr(state, "audit_console_sealer", None)
    if found is None:
        found = state.audit_console_sealer = CookieSealer(request.app.state.settings)
    return found  # type: ignore[no-any-return]


def _secure(settings: Settings) -> bool:
    """Secure whenever a browser will accept it: https, or loopback (a secure context)."""
    parts = urlsplit(settings.server_root)
    return parts.scheme == "https" or (parts.hostname or "") in LOOPBACK


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=_secure(request.app.state.settings),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        secure=_secure(request.app.state.settings),
        httponly=True,
        samesite="lax",
    )


# ---------------------------------------------------------------------- the flow


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console page of ours, never another site."""
    if (
        not target
        or not target.startswith("/audit/")
        or target.startswith("/audit/callback")
        or "\\" in target
        or any(ord(ch) < 0x20 for ch in target)
    ):
        return "/audit/"
    return target


def authorize_url(settings: Settings, client_id: str, state: str, verifier: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri(settings),
        "scope": SCOPE,
        "state": state,
        "aud": settings.fhir_base_url,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    return f"/auth/authorize?{urlencode(query)}"


def begin(request: Request, client_id: str, next_page: str) -> Response:
    """Start a sign-in: remember it in its cookie and send the browser to /auth/authorize."""
    settings: Settings = request.app.state.settings
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    pending = {"state": state, "verifier": verifier, "next": safe_next(next_page),
               "client_id": client_id, "at": int(time.time())}  # fmt: skip
    response = RedirectResponse(authorize_url(settings, client_id, state, verifier), 303)
    sealed = sealer(request).seal(LOGIN_COOKIE, pending)
    _set_cookie(request, response, LOGIN_COOKIE, sealed, settings.login_seconds)
    return response


def pending_sign_in(request: Request) -> dict[str, Any]:
    """The sign-in this browser started, checked against the callback's state."""
    pending = sealer(request).open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE))
    settings: Settings = request.app.state.settings
    if pending is None or int(pending.get("at", 0)) + settings.login_seconds < time.time():
        raise SignInFailed("this sign-in has expired or was started in another browser")
    state = request.query_params.get("state", "")
    if not secrets.compare_digest(state.encode(), str(pending.get("state", "")).encode()):
        raise SignInFailed("the sign-in answer does not match the sign-in this browser started")
    return pending


async def _own_endpoint(request: Request, path: str, form: dict[str, str]) -> httpx.Response:
    """POST a form to one of this app's endpoints, in process (the caller's address kept)."""
    peer = request.client
    transport = httpx.ASGITransport(
        app=request.app, client=(peer.host, peer.port) if peer else ("127.0.0.1", 0)
    )
    root = request.app.state.settings.server_root
    async with httpx.AsyncClient(transport=transport, base_url=root, timeout=30) as http:
        return await http.post(path, data=form)


async def exchange_code(request: Request, pending: dict[str, Any], code: str) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(request.app.state.settings),
        "code_verifier": str(pending["verifier"]),
        "client_id": str(pending["client_id"]),
    }
    answer = await _own_endpoint(request, "/auth/token", form)
    body = (
        answer.json()
        if answer.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if answer.status_code != 200 or not body.get("access_token"):
        reason = body.get("error_description") or body.get("error") or f"HTTP {answer.status_code}"
        raise SignInFailed(f"the token endpoint refused the sign-in: {reason}")
    return dict(body)


async def revoke(request: Request, token: str, client_id: str) -> None:
    await _own_endpoint(request, "/auth/revoke", {"token": token, "client_id": client_id})


def may_audit(grant: Grant) -> bool:
    """A compliance officer holding a user scope that may search AuditEvent."""
    return grant.role == ROLE and any(
        s.context == "user" for s in grant.scopes.matching("AuditEvent", "s")
    )


def keep(request: Request, response: Response, token: str, expires_in: int) -> None:
    sealed = sealer(request).seal(SESSION_COOKIE, {"token": token})
    _set_cookie(request, response, SESSION_COOKIE, sealed, max(expires_in, 60))
    clear_cookie(request, response, LOGIN_COOKIE)


def current(request: Request) -> Session | None:
    """The signed-in session, None without one (or when its token no longer verifies)."""
    kept = sealer(request).open(SESSION_COOKIE, request.cookies.get(SESSION_COOKIE))
    if kept is None or not isinstance(kept.get("token"), str):
        return None
    auth: AuthServer = request.app.state.auth
    try:
        grant = auth.authenticate(f"Bearer {kept['token']}")
    except Unauthorized:
        return None
    return Session(kept["token"], grant) if grant is not None else None
