"""Complete SMART flows driven by a real OAuth client (authlib's httpx client) against the
live server: standalone launch with PKCE, EHR launch, refresh with rotation, introspection,
revocation, and backend services with signed assertions (RS384 and ES384)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from app.auth.server import AuthServer
from tests.conftest import LiveServer
from tests.smart_helpers import (
    CALLBACK,
    Browser,
    create_resource,
    query_of,
    register_client,
    register_user,
)


@dataclass(frozen=True)
class World:
    auth: AuthServer
    root: str
    base: str
    patient_a: str
    patient_b: str
    obs_a: str
    obs_b: str
    practitioner: str


@pytest.fixture(scope="module")
def world(live_server: LiveServer, auth_headers: dict[str, str]) -> World:
    base = live_server.base_url
    with httpx.Client(base_url=base, headers=auth_headers, timeout=30) as http:

        def create(body: dict[str, Any]) -> str:
            return create_resource(http, body)

        a = create({"resourceType": "Patient", "name": [{"family": "Alpha"}]})
        b = create({"resourceType": "Patient", "name": [{"family": "Beta"}]})
        code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}

        def obs(patient: str) -> str:
            return create({"resourceType": "Observation", "status": "final", "code": code,
                           "subject": {"reference": f"Patient/{patient}"}})  # fmt: skip

        practitioner = create({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})
        return World(
            live_server.app.state.auth, live_server.settings.server_root, base,
            a, b, obs(a), obs(b), practitioner,
        )  # fmt: skip


def _oauth(world: World, client_id: str, scope: str, **kwargs: Any) -> OAuth2Client:
    return OAuth2Client(
        client_id,
        scope=scope,
        redirect_uri=CALLBACK,
        code_challenge_method="S256",
        token_endpoint_auth_method=kwargs.pop("token_endpoint_auth_method", "none"),
        **kwargs,
    )


def _standalone(world: World, scope: str, *, role: str = "practitioner") -> tuple[Any, Any]:
    """A standalone launch; returns (token, the authlib client)."""
    app = register_client(world.auth, "public", scope)
    fhir_user = f"Practitioner/{world.practitioner}" if role == "practitioner" else (
        f"Patient/{world.patient_a}")  # fmt: skip
    user = register_user(world.auth, role, fhir_user)
    oauth = _oauth(world, app.client_id, scope)
    verifier = secrets.token_urlsafe(48)
    url, state = oauth.create_authorization_url(
        f"{world.root}/auth/authorize", code_verifier=verifier, aud=world.base
    )
    back = Browser(world.root).sign_in(url, user, patient=world.patient_a)
    assert query_of(back)["state"] == state
    token = oauth.fetch_token(
        f"{world.root}/auth/token", authorization_response=back, code_verifier=verifier
    )
    return token, oauth


def _get(world: World, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{world.base}/{path}", headers={"Authorization": f"Bearer {token}"})


def test_standalone_launch_with_pkce(world: World) -> None:
    scope = "launch/patient openid fhirUser patient/*.rs offline_access"
    token, _ = _standalone(world, scope)
    assert token["token_type"] == "Bearer" and isinstance(token["expires_in"], int)
    assert token["patient"] == world.patient_a
    assert token["need_patient_banner"] is True and token["smart_style_url"]
    assert set(token["scope"].split()) == set(scope.split())
    assert token["refresh_token"]
    # The id_token: RS256 with our kid, verifiable with the published JWKS.
    keys = KeySet.import_key_set(httpx.get(f"{world.root}/auth/jwks").json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["iss"] == world.base and claims["aud"]
    assert claims["fhirUser"] == f"{world.base}/Practitioner/{world.practitioner}"
    assert {"sub", "exp", "iat"} <= set(claims)
    access = token["access_token"]
    # In the patient's compartment, and the fhirUser resource itself: readable.
    assert _get(world, access, f"Patient/{world.patient_a}").status_code == 200
    assert _get(world, access, f"Observation/{world.obs_a}").status_code == 200
    assert _get(world, access, f"Practitioner/{world.practitioner}").status_code == 200
    # Another patient's data: refused.
    assert _get(world, access, f"Patient/{world.patient_b}").status_code == 403
    assert _get(world, access, f"Observation/{world.obs_b}").status_code == 403
    # Writes are not in patient/*.rs.
    response = httpx.post(
        f"{world.base}/Observation",
        json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        headers={"Authorization": f"Bearer {access}"},
    )
    assert response.status_code == 403


def test_ehr_launch_binds_patient_and_encounter(world: World, auth_headers: dict[str, str]) -> None:
    encounter = httpx.post(
        f"{world.base}/Encounter",
        json={"resourceType": "Encounter", "status": "in-progress",
              "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB"}, "subject": {"reference": f"Patient/{world.patient_b}"}},
        headers=auth_headers,
    ).json()["id"]  # fmt: skip
    made = httpx.post(
        f"{world.root}/auth/launch",
        json={"patient": world.patient_b, "encounter": encounter},
        headers=auth_headers,
    )
    assert made.status_code == 201, made.text
    launch = made.json()["launch"]
    scope = "launch openid fhirUser patient/*.rs"
    app = register_client(world.auth, "public", scope)
    user = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    oauth = _oauth(world, app.client_id, scope)
    verifier = secrets.token_urlsafe(48)
    url, state = oauth.create_authorization_url(
        f"{world.root}/auth/authorize", code_verifier=verifier, aud=world.base, launch=launch
    )
    back = Browser(world.root).sign_in(url, user)  # no picker: the EHR chose the patient
    token = oauth.fetch_token(
        f"{world.root}/auth/token", authorization_response=back, code_verifier=verifier
    )
    assert token["patient"] == world.patient_b and token["encounter"] == encounter
    assert token["need_patient_banner"] is False
    assert _get(world, token["access_token"], f"Patient/{world.patient_b}").status_code == 200
    assert _get(world, token["access_token"], f"Patient/{world.patient_a}").status_code == 403


def test_refresh_rotates_and_reuse_revokes_the_family(world: World) -> None:
    token, oauth = _standalone(world, "launch/patient patient/*.rs offline_access")
    first_refresh = token["refresh_token"]
    refreshed = oauth.refresh_token(f"{world.root}/auth/token", refresh_token=first_refresh)
    assert refreshed["refresh_token"] != first_refresh
    assert refreshed["patient"] == world.patient_a
    assert _get(world, refreshed["access_token"], f"Patient/{world.patient_a}").status_code == 200
    # Using the spent refresh token again: refused, and everything of the grant revoked.
    reuse = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first_refresh,
              "client_id": oauth.client_id},
    )  # fmt: skip
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert _get(world, refreshed["access_token"], f"Patient/{world.patient_a}").status_code == 401
    again = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"],
              "client_id": oauth.client_id},
    )  # fmt: skip
    assert again.status_code == 400


def test_refresh_cannot_widen_scopes(world: World) -> None:
    token, oauth = _standalone(world, "launch/patient patient/Patient.rs offline_access")
    wider = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"],
              "client_id": oauth.client_id, "scope": "patient/*.cruds offline_access"},
    )  # fmt: skip
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    narrower = oauth.refresh_token(
        f"{world.root}/auth/token", refresh_token=token["refresh_token"],
        scope="patient/Patient.rs offline_access",
    )  # fmt: skip
    assert narrower["scope"].split() == ["patient/Patient.rs", "offline_access"]


def test_token_response_is_not_cached(world: World) -> None:
    app = register_client(world.auth, "public", "launch/patient patient/*.rs")
    user = register_user(world.auth, "patient", f"Patient/{world.patient_a}")
    verifier = secrets.token_urlsafe(48)
    oauth = _oauth(world, app.client_id, "launch/patient patient/*.rs")
    url, _ = oauth.create_authorization_url(
        f"{world.root}/auth/authorize", code_verifier=verifier, aud=world.base
    )
    back = Browser(world.root).sign_in(url, user)  # a patient user: no picker
    response = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "authorization_code", "code": query_of(back)["code"],
              "redirect_uri": CALLBACK, "code_verifier": verifier, "client_id": app.client_id},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.json()["patient"] == world.patient_a


def test_confidential_client_introspects_and_revokes(world: World) -> None:
    scope = "launch/patient patient/*.rs offline_access"
    app = register_client(world.auth, "confidential", scope)
    user = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    oauth = _oauth(
        world, app.client_id, scope, client_secret=app.client_secret,
        token_endpoint_auth_method="client_secret_basic",
    )  # fmt: skip
    verifier = secrets.token_urlsafe(48)
    url, _ = oauth.create_authorization_url(
        f"{world.root}/auth/authorize", code_verifier=verifier, aud=world.base
    )
    back = Browser(world.root).sign_in(url, user, patient=world.patient_a)
    token = oauth.fetch_token(
        f"{world.root}/auth/token", authorization_response=back, code_verifier=verifier
    )
    seen = oauth.introspect_token(f"{world.root}/auth/introspect", token=token["access_token"])
    details = seen.json()
    assert details["active"] is True and details["client_id"] == app.client_id
    assert details["patient"] == world.patient_a and details["iss"] == world.base
    assert {"scope", "exp", "sub"} <= set(details)
    unknown = oauth.introspect_token(f"{world.root}/auth/introspect", token="not-a-token")
    assert unknown.json() == {"active": False}
    # Revocation: 200 for an unknown token, and afterwards the real ones stop working.
    assert oauth.revoke_token(f"{world.root}/auth/revoke", token="nope").status_code == 200
    done = oauth.revoke_token(f"{world.root}/auth/revoke", token=token["access_token"])
    assert done.status_code == 200
    assert _get(world, token["access_token"], f"Patient/{world.patient_a}").status_code == 401
    again = oauth.introspect_token(f"{world.root}/auth/introspect", token=token["access_token"])
    assert again.json() == {"active": False}
    refused = httpx.post(
        f"{world.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(app.client_id, app.client_secret or ""),
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


# ---------------------------------------------------------------------- backend services


@pytest.fixture(scope="module", params=["RS384", "ES384"])
def backend(request: pytest.FixtureRequest, world: World) -> Iterator[tuple[str, Any, str]]:
    alg = request.param
    kid = uuid.uuid4().hex[:8]
    key: Any = (
        RSAKey.generate_key(2048, parameters={"kid": kid})
        if alg == "RS384"
        else ECKey.generate_key("P-384", parameters={"kid": kid})
    )
    jwks = {"keys": [key.as_dict(private=False)]}
    app = register_client(world.auth, "backend", "system/*.rs system/Observation.c", jwks=jwks)
    yield app.client_id, key, alg


class SmartKeyJWT(PrivateKeyJWT):  # type: ignore[misc]
    """authlib's private_key_jwt, with SMART's 5-minute cap on exp (authlib signs for an
    hour by default) and a fresh claims dict per assertion (authlib stores the jti in it)."""

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        self.claims = {"exp": int(time.time()) + 240}
        return super().sign(auth, token_endpoint)


def _backend_client(world: World, client_id: str, key: Any, alg: str) -> OAuth2Client:
    token_url = f"{world.root}/auth/token"
    return OAuth2Client(
        client_id,
        client_secret=key,
        token_endpoint_auth_method=SmartKeyJWT(token_url, alg=alg, headers={"kid": key.kid}),
    )


def test_backend_services_signed_assertion(world: World, backend: tuple[str, Any, str]) -> None:
    client_id, key, alg = backend
    oauth = _backend_client(world, client_id, key, alg)
    token = oauth.fetch_token(
        f"{world.root}/auth/token", grant_type="client_credentials", scope="system/Patient.rs"
    )
    assert token["scope"] == "system/Patient.rs" and "refresh_token" not in token
    access = token["access_token"]
    # System scope: every patient, no compartment.
    assert _get(world, access, f"Patient/{world.patient_a}").status_code == 200
    assert _get(world, access, f"Patient/{world.patient_b}").status_code == 200
    # Not granted: Observation (asked only for Patient), audit trail.
    assert _get(world, access, f"Observation/{world.obs_a}").status_code == 403
    assert _get(world, access, "AuditEvent").status_code == 403


def _lifetime(world: World, access_token: str) -> int:
    keys = KeySet.import_key_set(httpx.get(f"{world.root}/auth/jwks").json())
    claims = jwt.decode(access_token, keys, algorithms=["RS256"]).claims
    return int(claims["exp"]) - int(claims["iat"])


def test_backend_tokens_live_five_minutes_and_user_tokens_keep_theirs(
    world: World, backend: tuple[str, Any, str]
) -> None:
    """SMART Backend Services: the access token is short-lived, expires_in SHOULD NOT exceed
    300 (MEDISENTINEL_BACKEND_ACCESS_TOKEN_SECONDS); a user's token keeps
    MEDISENTINEL_ACCESS_TOKEN_SECONDS. Both in expires_in and in the JWT's exp."""
    client_id, key, alg = backend
    oauth = _backend_client(world, client_id, key, alg)
    backend_token = oauth.fetch_token(
        f"{world.root}/auth/token", grant_type="client_credentials", scope="system/Patient.rs"
    )
    assert backend_token["expires_in"] == 300
    assert _lifetime(world, backend_token["access_token"]) == 300
    user_token, _ = _standalone(world, "launch/patient patient/*.rs")
    assert user_token["expires_in"] == 3600
    assert _lifetime(world, user_token["access_token"]) == 3600


