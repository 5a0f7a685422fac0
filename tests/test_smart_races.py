"""Single use under concurrency: an authorization code or a refresh token presented several
times at once is honoured once (RFC 6749 sections 4.1.2 and 10.4), and so is a consent
decision (one sign-in, one code). On PostgreSQL these transactions run side by side at READ
COMMITTED, so "read it, see it unused, mark it used" must lock the row it reads."""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import LiveServer
from tests.smart_helpers import (
    CALLBACK,
    PASSWORD,
    Browser,
    TwoPatients,
    authorize_query,
    patient_app_code,
    query_of,
    redeem,
    register_client,
    register_user,
    two_patients,
)

ATTEMPTS = 8

World = TwoPatients


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    return two_patients(live_server, auth_headers)


def _at_once(
    world: World,
    forms: list[dict[str, Any]],
    path: str = "/auth/token",
    cookies: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """POST every form to `path` at the same moment, each on its own connection."""
    start = threading.Barrier(len(forms))
    answers: list[httpx.Response | None] = [None] * len(forms)

    def post(index: int) -> None:
        with httpx.Client(timeout=60, cookies=cookies) as http:
            start.wait()
            answers[index] = http.post(f"{world.root}{path}", data=forms[index])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(forms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def _issued(answers: list[httpx.Response]) -> list[dict[str, Any]]:
    for answer in answers:
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 400:
            assert answer.json()["error"] == "invalid_grant", answer.text
    return [a.json() for a in answers if a.status_code == 200]


def _reads(world: World, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{world.base}/Patient/{world.pa}", headers=headers).status_code


def test_a_code_presented_many_times_at_once_is_redeemed_once(world: World) -> None:
    app, code, verifier = patient_app_code(world, "launch/patient patient/*.rs offline_access")
    form = {"grant_type": "authorization_code", "code": code, "client_id": app.client_id,
            "redirect_uri": CALLBACK, "code_verifier": verifier}  # fmt: skip
    issued = _issued(_at_once(world, [form] * ATTEMPTS))
    assert len(issued) <= 1
    # A redemption beside another is a reuse (RFC 6749 4.1.2): whatever was issued is revoked.
    for body in issued:
        assert _reads(world, body["access_token"]) == 401


def test_a_refresh_token_presented_many_times_at_once_is_rotated_once(world: World) -> None:
    app, code, verifier = patient_app_code(world, "launch/patient patient/*.rs offline_access")
    first = redeem(world, app, code, verifier)
    assert first.status_code == 200, first.text
    form = {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"],
            "client_id": app.client_id}  # fmt: skip
    issued = _issued(_at_once(world, [form] * ATTEMPTS))
    assert len(issued) <= 1
    # The others were reuses of a spent refresh token: the family is revoked.
    assert _reads(world, first.json()["access_token"]) == 401
    for body in issued:
        assert _reads(world, body["access_token"]) == 401


def test_a_consent_posted_many_times_at_once_issues_one_code(world: World) -> None:
    """One sign-in, one authorization code: the consent decision is single use like a code
    (the pending sign-in is locked, then deleted). Before, concurrent POSTs each issued one."""
    scope = "launch/patient patient/*.rs"
    app = register_client(world.auth, "public", scope)
    user = register_user(world.auth, "patient", f"Patient/{world.pa}")
    verifier = secrets.token_urlsafe(48)
    query = authorize_query(world.base, app.client_id, scope, verifier)
    browser = Browser(world.root)
    browser.open(f"{world.root}/auth/authorize?{urlencode(query)}")
    browser.submit("/auth/login", {"request": browser.request_id(), "username": user,
                                   "password": PASSWORD})  # fmt: skip
    assert browser.last is not None and "/auth/consent" in str(browser.last.url)
    groups = re.findall(r'name="group" value="([^"]+)"', browser.last.text)
    form = {"request": browser.request_id(), "decision": "allow", "group": groups}
    cookies = dict(browser.http.cookies)  # the sign-in is bound to this browser
    answers = _at_once(world, [form] * ATTEMPTS, "/auth/consent", cookies)
    codes = [query_of(a.headers["location"])["code"] for a in answers if a.status_code == 303]
    assert len(codes) == 1, [a.status_code for a in answers]
    assert all(a.status_code == 400 for a in answers if a.status_code != 303)
    assert redeem(world, app, codes[0], verifier).status_code == 200
