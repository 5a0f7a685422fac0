"""Discovery documents: SMART App Launch 2.x `.well-known/smart-configuration` and OpenID
Connect Discovery. The capabilities listed are the ones the tests exercise."""

from __future__ import annotations

from typing import Any

from app.auth.assertions import ALLOWED_ALGORITHMS
from app.auth.keys import ALGORITHM
from app.settings import Settings

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
]
# Wildcards never reach AuditEvent (docs/smart.md): its scopes are listed by name.
SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "offline_access", "online_access",
    "patient/*.rs", "patient/*.cud", "patient/*.cruds", "user/*.rs", "user/*.cud",
    "user/*.cruds", "system/*.rs", "system/*.cud", "system/*.cruds",
    "patient/*.read", "patient/*.write", "user/*.read", "user/*.write", "system/*.read",
    "system/*.write", "user/AuditEvent.rs", "system/AuditEvent.rs",
]  # fmt: skip


def endpoints(settings: Settings) -> dict[str, str]:
    root = settings.server_root
    return {
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
        "introspection_endpoint": f"{root}/auth/introspect",
        "revocation_endpoint": f"{root}/auth/revoke",
        "jwks_uri": f"{root}/auth/jwks",
    }


def smart_configuration(settings: Settings) -> dict[str, Any]:
    return {
        "issuer": settings.fhir_base_url,
        **endpoints(settings),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],  # fmt: skip
        "token_endpoint_auth_signing_alg_values_supported": list(ALLOWED_ALGORITHMS),
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(settings: Settings) -> dict[str, Any]:
    return {
        "issuer": settings.fhir_base_url,
        **endpoints(settings),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],  # fmt: skip
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        # Request objects are refused (authorize.py); left out, request_uri would read as
        # supported (OpenID Connect Discovery 1.0: its default is true).
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
