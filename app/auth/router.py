"""HTTP endpoints of the authorization server: discovery, JWKS, authorize (login, picker,
consent), token, introspection, revocation, EHR launch contexts and client registration."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth import authorize as flow
from app.auth import clients, launch, users
from app.auth.client_auth import authenticate_client
from app.auth.clients import ClientRecord
from app.auth.discovery import openid_configuration, smart_configuration
from app.auth.errors import OAuthError, invalid_request
from app.auth.grant import Grant
from app.auth.scopes import parse_scopes
from app.auth.server import AuthEvent, AuthServer
from app.auth.token_endpoint import exchange
from app.context import RequestContext
from app.errors import FhirError
from app.fhir.search import SearchParams
from app.settings import Settings

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
STYLE = {
    "color_background": "#f4f6f8", "color_error": "#8a1c1c", "color_highlight": "#1f6feb",
    "color_modal_backdrop": "", "color_success": "#1a7f37", "color_text": "#1d2733",
    "dim_border_radius": "8px", "dim_font_size": "16px", "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif",
}  # fmt: skip


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


def _auth(request: Request) -> AuthServer:
    return request.app.state.auth  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _run(request: Request, work: Callable[[Connection], Any]) -> Any:
    """Run `work` in one write transaction on a worker thread. It commits even when `work`
    raises OAuthError: what it wrote first (a spent code, a revoked family) must stay."""

    def in_transaction() -> Any:
        with _auth(request).engine.connect() as conn:
            conn = conn.execution_options(for_write=True)
            with conn.begin():
                try:
                    return work(conn)
                except OAuthError as exc:
                    return exc

    result = await run_in_threadpool(in_transaction)
    if isinstance(result, OAuthError):
        raise result
    return result


async def _form(request: Request, repeatable: tuple[str, ...] = ()) -> dict[str, str]:
    """Form parameters; RFC 6749 section 3.2: a parameter may not be repeated."""
    form = await request.form()
    pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    names = [k for k, _ in pairs]
    repeated = sorted({k for k in names if names.count(k) > 1} - set(repeatable))
    if repeated:
        raise invalid_request(f"parameters may not be repeated: {', '.join(repeated)}")
    return dict(pairs)


def oauth_error_response(error: OAuthError) -> Response:
    headers = dict(NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="medisentinel"'
    return JSONResponse(error.to_json(), status_code=error.status, headers=headers)


# ---------------------------------------------------------------------- discovery


async def smart_config(request: Request) -> Response:
    return JSONResponse(smart_configuration(_settings(request)))


async def openid_config(request: Request) -> Response:
    return JSONResponse(openid_configuration(_settings(request)))


async def smart_style(request: Request) -> Response:
    """The styling hints `smart_style_url` points apps to (SMART "context-style")."""
    return JSONResponse(STYLE, headers={"Cache-Control": "max-age=3600"})


async def jwks(request: Request) -> Response:
    keys = await run_in_threadpool(_auth(request).keys.jwks)
    return JSONResponse(keys, headers={"Cache-Control": "max-age=300"})


# ---------------------------------------------------------------------- token endpoints


ClientAction = Callable[[Connection, ClientRecord, dict[str, str]], Any]


async def _as_client(request: Request, action: ClientAction) -> Any:
    """Authenticate the calling client from the form, then run `action` in one transaction.
    Raises OAuthError (rendered by the caller)."""
    form = await _form(request)
    token_url = f"{_settings(request).server_root}/auth/token"
    authorization = request.headers.get("authorization")

    def work(conn: Connection) -> Any:
        client = authenticate_client(conn, form, authorization, token_url)
        return action(conn, client, form)

    return await _run(request, work)


def _token_param(form: dict[str, str]) -> str:
    if not form.get("token"):
        raise invalid_request("token is required")
    return form["token"]


async def token(request: Request) -> Response:
    tokens = _auth(request).tokens
    form: dict[str, str] = {}
    try:
        form = await _form(request)
        body = await _as_client(
            request, lambda conn, client, form: exchange(conn, tokens, client, form)
        )
    except OAuthError as exc:
        await _record(request, "token-refused", False, _caller_id(request, form), detail=_why(exc))
        return oauth_error_response(exc)
    what = "token-refreshed" if form.get("grant_type") == "refresh_token" else "token-issued"
    grant = tokens.verify(body["access_token"])
    await _record(request, what, True, grant.client_id, grant=grant, detail=body.get("scope", ""))
    return JSONResponse(body, headers=NO_STORE)


async def introspect(request: Request) -> Response:
    """RFC 7662, for registered clients (resource servers, the app itself)."""
    return await _token_management(request, "token-introspected")


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was known."""
    return await _token_management(request, "token-revoked")


