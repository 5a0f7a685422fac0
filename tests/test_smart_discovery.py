"""Discovery documents, the CapabilityStatement's security, CORS, the admin API, and the
scope grammar (v1 and v2) as the enforcement reads it."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.auth.errors import OAuthError
from app.auth.scopes import narrow, parse_scope, parse_scopes
from tests.conftest import LiveServer
from tests.smart_helpers import register_client


def test_smart_configuration_has_the_required_fields(live_server: LiveServer) -> None:
    base = live_server.base_url
    config = httpx.get(f"{base}/.well-known/smart-configuration").json()
    for field in ("issuer", "jwks_uri", "authorization_endpoint", "token_endpoint",
                  "grant_types_supported", "token_endpoint_auth_methods_supported",
                  "scopes_supported", "response_types_supported", "capabilities",
                  "code_challenge_methods_supported", "introspection_endpoint",
                  "revocation_endpoint"):  # fmt: skip
        assert field in config, field
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    keys = httpx.get(config["jwks_uri"]).json()["keys"]
    assert keys and all("d" not in k and k["kid"] for k in keys)
    oidc = httpx.get(f"{base}/.well-known/openid-configuration").json()
    assert oidc["issuer"] == config["issuer"] == base
    assert httpx.get(f"{live_server.settings.server_root}/.well-known/openid-configuration").json()[
        "jwks_uri"
    ] == config["jwks_uri"]  # fmt: skip
    style = httpx.get(f"{base}/.well-known/smart-style.json").json()
    assert style["color_background"]


def test_capability_statement_declares_smart(live_server: LiveServer) -> None:
    statement = httpx.get(f"{live_server.base_url}/metadata").json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    root = live_server.settings.server_root
    assert uris["token"] == f"{root}/auth/token"
    assert uris["authorize"] == f"{root}/auth/authorize"


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/Patient", "/auth/token",
                                  "/fhir/.well-known/smart-configuration"])  # fmt: skip
def test_cors_for_browser_apps(live_server: LiveServer, path: str) -> None:
    origin = "https://app.example"
    preflight = httpx.options(
        f"{live_server.settings.server_root}{path}",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", origin)
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


def test_admin_api_registers_clients_with_a_system_token(
    live_server: LiveServer, auth_headers: dict[str, str]
) -> None:
    url = f"{live_server.settings.server_root}/auth/clients"
    name = f"api-registered-{uuid.uuid4().hex[:8]}"
    body = {"client_name": name, "kind": "confidential",
            "scope": "patient/*.rs", "redirect_uris": ["https://app.example/cb"]}  # fmt: skip
    assert httpx.post(url, json=body).status_code == 401
    created = httpx.post(url, json=body, headers=auth_headers)
    assert created.status_code == 201, created.text
    assert created.json()["client_secret"] and created.json()["client_id"]
    listed = httpx.get(url, headers=auth_headers).json()
    mine = [c for c in listed if c["client_name"] == name]
    assert mine and "client_secret" not in mine[0]
    # A token without a system scope may not register clients.
    auth = live_server.app.state.auth
    narrow_app = register_client(auth, "backend", "system/Patient.rs", jwks={"keys": []})
    weak = auth.local_token(narrow_app.name, "system/Patient.rs")["access_token"]
    refused = httpx.post(url, json={**body, "client_name": "x"},
                         headers={"Authorization": f"Bearer {weak}"})  # fmt: skip
    assert refused.status_code == 403


def test_v1_scopes_read_as_their_v2_equivalents() -> None:
    assert parse_scope("patient/Observation.read").permissions == frozenset("rs")  # type: ignore[union-attr]
    assert parse_scope("user/*.write").permissions == frozenset("cud")  # type: ignore[union-attr]
    assert parse_scope("system/*.*").permissions == frozenset("cruds")  # type: ignore[union-attr]
    v2 = parse_scope("patient/Observation.rs?category=laboratory")
    assert v2 is not None and v2.query == (("category", "laboratory"),)
    scopes = parse_scopes("patient/*.read launch/patient openid unknown-thing")
    assert scopes.matching("Observation", "s") and not scopes.matching("Observation", "c")
    assert "openid" in scopes and "unknown-thing" not in scopes.others
    # The audit trail is never reached by a wildcard.
    assert not parse_scopes("system/*.cruds").matching("AuditEvent", "r")
    assert parse_scopes("system/AuditEvent.rs").matching("AuditEvent", "r")


@pytest.mark.parametrize("bad", ["patient/Observation.x", "patient/Observation.sr",
                                 "patient/observation.rs", "user/*.read?category=x"])  # fmt: skip
def test_malformed_scopes_are_refused(bad: str) -> None:
    with pytest.raises(OAuthError):
        parse_scope(bad)


def test_narrowing_grants_only_what_the_registration_covers() -> None:
    granted, refused = narrow("patient/Observation.rs patient/Patient.cruds openid",
                              "patient/*.read openid")  # fmt: skip
    assert [s.text for s in granted.resources] == ["patient/Observation.rs"]
    assert refused == ["patient/Patient.cruds"] and "openid" in granted
