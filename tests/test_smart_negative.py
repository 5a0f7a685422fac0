"""One negative test per SMART rule: redirect URIs, PKCE, codes, audience, assertions at the
real token endpoint, tokens missing/expired/revoked, and patient/ scopes confining reads,
searches, includes, revincludes, history and transaction entries."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import update

from app.auth.pkce import s256
from app.auth.server import AuthServer
from app.auth.tables import authorization_code
from app.auth.tokens import TokenService
from app.db import write_transaction
from app.settings import Settings
from tests.conftest import LiveServer
from tests.smart_helpers import (
    CALLBACK,
    Browser,
    create_resource,
    query_of,
    register_client,
    register_user,
)

SCOPE = "launch/patient openid fhirUser patient/*.cruds offline_access"


@dataclass(frozen=True)
class World:
    auth: AuthServer
    settings: Settings
    root: str
    base: str
    mine: str  # Patient A: the token's patient
    other: str  # Patient B
    my_obs: str
    other_obs: str
    their_obs_about_me: str  # the other patient's, with focus on mine: not in my compartment
    app_id: str
    user: str


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    base = live_server.base_url
    with httpx.Client(base_url=base, headers=auth_headers, timeout=30) as http:

        def create(body: dict[str, Any]) -> str:
            return create_resource(http, body)

        marker = uuid.uuid4().hex[:8]
        mine = create({"resourceType": "Patient", "name": [{"family": f"Mine{marker}"}]})
        other = create({"resourceType": "Patient", "name": [{"family": f"Other{marker}"}]})
        my_obs = create(_obs(mine, focus=other))
        other_obs = create(_obs(other))
        their_obs_about_me = create(_obs(other, focus=mine))
        practitioner = create({"resourceType": "Practitioner"})
    auth = live_server.app.state.auth
    app = register_client(auth, "public", SCOPE)
    user = register_user(auth, "practitioner", f"Practitioner/{practitioner}")
    return World(auth, live_server.settings, live_server.settings.server_root, base, mine,
                 other, my_obs, other_obs, their_obs_about_me, app.client_id, user)  # fmt: skip


def _obs(patient: str, focus: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }  # fmt: skip
    if focus:
        body["focus"] = [{"reference": f"Patient/{focus}"}]
    return body


def _authorize_url(world: World, **overrides: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    params = {
        "response_type": "code", "client_id": world.app_id, "redirect_uri": CALLBACK,
        "scope": SCOPE, "state": "s-" + uuid.uuid4().hex, "aud": world.base,
        "code_challenge": s256(verifier), "code_challenge_method": "S256",
    }  # fmt: skip
    params.update(overrides)
    params = {k: v for k, v in params.items() if v != "<omit>"}
    return f"{world.root}/auth/authorize?{urlencode(params)}", verifier


def _code(world: World, **overrides: str) -> tuple[str, str]:
    url, verifier = _authorize_url(world, **overrides)
    back = Browser(world.root).sign_in(url, world.user, patient=world.mine)
    return query_of(back)["code"], verifier


def _exchange(world: World, code: str, verifier: str | None, **extra: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
            "client_id": world.app_id, **extra}  # fmt: skip
    if verifier is not None:
        data["code_verifier"] = verifier
    return httpx.post(f"{world.root}/auth/token", data=data)


@pytest.fixture(scope="module")
def token(world: World) -> str:
    code, verifier = _code(world)
    response = _exchange(world, code, verifier)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _fhir(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


# ---------------------------------------------------------------------- authorize endpoint


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:9/elsewhere",
        "http://127.0.0.1:9/callback/sub",
        "http://127.0.0.1:9/callbackx",
        "http://127.0.0.1:9/callback/../callback",
        "http://127.0.0.1:9/callback/%2e%2e/evil",
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/CALLBACK",
    ],
)
def test_unregistered_redirect_uri_shows_a_page_and_never_redirects(
    world: World, redirect_uri: str
) -> None:
    url, _ = _authorize_url(world, redirect_uri=redirect_uri)
    response = httpx.get(url)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "redirect_uri is not registered" in response.text


def test_unknown_client_shows_a_page(world: World) -> None:
    url, _ = _authorize_url(world, client_id="nobody")
    response = httpx.get(url)
    assert response.status_code == 400 and "location" not in response.headers
    assert "unknown client_id" in response.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": "<omit>", "code_challenge_method": "<omit>"},
        {"code_challenge_method": "plain"},
        {"code_challenge": "too-short", "code_challenge_method": "S256"},
    ],
)
def test_missing_or_plain_pkce_is_refused(world: World, overrides: dict[str, str]) -> None:
    url, _ = _authorize_url(world, **overrides, state="pkce")
    response = httpx.get(url)
    assert response.status_code == 303
    back = query_of(response.headers["location"])
    assert back["error"] == "invalid_request" and back["state"] == "pkce"


def test_wrong_aud_is_refused(world: World) -> None:
    url, _ = _authorize_url(world, aud="https://evil.example/fhir", state="aud")
    response = httpx.get(url)
    back = query_of(response.headers["location"])
    assert back["error"] == "invalid_request" and back["state"] == "aud"


def test_unknown_launch_is_refused(world: World) -> None:
    url, _ = _authorize_url(world, launch="no-such-launch")
    back = query_of(httpx.get(url).headers["location"])
    assert back["error"] == "invalid_request"


# ---------------------------------------------------------------------- token endpoint


def test_wrong_or_missing_code_verifier_is_invalid_grant(world: World) -> None:
    code, _ = _code(world)
    wrong = _exchange(world, code, secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    code, _ = _code(world)
    missing = _exchange(world, code, None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"


def test_bad_code_is_invalid_grant(world: World) -> None:
    response = _exchange(world, "made-up", secrets.token_urlsafe(48))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert response.headers["cache-control"] == "no-store"


def test_reused_code_is_refused_and_revokes_what_it_issued(world: World) -> None:
    code, verifier = _code(world)
    first = _exchange(world, code, verifier)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert httpx.get(f"{world.base}/Patient/{world.mine}", headers=_fhir(access)).status_code == 200
    second = _exchange(world, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert httpx.get(f"{world.base}/Patient/{world.mine}", headers=_fhir(access)).status_code == 401
    refresh = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"],
              "client_id": world.app_id},
    )  # fmt: skip
    assert refresh.status_code == 400


def test_expired_code_is_invalid_grant(world: World) -> None:
    code, verifier = _code(world)
    with write_transaction(world.auth.engine) as conn:
        conn.execute(
            update(authorization_code)
            .where(authorization_code.c.used_at.is_(None))
            .values(expires_at=int(time.time()) - 1)
        )
    response = _exchange(world, code, verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_code_for_another_redirect_uri_is_refused(world: World) -> None:
    code, verifier = _code(world)
    response = _exchange(world, code, verifier, redirect_uri="http://127.0.0.1:9/other")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_unsupported_grant_type_and_repeated_parameters(world: World) -> None:
    response = httpx.post(
        f"{world.root}/auth/token", data={"grant_type": "password", "client_id": world.app_id}
    )
    assert response.json()["error"] == "unsupported_grant_type"
    repeated = httpx.post(
        f"{world.root}/auth/token",
        content="grant_type=authorization_code&code=a&code=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"


def _assertion(key: RSAKey, client_id: str, aud: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 240,
            "jti": uuid.uuid4().hex, **claims}  # fmt: skip
    return jwt.encode({"alg": "RS384", "kid": key.kid}, body, key, algorithms=["RS384"])


def _client_credentials(world: World, assertion: str) -> httpx.Response:
    return httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs",
              "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "client_assertion": assertion},
    )  # fmt: skip


def test_backend_assertion_rules_at_the_endpoint(world: World) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    app = register_client(
        world.auth, "backend", "system/Patient.rs", jwks={"keys": [key.as_dict(private=False)]}
    )
    token_url = f"{world.root}/auth/token"
    good = _assertion(key, app.client_id, token_url)
    assert _client_credentials(world, good).status_code == 200
    replay = _client_credentials(world, good)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
    wrong_aud = _assertion(key, app.client_id, world.base)
    assert _client_credentials(world, wrong_aud).json()["error"] == "invalid_client"
    far = _assertion(key, app.client_id, token_url, exp=int(time.time()) + 3600)
    assert _client_credentials(world, far).json()["error"] == "invalid_client"
    expired = _assertion(key, app.client_id, token_url, exp=int(time.time()) - 600)
    assert _client_credentials(world, expired).json()["error"] == "invalid_client"
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    forged = _assertion(stranger, app.client_id, token_url)
    assert _client_credentials(world, forged).json()["error"] == "invalid_client"


# ---------------------------------------------------------------------- bearer tokens


def test_missing_bad_expired_and_revoked_tokens_get_401(world: World) -> None:
    missing = httpx.get(f"{world.base}/Patient")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(f"{world.base}/Patient", headers=_fhir("garbage")).status_code == 401
    expired_settings = world.settings.model_copy(update={"access_token_seconds": -5})
    expiring = TokenService(world.auth.keys, expired_settings)
    app = register_client(world.auth, "backend", "system/Patient.rs", jwks={"keys": []})
    with write_transaction(world.auth.engine) as conn:
        claims = {"scope": "system/Patient.rs", "sub": app.client_id}
        expired = expiring.issue(conn, app.client_id, claims)["access_token"]
    assert httpx.get(f"{world.base}/Patient", headers=_fhir(expired)).status_code == 401
    live = str(world.auth.local_token(app.name, "system/Patient.rs")["access_token"])
    assert httpx.get(f"{world.base}/Patient", headers=_fhir(live)).status_code == 200
    with write_transaction(world.auth.engine) as conn:
        world.auth.tokens.revoke(conn, live)
    assert httpx.get(f"{world.base}/Patient", headers=_fhir(live)).status_code == 401
    # A bad body is not even parsed without a valid token.
    bad = httpx.post(f"{world.base}/Patient", content=b"{not json",
                     headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert bad.status_code == 401


def test_metadata_and_discovery_need_no_token(world: World) -> None:
    assert httpx.get(f"{world.base}/metadata").status_code == 200
    smart = httpx.get(f"{world.base}/.well-known/smart-configuration").json()
    assert "S256" in smart["code_challenge_methods_supported"]
    assert smart["token_endpoint"] == f"{world.root}/auth/token"
    assert "permission-v2" in smart["capabilities"]


# ---------------------------------------------------------------------- patient compartment


def test_cross_patient_read_is_refused(world: World, token: str) -> None:
    headers = _fhir(token)
    assert httpx.get(f"{world.base}/Patient/{world.mine}", headers=headers).status_code == 200
    assert httpx.get(f"{world.base}/Patient/{world.other}", headers=headers).status_code == 403
    other_obs = f"{world.base}/Observation/{world.other_obs}"
    assert httpx.get(other_obs, headers=headers).status_code == 403
    assert httpx.get(f"{other_obs}/_history/1", headers=headers).status_code == 403


def test_search_returns_and_counts_only_the_patients_compartment(world: World, token: str) -> None:
    found = httpx.get(
        f"{world.base}/Observation", params={"code": "29463-7", "_total": "accurate"},
        headers=_fhir(token),
    ).json()  # fmt: skip
    ids = {e["resource"]["id"] for e in found.get("entry", [])}
    assert world.my_obs in ids and world.other_obs not in ids
    assert all(
        e["resource"]["subject"]["reference"] == f"Patient/{world.mine}" for e in found["entry"]
    )
    assert found["total"] == len(ids)
    patients = httpx.get(f"{world.base}/Patient", headers=_fhir(token)).json()
    assert [e["resource"]["id"] for e in patients["entry"]] == [world.mine]
    system = httpx.get(
        f"{world.base}", params={"_type": "Patient,Observation"}, headers=_fhir(token)
    ).json()  # fmt: skip
    keys = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in system["entry"]}
    assert ("Patient", world.other) not in keys and ("Observation", world.other_obs) not in keys


def test_include_and_revinclude_stay_in_the_compartment(
    world: World, token: str, auth_headers: dict[str, str]
) -> None:
    unconfined = httpx.get(
        f"{world.base}/Patient",
        params={"_id": world.mine, "_revinclude": "Observation:focus"},
        headers=auth_headers,
    ).json()  # fmt: skip
    assert world.their_obs_about_me in {e["resource"]["id"] for e in unconfined["entry"]}
    included = httpx.get(
        f"{world.base}/Observation",
        params={"_id": world.my_obs, "_include": "Observation:focus"},
        headers=_fhir(token),
    ).json()  # fmt: skip
    ids = {e["resource"]["id"] for e in included["entry"]}
    assert ids == {world.my_obs}  # focus points at the other patient: not included
    rev = httpx.get(
        f"{world.base}/Patient",
        params={"_revinclude": "Observation:focus"},
        headers=_fhir(token),
    ).json()  # fmt: skip
    # their Observation has focus on my Patient, but lives in the other compartment
    assert {e["resource"]["id"] for e in rev["entry"]} == {world.mine}
    chained = httpx.get(
        f"{world.base}/Observation",
        params={"subject:Patient.name": "Other"},
        headers=_fhir(token),
    ).json()  # fmt: skip
    assert world.other_obs not in {e["resource"]["id"] for e in chained.get("entry", [])}


def test_history_stays_in_the_compartment(world: World, token: str) -> None:
    history = httpx.get(f"{world.base}/Observation/_history", headers=_fhir(token)).json()
    ids = {e["resource"]["id"] for e in history.get("entry", []) if "resource" in e}
    assert world.my_obs in ids and world.other_obs not in ids
    system = httpx.get(f"{world.base}/_history", headers=_fhir(token)).json()
    ids = {e["resource"]["id"] for e in system.get("entry", []) if "resource" in e}
    assert world.other not in ids and world.other_obs not in ids
    other = httpx.get(f"{world.base}/Observation/{world.other_obs}/_history", headers=_fhir(token))
    assert other.status_code == 403


def test_writes_outside_the_compartment_are_refused(world: World, token: str) -> None:
    headers = _fhir(token)
    mine = httpx.post(f"{world.base}/Observation", json=_obs(world.mine), headers=headers)
    assert mine.status_code == 201, mine.text
    theirs = httpx.post(f"{world.base}/Observation", json=_obs(world.other), headers=headers)
    assert theirs.status_code == 403
    # Moving my Observation to the other patient is refused; so is touching theirs.
    moved = {**_obs(world.other), "id": world.my_obs}
    put = httpx.put(f"{world.base}/Observation/{world.my_obs}", json=moved, headers=headers)
    assert put.status_code == 403
    delete = httpx.delete(f"{world.base}/Observation/{world.other_obs}", headers=headers)
    assert delete.status_code == 403


def test_transaction_entry_for_another_patient_fails_the_whole_transaction(
    world: World, token: str, auth_headers: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    entries = [
        {"resource": {**_obs(world.mine), "note": [{"text": marker}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": _obs(world.other), "request": {"method": "POST", "url": "Observation"}},
    ]  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = httpx.post(world.base, json=bundle, headers=_fhir(token))
    assert response.status_code == 403, response.text
    assert "entry" in response.text.lower()
    # Nothing of it was written (the first entry was in the compartment, yet rolled back).
    search = httpx.get(
        f"{world.base}/Observation", params={"subject": f"Patient/{world.mine}", "_count": "500"},
        headers=auth_headers,
    ).json()  # fmt: skip
    assert marker not in str(search)
    # A batch answers per entry: the other patient's entry is 403, the first one 201.
    batch = {**bundle, "type": "batch"}
    answered = httpx.post(world.base, json=batch, headers=_fhir(token)).json()
    statuses = [e["response"]["status"] for e in answered["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")


def test_granular_v2_scope_restricts_by_category(
    world: World, auth_headers: dict[str, str]
) -> None:
    vital = {**_obs(world.mine), "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs"}]}]}  # fmt: skip
    vital_id = httpx.post(f"{world.base}/Observation", json=vital, headers=auth_headers).json()[
        "id"
    ]
    scope = ("launch/patient patient/Observation.rs?category="
             "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs")  # fmt: skip
    app = register_client(world.auth, "public", scope)
    url, verifier = _authorize_url(world, client_id=app.client_id, scope=scope)
    back = Browser(world.root).sign_in(url, world.user, patient=world.mine)
    response = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "authorization_code", "code": query_of(back)["code"],
              "redirect_uri": CALLBACK, "code_verifier": verifier, "client_id": app.client_id},
    )  # fmt: skip
    access = response.json()["access_token"]
    found = httpx.get(f"{world.base}/Observation", headers=_fhir(access)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [vital_id]
    assert httpx.get(
        f"{world.base}/Observation/{world.my_obs}", headers=_fhir(access)
    ).status_code == 403  # fmt: skip
    assert httpx.get(
        f"{world.base}/Observation/{vital_id}", headers=_fhir(access)
    ).status_code == 200  # fmt: skip


def test_secrets_codes_and_tokens_never_reach_the_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        code, verifier = _code(world)
        issued = _exchange(world, code, verifier).json()
        access, refresh = issued["access_token"], issued["refresh_token"]
        httpx.get(f"{world.base}/Patient/{world.other}", headers=_fhir(access))  # 403
        _exchange(world, code, verifier)  # reuse: refused
        httpx.post(f"{world.root}/auth/introspect", data={"token": access})  # no client: 401
        secret_app = register_client(world.auth, "confidential", "patient/*.rs")
        httpx.post(
            f"{world.root}/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh},
            auth=(secret_app.client_id, "wrong-secret"),
        )
    # The test's own HTTP client (httpx, httpcore) logs what it sends; the server must not.
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in server_side)
    for secret in (code, verifier, access, refresh, "wrong-secret", secret_app.client_secret):
        assert secret and secret not in logged


def test_consent_with_nothing_ticked_is_a_refusal(world: World) -> None:
    url, _ = _authorize_url(world, state="none-ticked")
    back = Browser(world.root).sign_in(url, world.user, patient=world.mine, groups=[])
    assert query_of(back) == {
        "error": "access_denied", "error_description": "nothing was shared", "state": "none-ticked"
    }  # fmt: skip
