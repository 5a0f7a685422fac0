"""What the authorization server's HTTP endpoints share (router.py, sign_in.py): the app's
auth server and settings, a write transaction on a worker thread, RFC 6749 form parsing,
OAuth error answers, and the audit record of each authorization event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.bodies import BodyTooLarge, read_limited
from app.auth.errors import OAuthError, invalid_request
from app.auth.grant import Grant
from app.auth.server import AuthEvent, AuthServer
from app.settings import Settings

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"
FORM_LIMIT = 64 * 1024  # bytes of a form: a token request with a client assertion is ~2 KB


def auth_server(request: Request) -> AuthServer:
    return request.app.state.auth  # type: ignore[no-any-return]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def in_transaction(request: Request, work: Callable[[Connection], Any]) -> Any:
    """Run `work` in one write transaction on a worker thread. It commits even when `work`
    raises OAuthError: what it wrote first (a spent code, a revoked family) must stay."""

    def run() -> Any:
        with auth_server(request).engine.connect() as conn:
            conn = conn.execution_options(for_write=True)
            with conn.begin():
                try:
                    return work(conn)
                except OAuthError as exc:
                    return exc

    result = await run_in_threadpool(run)
    if isinstance(result, OAuthError):
        raise result
    return result


async def read_form(request: Request, repeatable: tuple[str, ...] = ()) -> dict[str, str]:
    """Form parameters; RFC 6749 section 3.2: a parameter may not be repeated."""
    pairs = await form_pairs(request)
    repeated = repeated_names(pairs, repeatable)
    if repeated:
        raise invalid_request(f"parameters may not be repeated: {', '.join(repeated)}")
    return dict(pairs)


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The body's parameters as sent. RFC 6749: the body is application/x-www-form-urlencoded
    (anything else was read as no parameters at all, a JSON body answered as an unidentified
    client)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise invalid_request(f"the request body must be {FORM}")
    try:  # (Starlette's form parser reads any length: a token request is a few KB)
        body = await read_limited(request, FORM_LIMIT)
    except BodyTooLarge as exc:
        raise invalid_request(f"the request body is larger than {FORM_LIMIT} bytes") from exc
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def repeated_names(pairs: list[tuple[str, str]], repeatable: tuple[str, ...] = ()) -> list[str]:
    """RFC 6749 section 3.1: request parameters MUST NOT be included more than once."""
    names = [k for k, _ in pairs]
    return sorted({k for k in names if names.count(k) > 1} - set(repeatable))


def oauth_error_response(error: OAuthError) -> Response:
    headers = dict(NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="medisentinel"'
    return JSONResponse(error.to_json(), status_code=error.status, headers=headers)


async def record_auth_event(
    request: Request,
    what: str,
    ok: bool,
    client_id: str | None,
    *,
    grant: Grant | None = None,
    username: str | None = None,
    patient: str | None = None,
    detail: str = "",
) -> None:
    """One authorization event to the audit trail (in its own transaction, before the answer
    leaves: if it cannot be recorded the answer is a 500)."""
    client = request.client
    event = AuthEvent(
        what=what,
        ok=ok,
        client_id=client_id,
        username=username or (grant.subject if grant and grant.role else None),
        fhir_user=grant.fhir_user if grant else None,
        patient=patient or (grant.patient if grant else None),
        address=client.host if client else None,
        detail=detail,
    )
    await run_in_threadpool(auth_server(request).record, event)
