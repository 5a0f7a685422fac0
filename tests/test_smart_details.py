"""The smaller rules of the authorization server: bearer challenges (RFC 6750 section 3.1),
id_tokens (OpenID Connect, SMART fhirUser), redirect_uri at the token endpoint (RFC 6749
section 4.1.3), discovery, and what the audit trail says about refusals and token management."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from app.auth.assertions import CLIENT_ASSERTION_TYPE
from app.auth.authorize import IMPLICIT_REDIRECT
from app.auth.errors import OAuthError
from app.auth.pkce import s256
from app.db import write_transaction
from tests.conftest import LiveServer
from tests.smart_helpers import (
    CALLBACK,
    PASSWORD,
    Browser,
    Registered,
    TwoPatients,
    query_of,
    register_client,
    register_user,
    two_patients,
)

CLIENT = "urn:medisentinel:client"


World = TwoPatients


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    return two_patients(live_server, auth_headers)


def _code_flow(
    world: World, app: Registered, user: str, scope: str, **params: str
) -> tuple[dict[str, str], str]:
    """Signs in through the browser pages; (the query sent back, the PKCE verifier)."""
    verifier = secrets.token_urlsafe(48)
    query = {
        "response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
        "scope": scope, "state": uuid.uuid4().hex, "aud": world.base,
        "code_challenge": s256(verifier), "code_challenge_method": "S256", **params,
    }  # fmt: skip
    query = {k: v for k, v in query.items() if v != "<omit>"}
    url = f"{world.root}/auth/authorize?{urlencode(query)}"
    return query_of(Browser(world.root).sign_in(url, user)), verifier


def _exchange(world: World, app: Registered, code: str, verifier: str, **extra: str) -> Any:
    form = {"grant_type": "authorization_code", "code": code, "client_id": app.client_id,
            "code_verifier": verifier, **extra}  # fmt: skip
    return httpx.post(f"{world.root}/auth/token", data=form)


def _events(auth_headers: dict[str, str], world: World, client_id: str) -> list[dict[str, Any]]:
    found = httpx.get(
        f"{world.base}/AuditEvent",
        params={"agent:identifier": f"{CLIENT}|{client_id}", "_sort": "date", "_count": "100"},
        headers=auth_headers,
    )
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


# ---------------------------------------------------------------------- RFC 6750 challenges


def test_no_token_is_challenged_without_an_error_code(world: World) -> None:
    missing = httpx.get(f"{world.base}/Patient")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="medisentinel"'
    bad = httpx.get(f"{world.base}/Patient", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]


@pytest.mark.parametrize("path", ["/auth/launch", "/auth/clients"])
def test_admin_endpoints_challenge_like_the_fhir_api(world: World, path: str) -> None:
    missing = httpx.post(f"{world.root}{path}", json={"patient": world.pa})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="medisentinel"'
    bad = httpx.post(f"{world.root}{path}", json={}, headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    app = register_client(world.auth, "backend", "system/Patient.rs", jwks={"keys": []})
    weak = world.auth.local_token(app.name, "system/Patient.rs")["access_token"]
    refused = httpx.post(
        f"{world.root}{path}", json={}, headers={"Authorization": f"Bearer {weak}"}
    )
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.xyz",  # malformed
        "patient/Observation.rs?foo=bar",  # a restriction on no parameter of the type
        "patient/Observation.rs?_count=1",  # a result parameter, not a criterion
        "patient/Observation.rs?code:in=http://x.org/vs",  # an unsupported modifier
    ],
)
def test_unusable_scopes_go_back_to_the_app_before_the_login(world: World, scope: str) -> None:
    """RFC 6749 section 4.1.2.1: invalid_scope, redirected once the redirect URI is trusted;
    a restriction that is no criterion is refused then, not granted to fail every request."""
    app = register_client(world.auth, "public", "launch/patient patient/*.cruds")
    query = {"response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
             "scope": f"launch/patient {scope}", "state": "bad-scope", "aud": world.base,
             "code_challenge": s256("v" * 43), "code_challenge_method": "S256"}  # fmt: skip
    answer = httpx.get(f"{world.root}/auth/authorize?{urlencode(query)}")
    assert answer.status_code == 303, answer.text
    back = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(CALLBACK)
    assert back["error"] == "invalid_scope" and back["state"] == "bad-scope"
    with pytest.raises(OAuthError):  # nor can a client be registered with it
        register_client(world.auth, "public", scope)


# ---------------------------------------------------------------------- id_token


@pytest.mark.parametrize(
    ("role", "scope", "has_fhir_user"),
    [
        ("compliance", "openid fhirUser user/AuditEvent.rs", False),  # no FHIR resource
        ("practitioner", "openid user/Patient.rs", False),  # no fhirUser scope
        ("practitioner", "openid fhirUser user/Patient.rs", True),
    ],
)
def test_id_token_for_every_openid_user_with_fhir_user_only_when_asked(
    world: World, role: str, scope: str, has_fhir_user: bool
) -> None:
    app = register_client(world.auth, "public", scope)
    fhir_user = f"Practitioner/{world.practitioner}" if role == "practitioner" else None
    user = register_user(world.auth, role, fhir_user)
    answer, verifier = _code_flow(world, app, user, scope)
    token = _exchange(world, app, answer["code"], verifier, redirect_uri=CALLBACK).json()
    keys = KeySet.import_key_set(httpx.get(f"{world.root}/auth/jwks").json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["sub"] == user and claims["aud"] == app.client_id
    assert ("fhirUser" in claims) == has_fhir_user


@pytest.mark.parametrize(("scope", "readable"), [("openid", False), ("openid fhirUser", True)])
def test_own_fhir_user_resource_needs_the_fhir_user_scope(
    world: World, scope: str, readable: bool
) -> None:
    """SMART: `fhirUser` is the scope that asks for the user's FHIR resource; `openid`
    alone (an id_token without the claim) reaches nothing beyond the token's other scopes."""
    app = register_client(world.auth, "public", f"{scope} user/Observation.rs")
    claims = {"scope": f"{scope} user/Observation.rs", "sub": "someone", "sub_kind": "user",
              "role": "practitioner", "fhirUser": f"Practitioner/{world.practitioner}"}  # fmt: skip
    with write_transaction(world.auth.engine) as conn:
        token = world.auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    read = httpx.get(
        f"{world.base}/Practitioner/{world.practitioner}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert read.status_code == (200 if readable else 403), read.text


# ---------------------------------------------------------------------- redirect_uri


def test_redirect_uri_repeated_at_the_token_endpoint_only_if_it_was_sent(world: World) -> None:
    scope = "user/Patient.rs"
    app = register_client(world.auth, "public", scope)
    user = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    answer, verifier = _code_flow(world, app, user, scope, redirect_uri="<omit>")
    assert _exchange(world, app, answer["code"], verifier).status_code == 200
    # Sent to authorize: required (and equal) at the token endpoint. The server's own marker
    # of an omitted redirect_uri cannot be smuggled in with the request.
    answer, verifier = _code_flow(world, app, user, scope, **{IMPLICIT_REDIRECT: "true"})
    refused = _exchange(world, app, answer["code"], verifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    answer, verifier = _code_flow(world, app, user, scope, redirect_uri="<omit>")
    wrong = _exchange(world, app, answer["code"], verifier, redirect_uri=CALLBACK + "x")
    assert wrong.json()["error"] == "invalid_grant"


# ---------------------------------------------------------------------- discovery


def test_discovery_lists_the_scopes_it_supports(world: World) -> None:
    smart = httpx.get(f"{world.base}/.well-known/smart-configuration").json()
    for scope in ("launch/encounter", "patient/*.write", "patient/*.cud", "system/AuditEvent.rs"):
        assert scope in smart["scopes_supported"]


# ---------------------------------------------------------------------- audit trail


def test_refused_assertion_is_recorded_under_its_claimed_issuer(
    world: World, auth_headers: dict[str, str]
) -> None:
    app = register_client(world.auth, "backend", "system/Patient.rs", jwks={"keys": []})
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    now = int(time.time())
    claims = {"iss": app.client_id, "sub": app.client_id, "aud": f"{world.root}/auth/token",
              "exp": now + 120, "jti": uuid.uuid4().hex}  # fmt: skip
    assertion = jwt.encode({"alg": "RS384", "kid": "k1"}, claims, stranger, algorithms=["RS384"])
    refused = httpx.post(f"{world.root}/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion,
    })  # fmt: skip
    assert refused.status_code == 401
    events = _events(auth_headers, world, app.client_id)
    assert [e["outcome"] for e in events] == ["4"]


def test_token_management_records_whose_token_it_was(
    world: World, auth_headers: dict[str, str]
) -> None:
    owner = register_client(world.auth, "confidential", "patient/*.rs")
    other = register_client(world.auth, "confidential", "patient/*.rs")
    with write_transaction(world.auth.engine) as conn:
        body = {"scope": "system/Patient.rs", "sub": owner.client_id, "sub_kind": "client"}
        token = world.auth.tokens.issue(conn, owner.client_id, body)["access_token"]
    for endpoint in ("introspect", "revoke"):
        answered = httpx.post(f"{world.root}/auth/{endpoint}", data={"token": token},
                              auth=(other.client_id, other.client_secret or ""))  # fmt: skip
        assert answered.status_code == 200
    events = _events(auth_headers, world, other.client_id)
    assert len(events) == 2
    for event in events:
        assert f"token of client {owner.client_id}, not the caller's" in str(event)


def test_refused_read_names_the_patient_whose_data_was_asked_for(
    world: World, auth_headers: dict[str, str]
) -> None:
    app = register_client(world.auth, "public", "patient/*.rs")
    with write_transaction(world.auth.engine) as conn:
        claims = {"scope": "patient/*.rs", "sub": "ann", "sub_kind": "user", "role": "patient",
                  "fhirUser": f"Patient/{world.pa}", "patient": world.pa}  # fmt: skip
        token = world.auth.tokens.issue(conn, app.client_id, claims)["access_token"]
    read = httpx.get(f"{world.base}/Observation/{world.obs_pb}",
                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert read.status_code == 403
    found = httpx.get(
        f"{world.base}/AuditEvent",
        params={"patient": f"Patient/{world.pb}", "outcome": "4", "_count": "100"},
        headers=auth_headers,
    )
    assert found.status_code == 200, found.text
    assert world.obs_pb in str(found.json().get("entry", []))


@pytest.mark.parametrize(
    ("params", "why"),
    [({"redirect_uri": "https://attacker.example/cb"}, "redirect_uri is not registered"),
     ({"code_challenge_method": "plain"}, "PKCE is required"),
     ({"aud": "https://other.example/fhir"}, "aud must be this FHIR server")],
)  # fmt: skip
def test_a_refused_authorization_request_is_recorded(
    world: World, auth_headers: dict[str, str], params: dict[str, str], why: str
) -> None:
    app = register_client(world.auth, "public", "launch/patient patient/*.rs")
    query = {"response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
             "scope": "launch/patient patient/*.rs", "state": "s", "aud": world.base,
             "code_challenge": s256("v" * 43), "code_challenge_method": "S256",
             **params}  # fmt: skip
    refused = httpx.get(f"{world.root}/auth/authorize?{urlencode(query)}")
    assert refused.status_code in (303, 400)
    assert "/auth/login" not in refused.headers.get("location", "")
    events = _events(auth_headers, world, app.client_id)
    assert len(events) == 1, events
    assert events[0]["subtype"][0]["code"] == "authorize"
    assert events[0]["outcome"] == "4" and why in events[0]["outcomeDesc"]


def test_the_picker_cannot_replace_the_patient_an_ehr_launch_named(
    world: World, auth_headers: dict[str, str]
) -> None:
    made = httpx.post(f"{world.root}/auth/launch", json={"patient": world.pb}, headers=auth_headers)
    assert made.status_code == 201, made.text
    scope = "launch patient/*.rs"
    app = register_client(world.auth, "public", scope)
    user = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    verifier = secrets.token_urlsafe(48)
    query = {"response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
             "scope": scope, "state": "s", "aud": world.base, "launch": made.json()["launch"],
             "code_challenge": s256(verifier), "code_challenge_method": "S256"}  # fmt: skip
    browser = Browser(world.root)
    browser.open(f"{world.root}/auth/authorize?{urlencode(query)}")
    page = browser.submit("/auth/login", {"request": browser.request_id(), "username": user,
                                          "password": PASSWORD})  # fmt: skip
    assert "/auth/consent" in str(page.url)
    request_id = browser.request_id()
    swap = browser.http.post("/auth/picker", data={"request": request_id, "patient": world.pa})
    assert swap.status_code == 400 and "EHR launch" in swap.text
    done = browser.http.post("/auth/consent", data={"request": request_id, "decision": "allow",
                                                    "group": ["type:*"]})  # fmt: skip
    code = query_of(done.headers["location"])["code"]
    token = _exchange(world, app, code, verifier, redirect_uri=CALLBACK).json()
    assert token["patient"] == world.pb and token["need_patient_banner"] is False
