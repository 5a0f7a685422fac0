"""patient/ scopes need a patient in context (SMART App Launch, scopes-and-launch-context:
granting one, the server "SHALL establish a patient in context"). A practitioner's standalone
sign-in without launch/patient is not granted them (the consent page does not offer them, the
token response's scope leaves them out); a patient user's context is her own record; the
picker runs only for an app that asked for launch/patient."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.auth.pkce import s256
from tests.conftest import LiveServer
from tests.smart_helpers import (
    CALLBACK,
    Browser,
    Registered,
    TwoPatients,
    query_of,
    register_client,
    register_user,
    two_patients,
)

REGISTERED = "launch/patient openid fhirUser patient/*.rs user/Patient.rs"


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> TwoPatients:
    return two_patients(live_server, auth_headers)


def _start(world: TwoPatients, scope: str) -> tuple[Registered, str, str]:
    """A registered public app and its authorization URL for `scope`: (app, url, verifier)."""
    app = register_client(world.auth, "public", REGISTERED)
    verifier = secrets.token_urlsafe(48)
    query = {"response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
             "scope": scope, "state": uuid.uuid4().hex, "aud": world.base,
             "code_challenge": s256(verifier), "code_challenge_method": "S256"}  # fmt: skip
    return app, f"{world.root}/auth/authorize?{urlencode(query)}", verifier


def _user(world: TwoPatients, role: str) -> str:
    if role == "patient":
        return register_user(world.auth, "patient", f"Patient/{world.pa}")
    return register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")


def _signed_in(world: TwoPatients, url: str, username: str) -> Browser:
    """Signed in; the browser is on the page that comes next (picker or consent)."""
    browser = Browser(world.root)
    browser.open(url)
    browser.submit("/auth/login", {"request": browser.request_id(), "username": username,
                                   "password": "correct horse battery staple"})  # fmt: skip
    return browser


def _consent(browser: Browser) -> str:
    """Allow everything the consent page offers; the URL the app is sent back to."""
    assert browser.last is not None and "/auth/consent" in str(browser.last.url)
    groups = re.findall(r'name="group" value="([^"]+)"', browser.last.text)
    form = {"request": browser.request_id(), "decision": "allow", "group": groups}
    done = browser.http.post("/auth/consent", data=form)
    assert done.status_code == 303, done.text
    return done.headers["location"]


def _token(world: TwoPatients, app: Registered, back: str, verifier: str) -> dict[str, Any]:
    code = query_of(back)["code"]
    form = {"grant_type": "authorization_code", "code": code, "client_id": app.client_id,
            "redirect_uri": CALLBACK, "code_verifier": verifier}  # fmt: skip
    answer = httpx.post(f"{world.root}/auth/token", data=form)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _get(world: TwoPatients, token: str, path: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{world.base}/{path}", headers=headers).status_code


def test_practitioner_without_launch_patient_is_not_granted_patient_scopes(
    world: TwoPatients,
) -> None:
    app, url, verifier = _start(world, "openid patient/*.rs user/Patient.rs")
    browser = _signed_in(world, url, _user(world, "practitioner"))
    assert browser.last is not None
    assert "/auth/consent" in str(browser.last.url)  # no picker: the app asked for none
    assert "patient/*.rs" not in browser.last.text  # not offered
    token = _token(world, app, _consent(browser), verifier)
    assert set(token["scope"].split()) == {"openid", "user/Patient.rs"}
    assert "patient" not in token
    assert _get(world, token["access_token"], f"Patient/{world.pb}") == 200  # user/ works


def test_only_patient_scopes_without_a_patient_are_sent_back_as_invalid_scope(
    world: TwoPatients,
) -> None:
    _app, url, _verifier = _start(world, "patient/*.rs")
    browser = _signed_in(world, url, _user(world, "practitioner"))
    assert browser.last is not None and browser.last.status_code == 303
    back = query_of(browser.last.headers["location"])
    assert back["error"] == "invalid_scope" and "launch/patient" in back["error_description"]


def test_patient_user_without_launch_patient_has_her_own_record_in_context(
    world: TwoPatients,
) -> None:
    app, url, verifier = _start(world, "openid patient/*.rs")
    browser = _signed_in(world, url, _user(world, "patient"))
    assert browser.last is not None
    assert "/auth/consent" in str(browser.last.url)
    assert f'data-id="{world.pa}"' in browser.last.text  # the page names her record
    token = _token(world, app, _consent(browser), verifier)
    assert token["patient"] == world.pa
    assert set(token["scope"].split()) == {"openid", "patient/*.rs"}
    assert _get(world, token["access_token"], f"Patient/{world.pa}") == 200
    assert _get(world, token["access_token"], f"Observation/{world.obs_pb}") == 403


def test_with_launch_patient_the_picker_chooses_as_before(world: TwoPatients) -> None:
    app, url, verifier = _start(world, "launch/patient patient/*.rs")
    browser = _signed_in(world, url, _user(world, "practitioner"))
    assert browser.last is not None and "/auth/picker" in str(browser.last.url)
    browser.submit("/auth/picker", {"request": browser.request_id(), "patient": world.pb})
    token = _token(world, app, _consent(browser), verifier)
    assert token["patient"] == world.pb
    assert set(token["scope"].split()) == {"launch/patient", "patient/*.rs"}
    assert _get(world, token["access_token"], f"Observation/{world.obs_pb}") == 200


def test_the_picker_refuses_a_patient_the_app_did_not_ask_for(world: TwoPatients) -> None:
    app, url, verifier = _start(world, "openid user/Patient.rs")
    browser = _signed_in(world, url, _user(world, "practitioner"))
    request_id = browser.request_id()
    shown = browser.http.get("/auth/picker", params={"request": request_id})
    assert shown.status_code == 400 and "did not ask" in shown.text
    chosen = browser.http.post("/auth/picker", data={"request": request_id, "patient": world.pa})
    assert chosen.status_code == 400 and "did not ask" in chosen.text
    browser.open(f"/auth/consent?request={request_id}")
    token = _token(world, app, _consent(browser), verifier)
    assert "patient" not in token