def test_backend_scope_beyond_registration_is_invalid_scope(
    world: World, backend: tuple[str, Any, str]
) -> None:
    client_id, key, alg = backend
    oauth = _backend_client(world, client_id, key, alg)
    with pytest.raises(AuthlibOAuthError) as refused:
        oauth.fetch_token(
            f"{world.root}/auth/token", grant_type="client_credentials", scope="system/*.cruds"
        )
    assert refused.value.error == "invalid_scope"


def test_backend_token_with_the_cli_style_local_issue(world: World) -> None:
    """`medisentinel token` issues without the round trip; the token works the same way."""
    app = register_client(world.auth, "backend", "system/Patient.rs", jwks={"keys": []})
    issued = world.auth.local_token(app.name, "system/Patient.rs")
    access = str(issued["access_token"])
    assert _get(world, access, f"Patient/{world.patient_a}").status_code == 200
    assert isinstance(issued["expires_in"], int) and issued["expires_in"] > time.time() * 0


def test_a_rotation_elsewhere_is_followed_without_restart(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys rotate` in another process: this server signs with the new key soon after, and
    tokens signed with the old one keep working."""
    from app.auth import keys as keys_module

    app = register_client(world.auth, "backend", "system/Patient.rs", jwks={"keys": []})
    before = str(world.auth.local_token(app.name, "system/Patient.rs")["access_token"])
    other_process = keys_module.KeyStore(world.auth.engine, world.auth.keys.sealer)
    new_kid = other_process.rotate(keep_for_seconds=3600)
    monkeypatch.setattr(keys_module, "RECHECK_SECONDS", 0)
    after = str(world.auth.local_token(app.name, "system/Patient.rs")["access_token"])
    header = jwt.decode(
        after,
        KeySet.import_key_set(httpx.get(f"{world.root}/auth/jwks").json()),
        algorithms=["RS256"],
    ).header
    assert header["kid"] == new_kid
    assert _get(world, before, f"Patient/{world.patient_a}").status_code == 200
    assert _get(world, after, f"Patient/{world.patient_a}").status_code == 200


def test_authorize_by_post_and_online_access(world: World) -> None:
    """authorize-post and permission-online: the same request as a form POST; online_access
    gives a refresh token too."""
    scope = "launch/patient patient/Patient.rs online_access"
    app = register_client(world.auth, "public", scope)
    user = register_user(world.auth, "patient", f"Patient/{world.patient_a}")
    verifier = secrets.token_urlsafe(48)
    oauth = _oauth(world, app.client_id, scope)
    url, state = oauth.create_authorization_url(
        f"{world.root}/auth/authorize", code_verifier=verifier, aud=world.base
    )
    browser = Browser(world.root)
    query = url.split("?", 1)[1]
    started = browser.http.post(
        "/auth/authorize", content=query,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert started.status_code == 303 and "/auth/login" in started.headers["location"]
    back = browser.sign_in(url, user)
    token = oauth.fetch_token(
        f"{world.root}/auth/token", authorization_response=back, code_verifier=verifier
    )
    assert token["refresh_token"] and "online_access" in token["scope"].split()


def test_confidential_asymmetric_client_uses_a_signed_assertion(world: World) -> None:
    """client-confidential-asymmetric: an app with registered keys, private_key_jwt at the
    token endpoint of the authorization code flow."""
    key = ECKey.generate_key("P-384", parameters={"kid": uuid.uuid4().hex[:8]})
    scope = "launch/patient patient/*.rs"
    app = register_client(
        world.auth, "confidential", scope, jwks={"keys": [key.as_dict(private=False)]}
    )
    assert app.client_secret is None  # keys, not a secret
    user = register_user(world.auth, "practitioner", f"Practitioner/{world.practitioner}")
    token_url = f"{world.root}/auth/token"
    oauth = OAuth2Client(
        app.client_id, client_secret=key, scope=scope, redirect_uri=CALLBACK,
        code_challenge_method="S256",
        token_endpoint_auth_method=SmartKeyJWT(token_url, alg="ES384", headers={"kid": key.kid}),
    )  # fmt: skip
    verifier = secrets.token_urlsafe(48)
    url, _ = oauth.create_authorization_url(
        f"{world.root}/auth/authorize", code_verifier=verifier, aud=world.base
    )
    back = Browser(world.root).sign_in(url, user, patient=world.patient_b)
    token = oauth.fetch_token(token_url, authorization_response=back, code_verifier=verifier)
    assert token["patient"] == world.patient_b
    # Without the assertion the same kind of request is refused.
    refused = httpx.post(
        token_url, data={"grant_type": "authorization_code", "code": "x",
                         "client_id": app.client_id},
    )  # fmt: skip
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
