"""The compliance console (/audit/) and the accounting of disclosures endpoint.

Pages are rendered on the server (Jinja2, no JavaScript). Every AuditEvent shown is fetched
through the one door with the signed-in officer's own grant, so looking at the trail is
itself audited and the scopes rules decide who may look: `user/AuditEvent.rs` held by a user
with the compliance role (or, for the disclosures endpoint, a `system/AuditEvent.rs` client).

    GET  /audit/                          the list: filters, newest first, paging
    GET  /audit/events/{id}               one event: key facts and the stored JSON
    GET  /audit/callback                  the end of the SMART sign-in
    POST /audit/logout                    revokes the token, forgets the session
    GET  /audit/disclosures/{patient_id}  accounting of disclosures, ?format=json|csv
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth.enforcement import token_required
from app.auth.grant import Grant
from app.context import RequestContext, http_context
from app.digits import whole_number
from app.errors import FhirError, Forbidden, InvalidRequest, NotFound, Unauthorized
from app.fhir import jsonio
from app.fhir.search import SearchParams
from app.fhir.validation import is_valid_id
from audit import disclosures
from audit.events import CLIENT_SYSTEM
from audit.web import session as web_session
from audit.web.facts import ACTIONS, OUTCOMES, Facts, facts_of
from audit.web.verification import verifier

DEFAULT_COUNT = 20
MAX_COUNT = 200
PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def routes() -> list[Route]:
    return [
        Route("/audit", to_console, methods=["GET"]),
        Route("/audit/", console, methods=["GET"]),
        Route("/audit/events/{event_id}", event_page, methods=["GET"]),
        Route("/audit/callback", callback, methods=["GET"]),
        Route("/audit/logout", logout, methods=["POST"]),
        Route("/audit/disclosures/{patient_id}", disclosures_endpoint, methods=["GET"]),
    ]


async def to_console(request: Request) -> Response:
    return RedirectResponse("/audit/", status_code=307)


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = PAGES.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers=HTML_HEADERS)


def message(
    heading: str, text: str, status: int, *, element_id: str = "message", **more: Any
) -> HTMLResponse:
    return render(
        "message.html", status, heading=heading, message=text, element_id=element_id, **more
    )


def refused(text: str, **more: Any) -> HTMLResponse:
    return message("Not allowed", text, 403, element_id="refused", **more)


# ---------------------------------------------------------------------- who is asking


async def _sign_in(request: Request) -> Response:
    """No session: start the SMART flow, coming back to the page that was asked for."""
    state = request.app.state
    client_id: str | None = getattr(state, "audit_console_client", None)
    if client_id is None:  # registered once per process (and once ever per base URL)
        client_id = await run_in_threadpool(web_session.console_client, state.auth)
        state.audit_console_client = client_id
    query = request.url.query
    wanted = request.url.path + (f"?{query}" if query else "")
    return web_session.begin(request, client_id, wanted)


async def _officer(request: Request) -> web_session.Session | Response:
    """The signed-in compliance officer, or the response to give instead."""
    signed_in = await run_in_threadpool(web_session.current, request)
    if signed_in is None:
        return await _sign_in(request)
    if not web_session.may_audit(signed_in.grant):
        return _not_an_officer(request, signed_in.grant)
    return signed_in


def _not_an_officer(request: Request, grant: Grant) -> HTMLResponse:
    if grant.role != web_session.ROLE:
        text = (
            f"{grant.subject} is signed in as {grant.role or 'a client'}: the audit trail is "
            "open to compliance officers only."
        )
    else:
        text = "Access to the audit trail (user/AuditEvent.rs) was not granted at sign-in."
    response = refused(text)
    web_session.clear_cookie(request, response, web_session.SESSION_COOKIE)
    return response


async def _through_the_door(
    request: Request, officer: web_session.Session, work: Any, *args: Any
) -> Any:
    """Run `work(service, ctx, *args)` on a worker thread with the officer's grant."""
    ctx = http_context(request, officer.grant)
    return await run_in_threadpool(work, request.app.state.service, ctx, *args)


