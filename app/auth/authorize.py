"""The browser side of the authorization code flow: /auth/authorize, then the login page, the
patient picker (standalone launch asking for launch/patient), the consent page, and the
redirect back to the app with a code.

A pending request lives in the `auth_request` table, bound to the browser by a cookie, so
the forms carry only its id. Until the client and its redirect URI are known to be
registered, errors are shown as a page and never redirected (an open redirector otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, delete, insert, select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth import clients, launch, pkce, secrets, users
from app.auth.codes import create_code
from app.auth.errors import OAuthError
from app.auth.scopes import Scopes, narrow
from app.auth.tables import auth_request
from app.settings import Settings

COOKIE = "medisentinel_auth"
IMPLICIT_REDIRECT = "medisentinel_redirect_uri_implicit"
LAUNCH_PATIENT = "medisentinel_launch_patient"  # the EHR launch named the patient
PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


class PageError(Exception):
    """Shown to the user; never redirected."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class RedirectError(Exception):
    """Sent back to the (verified) redirect URI, with state."""

    def __init__(self, redirect_uri: str, error: str, description: str, state: str | None):
        super().__init__(description)
        self.redirect_uri, self.error, self.description, self.state = (
            redirect_uri, error, description, state,
        )  # fmt: skip


@dataclass
class Pending:
    id: str
    params: dict[str, Any]
    username: str | None
    patient: str | None
    encounter: str | None


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = PAGES.get_template(template).render(**values)
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
               "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
               "form-action *"}  # fmt: skip
    return HTMLResponse(html, status_code=status, headers=headers)


def error_page(error: PageError) -> HTMLResponse:
    return render("error.html", error.status, error=error.error, description=error.description)


def error_redirect(error: RedirectError) -> Response:
    params = {"error": error.error, "error_description": error.description}
    if error.state is not None:
        params["state"] = error.state
    return RedirectResponse(_with_query(error.redirect_uri, params), status_code=303)


# ---------------------------------------------------------------------- /auth/authorize


def validate_request(
    conn: Connection,
    params: dict[str, str],
    settings: Settings,
    repeated: Sequence[str] = (),
) -> launch.LaunchContext | None:
    """Check an authorization request; PageError before the redirect URI is trusted,
    RedirectError after. Returns the EHR launch context it names, which it takes (single use:
    the request fails as a whole if anything else is wrong, and the launch stays).
    `repeated` names the parameters sent more than once (RFC 6749 section 3.1 forbids it)."""
    trust = sorted({"client_id", "redirect_uri"} & set(repeated))
    if trust:  # which of them would be the one the app meant: nothing to trust, no redirect
        raise PageError("invalid_request", f"parameters may not be repeated: {', '.join(trust)}")
    client = clients.get_client(conn, params.get("client_id", ""))
    if client is None:
        raise PageError("invalid_client", "unknown client_id")
    if client.kind == "backend":
        raise PageError("unauthorized_client", "a backend client cannot use this flow")
    redirect_uri = params.get("redirect_uri")
    for ours in (IMPLICIT_REDIRECT, LAUNCH_PATIENT):  # ours to set, never the request's
        params.pop(ours, None)
    if redirect_uri is None and len(client.redirect_uris) == 1:
        redirect_uri = params["redirect_uri"] = client.redirect_uris[0]
        params[IMPLICIT_REDIRECT] = "true"  # the token request need not repeat it
    if redirect_uri not in client.redirect_uris:  # exact string match, nothing looser
        raise PageError("invalid_request", "redirect_uri is not registered for this client")
    state = params.get("state")

    def refuse(error: str, description: str) -> RedirectError:
        return RedirectError(redirect_uri, error, description, state)

    if repeated:
        raise refuse("invalid_request", f"parameters may not be repeated: {', '.join(repeated)}")
    if params.get("response_type") != "code":
        raise refuse("unsupported_response_type", "response_type must be code")
    if not pkce.valid_challenge(params.get("code_challenge"), params.get("code_challenge_method")):
        raise refuse("invalid_request", "PKCE is required: code_challenge with method S256")
    if (params.get("aud") or "").rstrip("/") != settings.fhir_base_url:
        raise refuse("invalid_request", f"aud must be this FHIR server: {settings.fhir_base_url}")
    if not params.get("scope"):
        raise refuse("invalid_scope", "scope is required")
    try:  # a malformed scope is the app's error: sent back now, not shown after the login
        narrow(params["scope"], client.scope)
    except OAuthError as exc:
        raise refuse(exc.error, exc.description) from None
    for name in ("request", "request_uri"):  # OpenID Connect Core 6: request objects
        if params.get(name):  # not supported: said so, rather than ignored (their claims
            # could ask for other scopes or another redirect than the plain parameters)
            raise refuse(f"{name}_not_supported", f"the {name} parameter is not supported")
    if "none" in (params.get("prompt") or "").split():
        # OpenID Connect Core 3.1.2.6: no login or consent page may be shown. There is no
        # signed-in session to reuse (every authorization signs in), so the answer is always
        # login_required; the pages were shown before, which a silent request cannot display.
        raise refuse("login_required", "prompt=none: this server keeps no sign-in session")
    if not params.get("launch"):
        return None
    context = launch.take_launch(conn, params["launch"], client.client_id)
    if context is None:
        raise refuse("invalid_request", "unknown, expired or already used launch")
    return context


