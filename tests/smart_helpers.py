"""Shared set-up for the SMART tests: registering clients and users straight in the
authorization server's tables, and a minimal browser (httpx with cookies) that walks the
login, picker and consent forms the way a person would."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx

from app.auth import clients, users
from app.auth.pkce import s256
from app.auth.server import AuthServer
from app.db import write_transaction

PASSWORD = "correct horse battery staple"
CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the test reads the redirect


@dataclass(frozen=True)
class Registered:
    client_id: str
    client_secret: str | None
    name: str


def register_client(auth: AuthServer, kind: str, scope: str, **extra: Any) -> Registered:
    name = f"{kind}-{uuid.uuid4().hex[:10]}"
    if kind != "backend" and "redirect_uris" not in extra:
        extra["redirect_uris"] = [CALLBACK]
    with write_transaction(auth.engine) as conn:
        made = clients.create_client(conn, name, kind, scope=scope, **extra)
    return Registered(made.record.client_id, made.client_secret, name)


def register_user(auth: AuthServer, role: str, fhir_user: str | None) -> str:
    username = f"{role}-{uuid.uuid4().hex[:10]}"
    with write_transaction(auth.engine) as conn:
        users.create_user(conn, username, role, PASSWORD, fhir_user=fhir_user)
    return username


class Browser:
    """Follows redirects on our server; stops at the app's redirect URI and returns it."""

    def __init__(self, server_root: str) -> None:
        self.root = server_root
        self.http = httpx.Client(base_url=server_root, follow_redirects=False, timeout=30)
        self.last: httpx.Response | None = None

    def open(self, url: str) -> httpx.Response:
        response = self.http.get(url)
        return self._follow(response)

    def submit(self, path: str, data: dict[str, Any]) -> httpx.Response:
        return self._follow(self.http.post(path, data=data))

    def _follow(self, response: httpx.Response) -> httpx.Response:
        while response.status_code in (302, 303) and self._ours(response.headers["location"]):
            response = self.http.get(urljoin(str(response.url), response.headers["location"]))
        self.last = response
        return response

    def _ours(self, location: str) -> bool:
        return location.startswith("/") or location.startswith(self.root)

    def request_id(self) -> str:
        assert self.last is not None
        match = re.search(r'name="request" value="([^"]+)"', self.last.text)
        assert match, self.last.text
        return match.group(1)

    def sign_in(
        self,
        authorize_url: str,
        username: str,
        *,
        password: str = PASSWORD,
        patient: str | None = None,
        groups: list[str] | None = None,
        decision: str = "allow",
    ) -> str:
        """The whole dance; returns the URL the browser is sent back to."""
        page = self.open(authorize_url)
        if page.status_code in (302, 303):
            return page.headers["location"]
        assert "/auth/login" in str(page.url), page.text
        page = self.submit("/auth/login", {"request": self.request_id(),
                                           "username": username, "password": password})  # fmt: skip
        if "/auth/picker" in str(page.url):
            assert patient is not None, "the picker was shown but no patient given"
            page = self.submit("/auth/picker", {"request": self.request_id(), "patient": patient})
        if page.status_code in (302, 303):
            return page.headers["location"]
        assert "/auth/consent" in str(page.url), page.text
        chosen = groups if groups is not None else re.findall(r'name="group" value="([^"]+)"',
                                                              page.text)  # fmt: skip
        form: dict[str, Any] = {"request": self.request_id(), "decision": decision}
        form["group"] = chosen
        done = self.http.post("/auth/consent", data=form)
        assert done.status_code == 303, done.text
        return done.headers["location"]


def create_resource(http: httpx.Client, body: dict[str, Any]) -> str:
    """POST a resource with an already-authorized client; its new id."""
    response = http.post(f"/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL, each given once."""
    return {k: v[0] for k, v in parse_qs(urlparse(url).query, keep_blank_values=True).items()}


@dataclass(frozen=True)
class TwoPatients:
    """Two patients, one Observation of the second, a Practitioner: what the SMART tests of
    one patient's grant against another's data need."""

    auth: AuthServer
    root: str
    base: str
    pa: str
    pb: str
    obs_pb: str
    practitioner: str


def two_patients(live_server: Any, auth_headers: dict[str, str]) -> TwoPatients:
    base = live_server.base_url
    with httpx.Client(base_url=base, headers=auth_headers, timeout=30) as http:
        pa = create_resource(http, {"resourceType": "Patient", "name": [{"family": "Ann"}]})
        pb = create_resource(http, {"resourceType": "Patient", "name": [{"family": "Bea"}]})
        obs_pb = create_resource(http, {"resourceType": "Observation", "status": "final",
                                        "code": {"text": "x"},
                                        "subject": {"reference": f"Patient/{pb}"}})  # fmt: skip
        doc = create_resource(http, {"resourceType": "Practitioner"})
    auth, root = live_server.app.state.auth, live_server.settings.server_root
    return TwoPatients(auth, root, base, pa, pb, obs_pb, doc)


def patient_app_code(tp: TwoPatients, scope: str) -> tuple[Registered, str, str]:
    """A public app and a user with the patient role (Patient/pa) through the browser pages:
    (the app, the authorization code, its PKCE verifier)."""
    app = register_client(tp.auth, "public", scope)
    user = register_user(tp.auth, "patient", f"Patient/{tp.pa}")
    verifier = secrets.token_urlsafe(48)
    query = authorize_query(tp.base, app.client_id, scope, verifier)
    back = Browser(tp.root).sign_in(f"{tp.root}/auth/authorize?{urlencode(query)}", user)
    return app, query_of(back)["code"], verifier


def authorize_query(aud: str, client_id: str, scope: str, verifier: str) -> dict[str, str]:
    """An authorization request's parameters: code flow, PKCE S256, a fresh state."""
    return {"response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK,
            "scope": scope, "state": uuid.uuid4().hex, "aud": aud,
            "code_challenge": s256(verifier), "code_challenge_method": "S256"}  # fmt: skip


def redeem(tp: TwoPatients, app: Registered, code: str, verifier: str) -> httpx.Response:
    """The token request of a public app for its code."""
    form = {"grant_type": "authorization_code", "code": code, "client_id": app.client_id,
            "redirect_uri": CALLBACK, "code_verifier": verifier}  # fmt: skip
    return httpx.post(f"{tp.root}/auth/token", data=form)
