"""What a client registration may hold (RFC 7591 section 2 and its error codes), checked in one
place for the command line and `POST /auth/clients`: names and URIs of the right shape, and
public keys only. Before, the API stored whatever JSON it was given: private key members
(echoed back by every listing), a redirect URI string split into characters, `javascript:`
and fragment URIs, a `file:` jwks_uri, and a jwks that was no object was a 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from app.auth.errors import OAuthError

# JWK members that carry private or symmetric key material: never registered for a client.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# Key types an assertion may be signed with (assertions.py allows RS384 and ES384).
KEY_TYPES = frozenset({"RSA", "EC"})
# Schemes a browser would run or read locally rather than send the user to an app.
_UNSAFE_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "about", "blob"})


def _metadata_error(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise _metadata_error("client_name must be a non-empty string of at most 200 characters")
    return name


def check_redirect_uris(value: Any) -> list[str]:
    """RFC 6749 section 3.1.2: absolute URIs without a fragment. An app's own scheme
    (RFC 8252 section 7.1, `com.example.app:/cb`) is allowed; schemes a browser would run
    itself are not."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(uri, str) for uri in value):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be a list of strings")
    for uri in value:
        problem = _uri_problem(uri, web_only=False)
        if problem:
            raise OAuthError("invalid_redirect_uri", f"redirect URI {uri[:80]!r} {problem}")
    return list(value)


def check_web_uri(name: str, uri: Any) -> str | None:
    """launch_uri and jwks_uri: None, or an absolute http(s) URL without a fragment."""
    if uri is None:
        return None
    problem = "must be a string" if not isinstance(uri, str) else _uri_problem(uri, web_only=True)
    if problem:
        raise _metadata_error(f"{name} {problem}")
    return str(uri)


def check_jwks(jwks: Any) -> dict[str, Any] | None:
    """A JWK Set of public RSA or EC keys (what private_key_jwt is verified with)."""
    if jwks is None:
        return None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise _metadata_error("jwks must be a JWK Set ({'keys': [...]})")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in KEY_TYPES:
            raise _metadata_error("every key of jwks must be a JWK object of kty RSA or EC")
        if PRIVATE_MEMBERS & key.keys():
            raise _metadata_error("jwks holds private key material: register the public keys")
    return jwks


def _uri_problem(uri: str, *, web_only: bool) -> str | None:
    if len(uri) > 2000 or any(ch.isspace() or ord(ch) < 0x20 for ch in uri):
        return "is too long or holds spaces or control characters"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "is not a URI"
    scheme = parts.scheme.lower()
    if not scheme:
        return "must be absolute"
    if "#" in uri:
        return "must not have a fragment"
    if scheme in ("http", "https"):
        return None if parts.hostname else "must name a host"
    if web_only:
        return "must be an http(s) URL"
    return f"may not use the {scheme}: scheme" if scheme in _UNSAFE_SCHEMES else None