def _session_lost(request: Request) -> Response:
    response = message(
        "Signed out",
        "Your session has ended (the token expired or was revoked).",
        401,
        element_id="session-ended",
    )
    web_session.clear_cookie(request, response, web_session.SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------- the list


@dataclass(frozen=True)
class Filters:
    patient: str = ""
    user: str = ""
    client: str = ""
    since: str = ""
    until: str = ""
    action: str = ""
    outcome: str = ""
    count: int = DEFAULT_COUNT

    @classmethod
    def from_query(cls, query: QueryParams) -> Filters:
        def value(name: str) -> str:
            return (query.get(name) or "").strip()

        count = whole_number(value("count"), MAX_COUNT)
        return cls(
            patient=value("patient"),
            user=value("user"),
            client=value("client"),
            since=value("from"),
            until=value("to"),
            action=value("action").upper(),
            outcome=value("outcome"),
            count=DEFAULT_COUNT if count is None else max(1, count),
        )

    @property
    def patient_id(self) -> str:
        return self.patient.removeprefix("Patient/")

    def criteria(self) -> list[tuple[str, str]]:
        """The AuditEvent search these filters make; 400 for a value that cannot be one."""
        pairs: list[tuple[str, str]] = []
        if self.patient:
            if not is_valid_id(self.patient_id):
                raise InvalidRequest(f"patient: {self.patient!r} is not a patient id")
            pairs.append(("patient", f"Patient/{self.patient_id}"))
        if self.user:
            # A reference (Practitioner/123) is the user agent's who; else the login name.
            pairs.append(("agent" if "/" in self.user else "altid", self.user))
        if self.client:
            pairs.append(("agent:identifier", f"{CLIENT_SYSTEM}|{self.client}"))
        since = disclosures.date_bound(self.since, "from")
        until = disclosures.date_bound(self.until, "to")
        if since:
            pairs.append(("date", f"ge{since}"))
        if until:
            pairs.append(("date", f"le{until}"))
        if self.action:
            if self.action not in ACTIONS:
                raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}")
            pairs.append(("action", self.action))
        if self.outcome:
            if self.outcome not in OUTCOMES:
                raise InvalidRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
            pairs.append(("outcome", self.outcome))
        return pairs

    def query(self, **extra: str) -> str:
        """These filters as the console's own query string (empty ones left out)."""
        pairs = [
            ("patient", self.patient), ("user", self.user), ("client", self.client),
            ("from", self.since), ("to", self.until), ("action", self.action),
            ("outcome", self.outcome),
        ]  # fmt: skip
        if self.count != DEFAULT_COUNT:
            pairs.append(("count", str(self.count)))
        pairs.extend(extra.items())
        return urlencode([(k, v) for k, v in pairs if v])


@dataclass(frozen=True)
class Listing:
    rows: list[Facts]
    next_page: str | None
    previous_page: str | None


def _list_events(service: Any, ctx: RequestContext, filters: Filters, page: str | None) -> Listing:
    pairs = [*filters.criteria(), ("_sort", "-date"), ("_count", str(filters.count))]
    if page:
        pairs.append(("_page", page))
    params = SearchParams.parse(pairs, "AuditEvent", strict=True)
    with service.unit_of_work(ctx, write=False) as uow:
        result = service.search(uow, "AuditEvent", params)
    rows = [facts_of(jsonio.loads(v.content)) for v in result.versions if v.content is not None]
    return Listing(rows, result.next_page, result.previous_page)


async def console(request: Request) -> Response:
    officer = await _officer(request)
    if isinstance(officer, Response):
        return officer
    filters = Filters.from_query(request.query_params)
    page = request.query_params.get("page") or None
    error: str | None = None
    listing = Listing([], None, None)
    try:
        listing = await _through_the_door(request, officer, _list_events, filters, page)
    except Unauthorized:
        return _session_lost(request)
    except Forbidden as exc:
        return refused(exc.message)
    except InvalidRequest as exc:
        error = exc.message
    chain = await verifier(request).status()
    current = "/audit/?" + filters.query(**({"page": page} if page else {}))
    return render(
        "list.html",
        400 if error else 200,
        officer=officer.grant,
        chain=chain,
        filters=filters,
        actions=list(ACTIONS.items()),
        outcomes=list(OUTCOMES.items()),
        max_count=MAX_COUNT,
        error=error,
        rows=listing.rows,
        back_query=urlencode({"back": current}),
        next_url=_page_url(filters, listing.next_page),
        previous_url=_page_url(filters, listing.previous_page),
        first_url="/audit/?" + filters.query() if page else None,
        disclosure_links=_disclosure_links(filters) if not error else None,
    )


def _page_url(filters: Filters, cursor: str | None) -> str | None:
    return "/audit/?" + filters.query(page=cursor) if cursor else None


def _disclosure_links(filters: Filters) -> dict[str, str] | None:
    if not filters.patient or not is_valid_id(filters.patient_id):
        return None
    base = f"/audit/disclosures/{filters.patient_id}"
    bounds = [("from", filters.since), ("to", filters.until)]

    def link(fmt: str) -> str:
        return f"{base}?{urlencode([(k, v) for k, v in bounds if v] + [('format', fmt)])}"

    return {"patient": f"Patient/{filters.patient_id}", "json": link("json"), "csv": link("csv")}


# ---------------------------------------------------------------------- one event


def _read_event(service: Any, ctx: RequestContext, event_id: str) -> dict[str, Any]:
    with service.unit_of_work(ctx, write=False) as uow:
        version = service.read(uow, "AuditEvent", event_id)
    return dict(jsonio.loads(version.content))


