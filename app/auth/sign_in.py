"""The browser side of the SMART authorization flow: /auth/authorize starts it, then the
login, patient picker and consent pages, each a form posted back to itself; errors are an
error page or a redirect back to the app (RFC 6749 section 4.1.2.1)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.auth import authorize as flow
from app.auth import clients, lockout, users
from app.auth.errors import OAuthError
from app.auth.grant import Grant
from app.auth.http import (
    auth_server,
    form_pairs,
    in_transaction,
    read_form,
    record_auth_event,
    repeated_names,
    settings_of,
)
from app.auth.scopes import parse_scopes
from app.context import RequestContext
from app.fhir.search import SearchParams


def _pages(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except flow.PageError as exc:
            return flow.error_page(exc)
        except flow.RedirectError as exc:
            return flow.error_redirect(exc)
        except OAuthError as exc:
            return flow.error_page(flow.PageError(exc.error, exc.description, exc.status))

    return wrapped


async def _params(request: Request) -> dict[str, str]:
    if request.method == "POST":
        return await read_form(request, repeatable=("group",))
    return dict(request.query_params)


@_pages
async def authorize(request: Request) -> Response:
    if request.method == "POST":
        pairs = await form_pairs(request)
    else:
        pairs = list(request.query_params.multi_items())
    params, repeated = dict(pairs), repeated_names(pairs)
    settings = settings_of(request)
    browser = request.cookies.get(flow.COOKIE) or flow.secrets.new_secret()

    def work(conn: Connection) -> str:
        context = flow.validate_request(conn, params, settings, repeated)
        return flow.start(conn, params, browser, settings, context)

    try:
        request_id = await in_transaction(request, work)
    except (flow.PageError, flow.RedirectError) as exc:
        # A refused authorization request is on the trail like a refused token request, under
        # the client it named (unverified): a redirect URI or launch that is not the app's,
        # PKCE left out, another server as aud are what an attack looks like.
        claimed = (params.get("client_id") or "")[:255] or None
        await record_auth_event(
            request, "authorize", False, claimed, detail=f"{exc.error}: {exc.description}"
        )
        raise

    response = RedirectResponse(f"/auth/login?request={request_id}", status_code=303)
    response.set_cookie(flow.COOKIE, browser, httponly=True, samesite="lax", path="/auth")
    return response


@_pages
async def login(request: Request) -> Response:
    params = await _params(request)
    request_id = params.get("request", "")

    seen: dict[str, Any] = {}

    def work(conn: Connection) -> Response:
        pending = flow.load_pending(conn, request, request_id)
        seen["client_id"] = pending.params["client_id"]
        client = clients.get_client(conn, pending.params["client_id"])
        page: dict[str, Any] = {"client_name": client.name if client else "",
                                "request_id": request_id, "action": "/auth/login"}  # fmt: skip
        if request.method == "GET":
            return flow.render("login.html", **page)
        username, now_us = params.get("username", ""), time.time_ns() // 1000
        wait = lockout.seconds_locked(conn, username, now_us)
        if wait:
            minutes = -(-wait // 60)
            refused = flow.render(
                "login.html", status=429, error="Too many failed sign-ins for this username: "
                f"try again in {minutes} minute{'s' if minutes > 1 else ''}.", **page,
            )  # fmt: skip
            refused.headers["Retry-After"] = str(wait)
            return refused
        user = users.authenticate(conn, username, params.get("password", ""))
        if user is None:
            lockout.note_failure(conn, username, now_us)
            return flow.render(
                "login.html", status=401, error="Wrong username or password.", **page
            )
        lockout.clear(conn, username)
        flow.set_user(conn, pending, user.username)
        return _next_step(conn, pending)

    try:
        response: Response = await in_transaction(request, work)
    except flow.RedirectError as exc:  # signed in, but what was asked is refused
        await _login_event(request, params, seen, True, f"signed in; {exc.description}")
        raise
    if request.method == "POST":
        ok = response.status_code < 400
        detail = {401: "wrong username or password", 429: "refused: too many failed sign-ins"}
        await _login_event(request, params, seen, ok, detail.get(response.status_code, "signed in"))
    return response


async def _login_event(
    request: Request, params: dict[str, str], seen: dict[str, Any], ok: bool, detail: str
) -> None:
    await record_auth_event(
        request, "login", ok, seen.get("client_id"), username=params.get("username") or None,
        detail=detail,
    )  # fmt: skip


def _next_step(conn: Connection, pending: flow.Pending) -> Response:
    flow.check_patient_context(conn, pending)
    if flow.needs_patient_pick(conn, pending):
        return RedirectResponse(f"/auth/picker?request={pending.id}", status_code=303)
    return RedirectResponse(f"/auth/consent?request={pending.id}", status_code=303)


@_pages
async def picker(request: Request) -> Response:
    params = await _params(request)
    request_id = params.get("request", "")
    app = request.app

    def work(conn: Connection) -> Any:
        pending = flow.load_pending(conn, request, request_id)
        if pending.username is None:
            raise flow.PageError("access_denied", "sign in first")
        flow.check_can_pick(conn, pending)
        client = clients.get_client(conn, pending.params["client_id"])
        return pending, client.name if client else ""

    pending, client_name = await in_transaction(request, work)
    ctx = _user_context(request, pending)
    if request.method == "POST":
        chosen = params.get("patient", "")
        if not chosen or not _patients(app, ctx, [("_id", chosen)]):
            raise flow.PageError("invalid_request", "choose a patient from the list")

        def choose(conn: Connection) -> Response:
            flow.set_patient(conn, pending, chosen)
            return RedirectResponse(f"/auth/consent?request={pending.id}", status_code=303)

        return await in_transaction(request, choose)  # type: ignore[no-any-return]
    name = params.get("name", "")
    query = [("name", name)] if name else []
    found = _patients(app, ctx, [*query, ("_count", "50"), ("_sort", "family")])
    return flow.render(
        "picker.html", client_name=client_name, request_id=request_id, action="/auth/picker",
        name=name, patients=found,
    )  # fmt: skip


def _user_context(request: Request, pending: flow.Pending) -> RequestContext:
    """The picker searches as the signed-in user, through the one door."""
    with auth_server(request).engine.connect() as conn:
        user = users.get_user(conn, pending.username or "")
    assert user is not None
    grant = Grant(
        client_id=pending.params["client_id"],
        scopes=parse_scopes("user/Patient.rs"),
        subject=user.username,
        role=user.role,
        fhir_user=user.fhir_user,
    )
    client = request.client
    return RequestContext(
        channel="auth", client_id=grant.client_id, user=user.fhir_user, grant=grant,
        remote_addr=client.host if client else None,
        base_url=settings_of(request).fhir_base_url,
    )  # fmt: skip


def _patients(app: Any, ctx: RequestContext, query: list[tuple[str, str]]) -> list[Any]:
    service = app.state.service
    params = SearchParams.parse(query, "Patient")
    with service.unit_of_work(ctx, write=False) as uow:
        result = service.search(uow, "Patient", params)
    return [_patient_choice(v) for v in result.versions]


def _consent_patient(request: Request, request_id: str) -> dict[str, str] | None:
    """The patient the consent page names, or None (the page itself reports a bad request)."""
    try:
        with auth_server(request).engine.connect() as conn:
            pending = flow.load_pending(conn, request, request_id)
    except (flow.PageError, OAuthError):
        return None
    if pending.username is None:
        return None
    return _patient_label(request, pending)


def _patient_label(request: Request, pending: flow.Pending) -> dict[str, str] | None:
    """The chosen patient as the consent page names them (read as the signed-in user)."""
    if pending.patient is None:
        return None
    found = _patients(request.app, _user_context(request, pending), [("_id", pending.patient)])
    return found[0] if found else {"id": pending.patient, "label": pending.patient}


def _patient_choice(version: Any) -> dict[str, str]:
    body = json.loads(version.content or b"{}")
    names = body.get("name") or [{}]
    name = names[0]
    label = " ".join([*name.get("given", []), name.get("family", "")]).strip() or version.id
    if body.get("birthDate"):
        label += f" (born {body['birthDate']})"
    return {"id": version.id, "label": label}


@_pages
async def consent(request: Request) -> Response:
    params = await _params(request)
    request_id = params.get("request", "")
    settings = settings_of(request)
    groups_chosen: set[str] = set()
    if request.method == "POST":
        groups_chosen = {str(g) for g in (await request.form()).getlist("group")}
    # Named before the write transaction: reading the patient goes through the door, which
    # writes its audit record (on SQLite that needs the write lock this page would hold).
    label = await run_in_threadpool(_consent_patient, request, request_id)
    seen: dict[str, Any] = {}

    def work(conn: Connection) -> Response | flow.RedirectError:
        # A decision (POST) is single use: the pending row is locked, then deleted.
        pending = flow.load_pending(conn, request, request_id, lock=request.method == "POST")
        seen.update(client_id=pending.params.get("client_id"), username=pending.username,
                    patient=pending.patient)  # fmt: skip
        if pending.username is None:
            raise flow.PageError("access_denied", "sign in first")
        if flow.needs_patient_pick(conn, pending):
            return RedirectResponse(f"/auth/picker?request={pending.id}", status_code=303)
        scopes = flow.grantable(conn, pending)
        redirect_uri, state = pending.params["redirect_uri"], pending.params.get("state")

        def refuse(error: str, description: str) -> flow.RedirectError:
            # Returned, not raised: the transaction commits, so the sign-in is spent.
            flow.finish(conn, pending)
            return flow.RedirectError(redirect_uri, error, description, state)

        if not flow.scope_groups(scopes):
            return refuse("invalid_scope", flow.nothing_grantable(conn, pending))
        if request.method == "GET":
            client = clients.get_client(conn, pending.params["client_id"])
            return flow.render(
                "consent.html", client_name=client.name if client else "",
                request_id=request_id, action="/auth/consent",
                groups=flow.scope_groups(scopes), patient=label,
            )  # fmt: skip
        if params.get("decision") != "allow":
            return refuse("access_denied", "the user denied access")
        if not groups_chosen:  # nothing shared is a refusal, not an empty grant
            return refuse("access_denied", "nothing was shared")
        scope = flow.consented_scope(scopes, groups_chosen)
        _code, url = flow.issue_code(conn, pending, scope, settings)
        seen["scope"] = scope
        return RedirectResponse(url, status_code=303)

    try:
        response: Response | flow.RedirectError = await in_transaction(request, work)
    except flow.RedirectError as exc:
        if request.method == "POST" and seen:
            await _consent_event(request, seen, False, f"access_denied: {exc.description}")
        raise
    if isinstance(response, flow.RedirectError):
        await _consent_event(request, seen, False, f"{response.error}: {response.description}")
        raise response
    if request.method == "POST" and "scope" in seen:
        await _consent_event(request, seen, True, f"granted {seen['scope']}")
    return response


async def _consent_event(request: Request, seen: dict[str, Any], ok: bool, detail: str) -> None:
    await record_auth_event(
        request, "consent", ok, seen.get("client_id"), username=seen.get("username"),
        patient=seen.get("patient"), detail=detail,
    )  # fmt: skip