async def _token_management(request: Request, what: str) -> Response:
    tokens = _auth(request).tokens

    def action(conn: Connection, client: ClientRecord, form: dict[str, str]) -> Any:
        token = _token_param(form)
        if what == "token-revoked":
            tokens.revoke(conn, token)
            return client.client_id, None
        return client.client_id, tokens.introspect(conn, token)

    try:
        client_id, body = await _as_client(request, action)
    except OAuthError as exc:
        await _record(request, what, False, _caller_id(request, {}), detail=_why(exc))
        return oauth_error_response(exc)
    detail = "" if body is None else f"active={str(body.get('active')).lower()}"
    await _record(request, what, True, client_id, detail=detail)
    if body is None:
        return Response(status_code=200, headers=NO_STORE)
    return JSONResponse(body, headers=NO_STORE)


async def _record(
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
    await run_in_threadpool(_auth(request).record, event)


def _caller_id(request: Request, form: dict[str, str]) -> str | None:
    """Who a refused client said it was (form, assertion issuer or Basic user), unverified."""
    if form.get("client_id"):
        return form["client_id"]
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            return base64.b64decode(authorization[6:]).decode().split(":", 1)[0] or None
        except ValueError:
            return None
    return None


def _why(exc: OAuthError) -> str:
    return f"{exc.error}: {exc.description}"


# ---------------------------------------------------------------------- admin API


def _admin_grant(request: Request, conn: Connection) -> Grant:
    """A live token with a system scope that may create anything, or an admin user's."""
    grant = _auth(request).authenticate(request.headers.get("authorization"))
    if grant is None:
        raise FhirError("a bearer token is required", status=401)
    if grant.token_id and not _auth(request).tokens.is_live(conn, grant.token_id):
        raise FhirError("the access token was revoked or has expired", status=401)
    system = any(
        s.context == "system" and s.resource_type == "*" and "c" in s.permissions
        for s in grant.scopes.resources
    )
    if not (system or grant.role == "admin"):
        raise FhirError("this needs a system/*.c scope (or an administrator)", status=403)
    return grant


async def create_launch(request: Request) -> Response:
    """POST /auth/launch {"patient": "123", "encounter": "456"} -> {"launch": "..."}."""
    body = await _json_body(request)

    def work(conn: Connection) -> dict[str, Any]:
        grant = _admin_grant(request, conn)
        try:
            made = launch.create_launch(
                conn,
                patient=body.get("patient"),
                encounter=body.get("encounter"),
                created_by=grant.subject,
            )
        except ValueError as exc:
            raise invalid_request(str(exc)) from exc
        return {"launch": made.launch_id, "patient": made.patient, "encounter": made.encounter}

    try:
        return JSONResponse(await _run(request, work), status_code=201)
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
            str(body.get("client_name", "")),
            str(body.get("kind", "")),
            scope=str(body.get("scope", "")),
            redirect_uris=list(body.get("redirect_uris") or []),
            launch_uri=body.get("launch_uri"),
            jwks=body.get("jwks"),
            jwks_uri=body.get("jwks_uri"),
        )
        out = clients.describe(made.record)
        if made.client_secret:
            out["client_secret"] = made.client_secret
        return out

    try:
        result = await _run(request, work)
    except OAuthError as exc:
        return oauth_error_response(exc)
    status = 201 if request.method == "POST" else 200
    return JSONResponse(result, status_code=status, headers=NO_STORE)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise FhirError("the body must be JSON") from exc
    if not isinstance(body, dict):
        raise FhirError("the body must be a JSON object")
    return body


# ---------------------------------------------------------------------- browser flow


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
        return await _form(request, repeatable=("group",))
    return dict(request.query_params)