async def event_page(request: Request) -> Response:
    officer = await _officer(request)
    if isinstance(officer, Response):
        return officer
    event_id = request.path_params["event_id"]
    back = web_session.safe_next(request.query_params.get("back"))
    try:
        if not is_valid_id(event_id):
            raise NotFound(f"AuditEvent/{event_id} is not known")
        event = await _through_the_door(request, officer, _read_event, event_id)
    except Unauthorized:
        return _session_lost(request)
    except Forbidden as exc:
        return refused(exc.message)
    except FhirError as exc:
        return message(
            "Not found", exc.message, exc.status, element_id="not-found", link_text="Back"
        )
    pretty = json.dumps(event, indent=2, ensure_ascii=False)
    return render(
        "event.html", officer=officer.grant, facts=facts_of(event), pretty=pretty, back=back
    )


# ---------------------------------------------------------------------- sign-in and out


async def callback(request: Request) -> Response:
    params = request.query_params
    try:
        pending = web_session.pending_sign_in(request)
    except web_session.SignInFailed as exc:
        return _sign_in_failed(request, exc)
    if params.get("error"):
        response: Response = refused(
            f"Sign-in did not grant access: {params.get('error')}"
            + (f" ({params['error_description']})" if params.get("error_description") else "")
        )
        web_session.clear_cookie(request, response, web_session.LOGIN_COOKIE)
        return response
    try:
        answer = await web_session.exchange_code(request, pending, params.get("code") or "")
        token = str(answer["access_token"])
        grant = await run_in_threadpool(request.app.state.auth.authenticate, f"Bearer {token}")
    except web_session.SignInFailed as exc:
        return _sign_in_failed(request, exc)
    if grant is None or not web_session.may_audit(grant):
        # Not an officer (or AuditEvent was unticked): the token is of no use here; revoke it.
        await web_session.revoke(request, token, str(pending["client_id"]))
        response = _not_an_officer(request, grant) if grant else refused("no grant")
        web_session.clear_cookie(request, response, web_session.LOGIN_COOKIE)
        return response
    response = RedirectResponse(web_session.safe_next(pending.get("next")), status_code=303)
    web_session.keep(request, response, token, int(answer.get("expires_in") or 3600))
    return response


def _sign_in_failed(request: Request, exc: web_session.SignInFailed) -> Response:
    response = message("Sign-in failed", exc.description, exc.status, element_id="sign-in-error")
    web_session.clear_cookie(request, response, web_session.LOGIN_COOKIE)
    return response


async def logout(request: Request) -> Response:
    signed_in = await run_in_threadpool(web_session.current, request)
    if signed_in is not None:
        await web_session.revoke(request, signed_in.token, signed_in.grant.client_id)
    response = render(
        "message.html",
        heading="Signed out",
        message="You are signed out; the access token was revoked.",
        element_id="signed-out",
        link_text="Sign in again",
    )
    web_session.clear_cookie(request, response, web_session.SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------- disclosures


async def disclosures_endpoint(request: Request) -> Response:
    """GET /audit/disclosures/{patient_id}?from=&to=&format=json|csv. A bearer token whose
    grant may search AuditEvent; or, for the console's links, the officer's session."""
    anonymous = http_context(request, None)
    try:
        grant = await _disclosure_grant(request)
    except FhirError as exc:
        await _audit_refusal(request, anonymous, exc)
        raise
    ctx = http_context(request, grant)
    try:
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise InvalidRequest("format must be json or csv")
        since = disclosures.date_bound(request.query_params.get("from"), "from")
        until = disclosures.date_bound(request.query_params.get("to"), "to")
        accounting = await run_in_threadpool(
            lambda: disclosures.account(
                request.app.state.service,
                ctx,
                request.path_params["patient_id"],
                since=since,
                until=until,
            )
        )
    except FhirError as exc:
        if not ctx.trail.failure_recorded:
            await _audit_refusal(request, ctx, exc)
        raise
    headers = {"Cache-Control": "no-store"}
    if fmt == "csv":
        name = f"disclosures-{request.path_params['patient_id']}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(accounting.to_csv(), media_type="text/csv; charset=utf-8", headers=headers)
    return JSONResponse(accounting.to_json(), headers=headers)


async def _disclosure_grant(request: Request) -> Grant:
    header = request.headers.get("authorization")
    if header is not None:
        grant = await run_in_threadpool(request.app.state.auth.authenticate, header)
    else:
        signed_in = await run_in_threadpool(web_session.current, request)
        grant = signed_in.grant if signed_in is not None else None
    if grant is None:  # no credentials at all (a bad token was refused above)
        raise token_required()
    return grant


async def _audit_refusal(request: Request, ctx: RequestContext, error: FhirError) -> None:
    """A request refused before the door (no or bad token, bad parameter): recorded too."""
    await run_in_threadpool(request.app.state.audit.record_request_failure, ctx, error)
