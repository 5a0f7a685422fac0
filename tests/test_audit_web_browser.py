"""The compliance console (/audit/) in a real headless Chromium against the live server:
sign-in through the SMART pages, the list, filters, paging, one event, the refusals."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from starlette.datastructures import QueryParams

from app.auth.tables import issued_token
from audit.web.router import DEFAULT_COUNT, MAX_COUNT, Filters
from tests.conftest import LiveServer
from tests.helpers import observation, patient
from tests.smart_helpers import PASSWORD, create_resource, query_of, register_user

if TYPE_CHECKING:
    from playwright.sync_api import Page


@dataclass(frozen=True)
class Trail:
    patient: str
    observations: list[str]
    reader: str  # client_id of the backend client that read them


@pytest.fixture(scope="module")
def trail(live_server: LiveServer, auth_headers: dict[str, str], system_token: str) -> Trail:
    """A patient, three observations, and reads of each: several events about the patient."""
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers, timeout=30) as http:
        pid = create_resource(http, patient(name=[{"family": f"Audit{uuid.uuid4().hex[:6]}"}]))
        obs = [
            create_resource(http, observation(subject={"reference": f"Patient/{pid}"}))
            for _ in range(3)
        ]
        for oid in obs:
            assert http.get(f"/Observation/{oid}").status_code == 200
        assert http.get(f"/Patient/{pid}").status_code == 200
    reader = live_server.app.state.auth.authenticate(f"Bearer {system_token}").client_id
    return Trail(pid, obs, reader)


def path_of(url: str) -> str:
    return urlsplit(url).path


def console_url(live_server: LiveServer, path: str = "/audit/") -> str:
    return f"{live_server.settings.server_root}{path}"


def sign_in(page: Page, username: str) -> None:
    """On the login page the console sent us to: sign in and allow on the consent page."""
    page.wait_for_url(lambda url: path_of(url) == "/auth/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(lambda url: path_of(url) == "/auth/consent")
    assert "medisentinel-audit-console" in page.locator("main").inner_text()
    page.click("#allow")


def officer_tokens(live_server: LiveServer, username: str) -> list[bool]:
    """For each access token issued to the user: is it revoked?"""
    with live_server.app.state.engine.connect() as conn:
        rows = conn.execute(
            select(issued_token.c.claims, issued_token.c.revoked_at).where(
                issued_token.c.kind == "access"
            )
        ).all()
    return [r.revoked_at is not None for r in rows if json.loads(r.claims)["sub"] == username]


def row_ids(page: Page) -> list[str]:
    rows = page.locator("#events tr.event")
    return [str(rows.nth(i).get_attribute("data-id")) for i in range(rows.count())]


def column(page: Page, selector: str) -> list[str]:
    cells = page.locator(f"#events tr.event {selector}")
    return [cells.nth(i).inner_text().strip() for i in range(cells.count())]


def test_unauthenticated_visit_goes_to_sign_in(page: Page, live_server: LiveServer) -> None:
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))
    page.goto(console_url(live_server, "/audit/?action=R"))
    page.wait_for_url(lambda url: path_of(url) == "/auth/login")
    authorize = [u for u in visited if path_of(u) == "/auth/authorize"]
    assert authorize, visited
    asked = query_of(authorize[0])
    assert asked["scope"] == "openid fhirUser user/AuditEvent.rs"
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
    assert asked["redirect_uri"] == console_url(live_server, "/audit/callback")
    assert "medisentinel-audit-console" in page.locator("main").inner_text()
    # The pending sign-in is kept in a sealed, HttpOnly cookie scoped to the console.
    cookies = {c["name"]: c for c in page.context.cookies()}
    login = cookies["medisentinel_audit_login"]
    assert login["httpOnly"] and login["path"] == "/audit" and login["sameSite"] == "Lax"
    assert "medisentinel_audit" not in cookies  # no session yet
    # Event pages and the disclosures link without a session are not served either.
    response = httpx.get(console_url(live_server, "/audit/events/x"), timeout=30)
    assert response.status_code == 303
    assert path_of(response.headers["location"]) == "/auth/authorize"
    # A forged or tampered session cookie is no session.
    forged = httpx.get(
        console_url(live_server), headers={"Cookie": "medisentinel_audit=forged"}, timeout=30
    )
    assert forged.status_code == 303
    assert path_of(forged.headers["location"]) == "/auth/authorize"
    bare = httpx.get(console_url(live_server, "/audit"), timeout=30)
    assert bare.status_code == 307 and bare.headers["location"] == "/audit/"


def test_compliance_officer_filters_pages_and_opens_an_event(
    page: Page, live_server: LiveServer, trail: Trail
) -> None:
    officer = register_user(live_server.app.state.auth, "compliance", None)
    page.goto(console_url(live_server, "/audit/?count=2"))
    sign_in(page, officer)

    # Back on the page first asked for, signed in; the token never appears in a URL.
    page.wait_for_url(lambda url: path_of(url) == "/audit/")
    assert query_of(page.url) == {"count": "2"}
    assert officer in page.locator("#officer").inner_text()
    session = {c["name"]: c for c in page.context.cookies()}["medisentinel_audit"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["secure"]
    assert session["path"] == "/audit"
    assert "token" not in page.url and "code=" not in page.url
    assert len(row_ids(page)) == 2  # the newest events, whoever they concern
    status = page.locator("#chain-status")
    for _ in range(30):  # the first walk of a large chain may still be running
        if status.get_attribute("data-state") != "running":
            break
        page.wait_for_timeout(1000)
        page.reload()
    assert status.get_attribute("data-state") == "verified", status.inner_text()
    assert "Chain verified" in status.inner_text()

    # Filter by patient, newest first, two per page.
    page.fill("#patient", f"Patient/{trail.patient}")
    page.click("#apply")
    page.wait_for_url(lambda url: "patient" in query_of(url))
    assert query_of(page.url)["count"] == "2"
    assert page.locator("#patient").input_value() == f"Patient/{trail.patient}"
    first = row_ids(page)
    assert len(first) == 2
    assert all(f"Patient/{trail.patient}" in p for p in column(page, ".patients"))
    recorded = column(page, ".event-link")
    assert recorded == sorted(recorded, reverse=True)
    assert page.locator("#disclosures-json").get_attribute("href") == (
        f"/audit/disclosures/{trail.patient}?format=json"
    )

    # Pages forward (older), then back (newer).
    page.click("#next-page")
    page.wait_for_url(lambda url: "page" in query_of(url))
    second = row_ids(page)
    assert len(second) == 2 and not set(second) & set(first)
    older = column(page, ".event-link")
    assert max(older) <= min(recorded)
    assert page.locator("#patient").input_value() == f"Patient/{trail.patient}"  # kept
    cursor = query_of(page.url)["page"]
    page.click("#previous-page")
    page.wait_for_url(lambda url: query_of(url).get("page") != cursor)
    assert row_ids(page) == first

    # Filter by action: only the creations (by the test suite's client) of this patient.
    page.select_option("#action", "C")
    page.fill("#count", "20")
    page.click("#apply")
    page.wait_for_url(lambda url: query_of(url).get("action") == "C")
    assert column(page, ".action") == ["C"] * 4  # the patient and three observations
    assert set(column(page, ".client")) == {trail.reader}
    page.select_option("#action", "R")
    page.click("#apply")
    page.wait_for_url(lambda url: query_of(url).get("action") == "R")
    reads = row_ids(page)
    assert len(reads) >= 4 and set(column(page, ".action")) == {"R"}

    # Client and date range filters.
    page.fill("#client", trail.reader)
    today = datetime.now(UTC).date()
    page.fill("#from", (today - timedelta(days=1)).isoformat())
    page.fill("#to", (today + timedelta(days=1)).isoformat())
    page.click("#apply")
    page.wait_for_url(lambda url: query_of(url).get("client") == trail.reader)
    assert row_ids(page) == reads
    page.fill("#to", "2000-01-01")
    page.click("#apply")
    page.wait_for_url(lambda url: query_of(url).get("to") == "2000-01-01")
    page.locator("#no-events").wait_for()
    page.fill("#to", "")
    page.fill("#client", "someone-else")
    page.click("#apply")
    page.wait_for_url(lambda url: query_of(url).get("client") == "someone-else")
    page.locator("#no-events").wait_for()
    page.fill("#client", "")
    page.click("#apply")
    page.wait_for_url(lambda url: query_of(url).get("client") == "")

    # Open an event: key facts and the stored JSON.
    page.locator("#events a.event-link").first.click()
    page.wait_for_url(lambda url: path_of(url).startswith("/audit/events/"))
    assert page.locator("#event-id").inner_text() == reads[0]
    assert page.locator("#action").inner_text().startswith("R")
    assert page.locator("#outcome").inner_text().startswith("0")
    assert f"Patient/{trail.patient}" in page.locator("#patients").inner_text()
    assert page.locator("#client").inner_text() == trail.reader
    stored = page.locator("#json").inner_text()
    assert '"resourceType": "AuditEvent"' in stored and reads[0] in stored
    page.click("#back")
    page.wait_for_url(lambda url: query_of(url).get("action") == "R")

    # The officer's own looking is on the trail: searches of AuditEvent by this user.
    page.goto(console_url(live_server, f"/audit/?user={officer}&count=50"))
    assert "E" in column(page, ".action")  # its searches: queries execute (BALP)
    assert any("/audit/" in r for r in column(page, "td.mono:last-child"))

    # The accounting of disclosures, linked for the patient filter, opens with the session.
    page.goto(console_url(live_server, f"/audit/?patient={trail.patient}"))
    link = page.locator("#disclosures-json")
    with page.expect_response(lambda r: "/audit/disclosures/" in r.url) as answered:
        link.click()
    accounting = answered.value.json()
    assert accounting["patient"] == f"Patient/{trail.patient}"
    assert {d["recipient"]["client_id"] for d in accounting["disclosures"]} == {trail.reader}
    assert len(accounting["disclosures"]) == 4  # three observations and the patient read

    # Signing out revokes the token and forgets the session.
    page.goto(console_url(live_server))
    assert officer_tokens(live_server, officer) == [False]  # one token, live
    page.click("#sign-out")
    page.locator("#signed-out").wait_for()
    assert "medisentinel_audit" not in {c["name"] for c in page.context.cookies()}
    assert officer_tokens(live_server, officer) == [True]  # revoked


def test_practitioner_is_refused(page: Page, live_server: LiveServer, client: httpx.Client) -> None:
    doctor = create_resource(client, {"resourceType": "Practitioner", "name": [{"family": "X"}]})
    username = register_user(live_server.app.state.auth, "practitioner", f"Practitioner/{doctor}")
    statuses: dict[str, int] = {}
    page.on("response", lambda r: statuses.__setitem__(path_of(r.url), r.status))
    page.goto(console_url(live_server))
    sign_in(page, username)
    refused = page.locator("#refused")
    refused.wait_for()
    assert statuses["/audit/callback"] == 403
    assert path_of(page.url) == "/audit/callback"
    assert "compliance officers only" in refused.inner_text()
    assert page.locator("#heading").inner_text() == "Not allowed"
    assert "medisentinel_audit" not in {c["name"] for c in page.context.cookies()}
    assert officer_tokens(live_server, username) == [True]  # of no use here: revoked
    # Coming back starts a new sign-in rather than showing anything.
    page.goto(console_url(live_server))
    page.wait_for_url(lambda url: path_of(url) == "/auth/login")


@pytest.mark.parametrize("count", ["²", "1" * 5000, "-3", "x"])
def test_a_count_that_is_no_number_takes_the_default(count: str) -> None:
    """`count=²` passed str.isdigit() and int() refused it: the console answered 500."""
    filters = Filters.from_query(QueryParams({"count": count}))
    assert filters.count in (DEFAULT_COUNT, MAX_COUNT)
    assert Filters.from_query(QueryParams({"count": "7"})).count == 7