@_pages
async def authorize(request: Request) -> Response:
    params = await _params(request)
    settings = _settings(request)
    browser = request.cookies.get(flow.COOKIE) or flow.secrets.new_secret()

    def work(conn: Connection) -> str:
        flow.validate_request(conn, params, settings)
        return flow.start(conn, params, browser, settings)

    request_id = await _run(request, work)
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
        user = users.authenticate(conn, params.get("username", ""), params.get("password", ""))
        if user is None:
            return flow.render(
                "login.html", status=401, error="Wrong username or password.", **page
            )
        flow.set_user(conn, pending, user.username)
        return _next_step(conn, pending)

    response: Response = await _run(request, work)
    if request.method == "POST":
        ok = response.status_code != 401
        await _record(
            request, "login", ok, seen.get("client_id"),
            username=params.get("username") or None,
            detail="signed in" if ok else "wrong username or password",
        )  # fmt: skip
    return response


def _next_step(conn: Connection, pending: flow.Pending) -> Response:
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
        client = clients.get_client(conn, pending.params["client_id"])
        return pending, client.name if client else ""

    pending, client_name = await _run(request, work)
    ctx = _user_context(request, pending)
    if request.method == "POST":
        chosen = params.get("patient", "")
        if not chosen or not _patients(app, ctx, [("_id", chosen)]):
            raise flow.PageError("invalid_request", "choose a patient from the list")

        def choose(conn: Connection) -> Response:
            flow.set_patient(conn, pending, chosen)
            return RedirectResponse(f"/auth/consent?request={pending.id}", status_code=303)

        return await _run(request, choose)  # type: ignore[no-any-return]
    name = params.get("name", "")
    query = [("name", name)] if name else []
    found = _patients(app, ctx, [*query, ("_count", "50"), ("_sort", "family")])
    return flow.render(
        "picker.html", client_name=client_name, request_id=request_id, action="/auth/picker",
        name=name, patients=found,
    )  # fmt: skip


def _user_context(request: Request, pending: flow.Pending) -> RequestContext:
    """The picker searches as the signed-in user, through the one door."""
    with _auth(request).engine.connect() as conn:
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
        base_url=_settings(request).fhir_base_url,
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
        with _auth(request).engine.connect() as conn:
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
    settings = _settings(request)
    groups_chosen: set[str] = set()
    if request.method == "POST":
        groups_chosen = {str(g) for g in (await request.form()).getlist("group")}
    # Named before the write transaction: reading the patient goes through the door, which
    # writes its audit record (on SQLite that needs the write lock this page would hold).
    label = await run_in_threadpool(_consent_patient, request, request_id)
    seen: dict[str, Any] = {}

    def work(conn: Connection) -> Response:
        pending = flow.load_pending(conn, request, request_id)
        seen.update(client_id=pending.params.get("client_id"), username=pending.username,
                    patient=pending.patient)  # fmt: skip
        if pending.username is None:
            raise flow.PageError("access_denied", "sign in first")
        if flow.needs_patient_pick(conn, pending):
            return RedirectResponse(f"/auth/picker?request={pending.id}", status_code=303)
        scopes = flow.grantable(conn, pending)
        redirect_uri, state = pending.params["redirect_uri"], pending.params.get("state")
        if request.method == "GET":
            client = clients.get_client(conn, pending.params["client_id"])
            return flow.render(
                "consent.html", client_name=client.name if client else "",
                request_id=request_id, action="/auth/consent",
                groups=flow.scope_groups(scopes), patient=label,
            )  # fmt: skip
        if params.get("decision") != "allow":
            flow.finish(conn, pending)
            raise flow.RedirectError(redirect_uri, "access_denied", "the user denied access", state)
        if not groups_chosen:  # nothing shared is a refusal, not an empty grant
            flow.finish(conn, pending)
            raise flow.RedirectError(redirect_uri, "access_denied", "nothing was shared", state)
        scope = flow.consented_scope(scopes, groups_chosen)
        _code, url = flow.issue_code(conn, pending, scope, settings)
        seen["scope"] = scope
        return RedirectResponse(url, status_code=303)

    try:
        response: Response = await _run(request, work)
    except flow.RedirectError as exc:
        if request.method == "POST" and seen:
            await _consent_event(request, seen, False, f"access_denied: {exc.description}")
        raise
    if request.method == "POST" and "scope" in seen:
        await _consent_event(request, seen, True, f"granted {seen['scope']}")
    return response


async def _consent_event(request: Request, seen: dict[str, Any], ok: bool, detail: str) -> None:
    await _record(
        request, "consent", ok, seen.get("client_id"), username=seen.get("username"),
        patient=seen.get("patient"), detail=detail,
    )  # fmt: skip
