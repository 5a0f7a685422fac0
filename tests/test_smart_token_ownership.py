"""Tokens and launches belong to whom they were given: a client introspects and revokes only
its own tokens (RFC 7662 section 2.1-2.2, RFC 7009 section 2.1), and an EHR launch gives its
patient context once, never to a patient user other than that patient."""

from __future__ import annotations

import secrets
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest

from app.auth.pkce import s256
from app.db import write_transaction
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

SCOPE = "launch launch/patient openid fhirUser patient/*.rs"


World = TwoPatients


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    return two_patients(live_server, auth_headers)


def _issue(world: World, app: Registered, scope: str = "system/Patient.rs") -> str:
    with write_transaction(world.auth.engine) as conn:
        claims = {"scope": scope, "sub": app.client_id, "sub_kind": "client"}
        return str(world.auth.tokens.issue(conn, app.client_id, claims)["access_token"])


def _works(world: World, token: str) -> bool:
    response = httpx.get(f"{world.base}/Patient", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


# ---------------------------------------------------------------------- introspection, revocation


def test_introspection_answers_only_about_the_callers_own_tokens(world: World) -> None:
    owner = register_client(world.auth, "confidential", "patient/*.rs")
    other = register_client(world.auth, "confidential", "patient/*.rs")
    public = register_client(world.auth, "public", "patient/*.rs")
    token = _issue(world, owner)
    url = f"{world.root}/auth/introspect"
    mine = httpx.post(url, data={"token": token}, auth=(owner.client_id, owner.client_secret or ""))
    assert mine.json()["active"] is True and mine.json()["client_id"] == owner.client_id
    theirs = httpx.post(url, data={"token": token},
                        auth=(other.client_id, other.client_secret or ""))  # fmt: skip
    assert theirs.status_code == 200 and theirs.json() == {"active": False}
    # A public client only names itself (anyone can): it may not introspect at all.
    named = httpx.post(url, data={"token": token, "client_id": public.client_id})
    assert named.status_code == 401 and named.json()["error"] == "invalid_client"
    assert httpx.post(url, data={"token": token, "client_id": owner.client_id}).status_code == 401


def test_revocation_touches_only_the_callers_own_tokens(world: World) -> None:
    owner = register_client(world.auth, "confidential", "patient/*.rs")
    other = register_client(world.auth, "confidential", "patient/*.rs")
    public = register_client(world.auth, "public", "patient/*.rs")
    token = _issue(world, owner)
    url = f"{world.root}/auth/revoke"
    # Answered as for an unknown token (200), and nothing is revoked.
    by_other = httpx.post(url, data={"token": token},
                          auth=(other.client_id, other.client_secret or ""))  # fmt: skip
    assert by_other.status_code == 200
    by_public = httpx.post(url, data={"token": token, "client_id": public.client_id})
    assert by_public.status_code == 200
    assert _works(world, token)
    by_owner = httpx.post(url, data={"token": token},
                          auth=(owner.client_id, owner.client_secret or ""))  # fmt: skip
    assert by_owner.status_code == 200
    assert not _works(world, token)
    # A public client still revokes what it was issued itself (sign-out).
    own = _issue(world, public)
    assert httpx.post(url, data={"token": own, "client_id": public.client_id}).status_code == 200
    assert not _works(world, own)


# ---------------------------------------------------------------------- refresh lifetimes


def test_an_online_access_family_ends_a_working_day_after_the_sign_in(world: World) -> None:
    """Rotation does not stretch online_access: every refresh token of the family expires
    when the first would have (SMART: usable while the user is online)."""
    scope = "patient/*.rs online_access"
    app = register_client(world.auth, "public", scope)
    online = world.auth.settings.online_refresh_seconds
    signed_in = int(time.time()) - online + 3  # the sign-in was almost a working day ago
    claims = {"scope": scope, "sub": "someone", "sub_kind": "user", "patient": world.pa,
              "signed_in_at": signed_in}  # fmt: skip
    with write_transaction(world.auth.engine) as conn:
        first = world.auth.tokens.issue(conn, app.client_id, claims)["refresh_token"]

    def refresh(token: str) -> httpx.Response:
        return httpx.post(
            f"{world.root}/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": app.client_id,
            },
        )

    rotated = refresh(first)
    assert rotated.status_code == 200, rotated.text
    time.sleep(4)
    late = refresh(rotated.json()["refresh_token"])
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant", late.text


# ---------------------------------------------------------------------- EHR launch


def _launch(world: World, auth_headers: dict[str, str], patient: str, **more: str) -> str:
    made = httpx.post(
        f"{world.root}/auth/launch", json={"patient": patient, **more}, headers=auth_headers
    )
    assert made.status_code == 201, made.text
    return str(made.json()["launch"])


def _sign_in(world: World, app: Registered, user: str, launch: str) -> dict[str, str]:
    """The browser dance with an EHR launch; the query the app is sent back with."""
    verifier = secrets.token_urlsafe(48)
    params = {
        "response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
        "scope": SCOPE, "state": uuid.uuid4().hex, "aud": world.base, "launch": launch,
        "code_challenge": s256(verifier), "code_challenge_method": "S256",
    }  # fmt: skip
    back = Browser(world.root).sign_in(f"{world.root}/auth/authorize?{urlencode(params)}", user)
    answer = query_of(back)
    if "code" in answer:
        token = httpx.post(f"{world.root}/auth/token", data={
            "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": CALLBACK,
            "client_id": app.client_id, "code_verifier": verifier,
        })  # fmt: skip
        assert token.status_code == 200, token.text
        return dict(token.json())
    return answer


def test_a_launch_is_used_once(world: World, auth_headers: dict[str, str]) -> None:
    app = register_client(world.auth, "public", SCOPE)
    doctor = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    launch = _launch(world, auth_headers, world.pb)
    assert _sign_in(world, app, doctor, launch)["patient"] == world.pb
    again = _sign_in(world, app, doctor, launch)
    assert again["error"] == "invalid_request" and "launch" in again["error_description"]
    elsewhere = register_client(world.auth, "public", SCOPE)
    assert _sign_in(world, elsewhere, doctor, launch)["error"] == "invalid_request"


def test_a_launch_made_for_a_client_is_taken_by_that_client_only(
    world: World, auth_headers: dict[str, str]
) -> None:
    app = register_client(world.auth, "public", SCOPE)
    other = register_client(world.auth, "public", SCOPE)
    doctor = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    launch = _launch(world, auth_headers, world.pb, client_id=app.client_id)
    stolen = _sign_in(world, other, doctor, launch)
    assert stolen["error"] == "invalid_request" and "launch" in stolen["error_description"]
    assert _sign_in(world, app, doctor, launch)["patient"] == world.pb  # still there for it
    by_name = _launch(world, auth_headers, world.pb, client_id=app.name)
    assert _sign_in(world, app, doctor, by_name)["patient"] == world.pb
    for client in ("no-such-client", 42):
        unknown = httpx.post(f"{world.root}/auth/launch", headers=auth_headers,
                             json={"patient": world.pb, "client_id": client})  # fmt: skip
        assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_request"


def test_a_patient_user_never_gets_another_patients_context(
    world: World, auth_headers: dict[str, str]
) -> None:
    app = register_client(world.auth, "public", SCOPE)
    ann = register_user(world.auth, "patient", f"Patient/{world.pa}")
    refused = _sign_in(world, app, ann, _launch(world, auth_headers, world.pb))
    assert refused["error"] == "access_denied", refused
    assert "patient" not in refused
    own = _sign_in(world, app, ann, _launch(world, auth_headers, world.pa))
    assert own["patient"] == world.pa