def start(
    conn: Connection,
    params: dict[str, str],
    browser: str,
    settings: Settings,
    context: launch.LaunchContext | None,
) -> str:
    """Record the validated request with its launch context; returns its id."""
    conn.execute(delete(auth_request).where(auth_request.c.expires_at < secrets.now()))
    if context is not None and context.patient:
        params[LAUNCH_PATIENT] = "true"  # the picker may not replace it (check_can_pick)
    request_id = secrets.new_secret(24)
    conn.execute(
        insert(auth_request).values(
            id=request_id,
            browser_hash=secrets.digest(browser),
            params=json.dumps(params),
            patient=context.patient if context else None,
            encounter=context.encounter if context else None,
            expires_at=secrets.now() + settings.login_seconds,
        )
    )
    return request_id


def load_pending(
    conn: Connection, request: Request, request_id: str, *, lock: bool = False
) -> Pending:
    """The pending sign-in of this browser. `lock` (the consent decision): the row stays
    locked until the transaction ends, as a code's is when redeemed (codes.py), so of two
    concurrent decisions the second waits, then finds the row gone (PostgreSQL runs them
    side by side at READ COMMITTED: both read it and both issued a code)."""
    query = select(auth_request).where(auth_request.c.id == request_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    browser = request.cookies.get(COOKIE, "")
    if row is None or row.expires_at < secrets.now():
        raise PageError("invalid_request", "this sign-in has expired; start again from the app")
    if not browser or not secrets.constant_time_equal(row.browser_hash, secrets.digest(browser)):
        raise PageError("invalid_request", "this sign-in was started in another browser")
    return Pending(row.id, json.loads(row.params), row.username, row.patient, row.encounter)


def set_user(conn: Connection, pending: Pending, username: str) -> None:
    conn.execute(
        update(auth_request).where(auth_request.c.id == pending.id).values(username=username)
    )
    pending.username = username


def set_patient(conn: Connection, pending: Pending, patient: str) -> None:
    conn.execute(
        update(auth_request).where(auth_request.c.id == pending.id).values(patient=patient)
    )
    pending.patient = patient


def finish(conn: Connection, pending: Pending) -> None:
    conn.execute(delete(auth_request).where(auth_request.c.id == pending.id))


# ---------------------------------------------------------------------- what may be granted


def requested(conn: Connection, pending: Pending) -> Scopes:
    """Requested scopes, less what the client is not registered for and system/ scopes
    (a person's browser never grants those)."""
    client = clients.get_client(conn, pending.params["client_id"])
    assert client is not None
    granted, _refused = narrow(pending.params["scope"], client.scope)
    resources = tuple(s for s in granted.resources if s.context != "system")
    return Scopes(resources, granted.others)


def grantable(conn: Connection, pending: Pending) -> Scopes:
    """What the consent page offers: the requested scopes, less patient/ scopes when no
    patient will be in context. SMART App Launch (scopes-and-launch-context): granting a
    patient/ scope, the server "SHALL establish a patient in context"; without one such a
    scope only ever gave 403. A patient comes from an EHR launch, the picker (launch/patient)
    or, for a patient user, her own record (needs_patient_pick); otherwise those scopes are
    not granted, and the token response's `scope` says what was."""
    scopes = requested(conn, pending)
    if pending.patient is not None or "launch/patient" in scopes:
        return scopes
    return Scopes(tuple(s for s in scopes.resources if s.context != "patient"), scopes.others)


def nothing_grantable(conn: Connection, pending: Pending) -> str:
    """Why the consent page has nothing to offer (sent back as invalid_scope)."""
    if "patient" in requested(conn, pending).contexts():
        return "patient/ scopes need a patient in context: ask for launch/patient as well"
    return "none of the requested scopes can be granted to a user"


def check_patient_context(conn: Connection, pending: Pending) -> None:
    """A patient signing in acts only for herself: a launch naming another patient is refused
    (sent back to the app as access_denied), never turned into that patient's context."""
    user = users.get_user(conn, pending.username or "")
    if user is None or user.role != "patient" or pending.patient is None:
        return
    if f"Patient/{pending.patient}" != user.fhir_user:
        finish(conn, pending)
        raise RedirectError(
            pending.params["redirect_uri"], "access_denied",
            "the launch is for another patient than the one signed in", pending.params.get("state"),
        )  # fmt: skip


def check_can_pick(conn: Connection, pending: Pending) -> None:
    """The picker chooses a patient only for an app that asked for one (launch/patient):
    a POST to it otherwise gave the app a patient context it never requested (and patient/
    scopes with it). The patient an EHR launch named is the app's context too (the EHR shows
    that patient, the token says no banner is needed): the picker may not replace it."""
    if LAUNCH_PATIENT in pending.params:
        raise PageError("invalid_request", "the EHR launch has chosen the patient")
    if "launch/patient" not in requested(conn, pending):
        raise PageError("invalid_request", "this app did not ask to choose a patient")


def needs_patient_pick(conn: Connection, pending: Pending) -> bool:
    """Whether the picker must run first. A patient user who signs in for an app asking for
    a patient (launch/patient or patient/ scopes) has her own record as the context: SMART
    lets the server infer launch/patient, and she may act for nobody else."""
    if pending.patient is not None:
        return False
    scopes = requested(conn, pending)
    asks_for_patient = "launch/patient" in scopes or "patient" in scopes.contexts()
    if not asks_for_patient:
        return False
    user = users.get_user(conn, pending.username or "")
    if user is not None and user.role == "patient" and user.fhir_user:
        set_patient(conn, pending, user.fhir_user.removeprefix("Patient/"))
        return False
    return "launch/patient" in scopes


@dataclass(frozen=True)
class ScopeGroup:
    key: str
    title: str
    scopes: tuple[str, ...]


def scope_groups(scopes: Scopes) -> list[ScopeGroup]:
    """What the consent page lists; each group is allowed or denied as a whole."""
    by_type: dict[str, list[str]] = {}
    contexts: dict[str, set[str]] = {}
    for scope in scopes.resources:
        by_type.setdefault(scope.resource_type, []).append(scope.text)
        contexts.setdefault(scope.resource_type, set()).add(scope.context)
    groups = [
        ScopeGroup(f"type:{rtype}", _group_title(rtype, contexts[rtype]), tuple(texts))
        for rtype, texts in sorted(by_type.items())
    ]
    identity = tuple(s for s in ("openid", "fhirUser", "profile") if s in scopes)
    if identity:
        groups.append(ScopeGroup("identity", "Who you are (your name and role)", identity))
    staying = tuple(s for s in ("offline_access", "online_access") if s in scopes)
    if staying:
        groups.append(ScopeGroup("session", "Stay connected after you leave", staying))
    return groups


def _group_title(rtype: str, contexts: set[str]) -> str:
    whose = "this patient's" if contexts == {"patient"} else "the"
    if rtype == "*":
        return "All of this patient's records" if whose != "the" else "All records you can see"
    return f"{rtype} records" if whose == "the" else f"{rtype} records of this patient"


def consented_scope(scopes: Scopes, allowed_groups: set[str]) -> str:
    keep: list[str] = []
    for group in scope_groups(scopes):
        if group.key in allowed_groups:
            keep.extend(group.scopes)
    keep.extend(sorted(s for s in scopes.others if s.startswith("launch")))
    return " ".join(keep)


def issue_code(
    conn: Connection, pending: Pending, scope: str, settings: Settings
) -> tuple[str, str]:
    """The code and the redirect URL that carries it."""
    user = users.get_user(conn, pending.username or "")
    if user is None:
        raise PageError("access_denied", "sign in first")
    check_patient_context(conn, pending)
    params = pending.params
    claims = {
        "scope": scope,
        "sub": user.username,
        "sub_kind": "user",
        "role": user.role,
        "fhirUser": user.fhir_user,
        "patient": pending.patient,
        "encounter": pending.encounter,
        "need_patient_banner": not params.get("launch"),
        "redirect_uri": params["redirect_uri"],
        # RFC 6749 section 4.1.3: the token request repeats redirect_uri only if this did.
        "redirect_uri_required": IMPLICIT_REDIRECT not in params,
        "code_challenge": params["code_challenge"],
        "nonce": params.get("nonce"),
    }
    code = create_code(conn, params["client_id"], claims, settings.authorization_code_seconds)
    finish(conn, pending)
    query = {"code": code}
    if params.get("state") is not None:
        query["state"] = params["state"]
    return code, _with_query(params["redirect_uri"], query)


def _with_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)
