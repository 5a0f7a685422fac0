"""Refreshing (RFC 6749 section 6, SMART App Launch 2.x): a refresh may ask for a narrower
scope for the access token it gets, but the new refresh token keeps the scope of the one it
replaces, so a later refresh may ask for everything the user granted again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.smart_helpers import TwoPatients, patient_app_code, redeem, two_patients

World = TwoPatients
GRANTED = "launch/patient patient/*.rs offline_access"


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    return two_patients(live_server, auth_headers)


def _granted(world: World) -> tuple[str, dict[str, Any]]:
    app, code, verifier = patient_app_code(world, GRANTED)
    first = redeem(world, app, code, verifier)
    assert first.status_code == 200, first.text
    return app.client_id, first.json()


def _refresh(world: World, client_id: str, token: str, scope: str | None) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    if scope is not None:
        form["scope"] = scope
    return httpx.post(f"{world.root}/auth/token", data=form)


def _status(world: World, token: str, path: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{world.base}/{path}", headers=headers).status_code


def test_a_narrower_refresh_narrows_the_access_token_only(world: World) -> None:
    client_id, first = _granted(world)
    narrow = _refresh(world, client_id, first["refresh_token"], "patient/Patient.rs")
    assert narrow.status_code == 200, narrow.text
    body = narrow.json()
    assert body["scope"] == "patient/Patient.rs"
    assert _status(world, body["access_token"], f"Patient/{world.pa}") == 200
    assert _status(world, body["access_token"], f"Observation?patient={world.pa}") == 403
    # The refresh token it came with still stands for the whole grant (and is there although
    # offline_access was not asked for this time).
    again = _refresh(world, client_id, body["refresh_token"], None)
    assert again.status_code == 200, again.text
    assert set(again.json()["scope"].split()) == set(GRANTED.split())
    assert _status(world, again.json()["access_token"], f"Observation?patient={world.pa}") == 200


def test_a_refresh_may_ask_for_a_scope_within_a_granted_wildcard(world: World) -> None:
    client_id, first = _granted(world)
    within = _refresh(world, client_id, first["refresh_token"], "patient/Observation.rs")
    assert within.status_code == 200, within.text
    assert within.json()["scope"] == "patient/Observation.rs"
    token = within.json()["access_token"]
    assert _status(world, token, f"Observation?patient={world.pa}") == 200
    assert _status(world, token, f"Patient/{world.pa}") == 403


@pytest.mark.parametrize(
    "scope", ["patient/*.cruds", "patient/AuditEvent.rs", "user/Patient.rs", "openid"]
)
def test_a_refresh_cannot_ask_for_more(world: World, scope: str) -> None:
    client_id, first = _granted(world)
    wider = _refresh(world, client_id, first["refresh_token"], scope)
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope", wider.text
