"""Client authentication with a signed JWT, `private_key_jwt` (RFC 7523 section 2.2), as SMART
App Launch 2.x Backend Services profiles it: checked only against the public keys the client
registered (inline `jwks`, or its registered `jwks_uri`), never keys or URLs named by the token.

Why joserfc rather than python-jose: python-jose had an algorithm confusion (CVE-2024-33663: an
HMAC "signature" keyed with a public key) and a decompression DoS (CVE-2024-33664). joserfc takes
an explicit algorithm list and refuses a key whose type does not fit the algorithm. Neither
authlib nor joserfc enforces single use of `jti` or SMART's 5-minute cap on `exp`: hence here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, Key, RSAKey
from sqlalchemy import Connection, Insert, delete
from sqlalchemy.dialects import postgresql, sqlite

from app.auth import secrets
from app.auth.clients import ClientRecord
from app.auth.errors import invalid_client
from app.auth.tables import used_assertion

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALLOWED_ALGORITHMS = ("RS384", "ES384")  # SMART requires these; an explicit allowlist
MAX_LIFETIME_SECONDS = 300
LEEWAY_SECONDS = 60  # small clock skew
JWKS_CACHE_SECONDS = 300
JWKS_REFETCH_AFTER_SECONDS = 10  # an unknown kid re-fetches a jwks_uri at most this often
JWKS_TIMEOUT_SECONDS = 5.0
_JWKS_MAX_BYTES = 256 * 1024
_MAX_ASSERTION_CHARS = 16 * 1024
_KEY_TYPES = {"RS384": ("RSA", None), "ES384": ("EC", "P-384")}  # alg -> (kty, crv)
_REFUSED_HEADERS = {  # keys, or URLs of keys, named by the token itself; JWS extensions
    **dict.fromkeys(("jwk", "x5u", "x5c"), "is refused: keys come from registration"),
    **dict.fromkeys(("b64", "crit"), "is not supported"),
}
_JTI_KEY = ("client_id", "jti")

_jwks_cache: dict[str, tuple[float, dict[str, Any]]] = {}  # uri -> (fetched at, JWK Set)


class JwksFetcher(Protocol):
    def __call__(self, uri: str) -> dict[str, Any]: ...  # returns a JWK Set


def fetch_jwks(uri: str) -> dict[str, Any]:
    """Default fetcher: GET the JWK Set at a client's registered jwks_uri, cached per URI."""
    cached = _jwks_cache.get(uri)
    if cached and time.monotonic() - cached[0] < JWKS_CACHE_SECONDS:
        return cached[1]
    jwks = _download_jwks(uri)
    _jwks_cache[uri] = (time.monotonic(), jwks)
    return jwks


def _download_jwks(uri: str) -> dict[str, Any]:
    try:
        with httpx.stream("GET", uri, timeout=JWKS_TIMEOUT_SECONDS) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _JWKS_MAX_BYTES:
                    raise invalid_client("the client's jwks_uri returned too large a document")
        jwks = json.loads(body)
    except (httpx.HTTPError, ValueError) as error:
        reason = type(error).__name__
        raise invalid_client(f"could not fetch the client's JWK Set ({reason})") from error
    if not _is_jwk_set(jwks):
        raise invalid_client("the client's jwks_uri did not return a JWK Set")
    return jwks


def _forget_jwks(uri: str) -> None:
    """Let an unknown kid re-fetch the set (a key rotation), but not on every request."""
    cached = _jwks_cache.get(uri)
    if cached and time.monotonic() - cached[0] >= JWKS_REFETCH_AFTER_SECONDS:
        _jwks_cache.pop(uri, None)


def verify_client_assertion(
    assertion: str,
    *,
    token_url: str,
    load_client: Callable[[str], ClientRecord | None],
    conn: Connection,
    fetch: JwksFetcher = fetch_jwks,
    now: int | None = None,
) -> ClientRecord:
    """Verify a client assertion JWT and return the client it authenticates, or raise
    invalid_client(...) (OAuthError, status 401) saying which rule failed."""
    current = secrets.now() if now is None else now
    header, unverified = _parse_unverified(assertion)
    alg = _check_header(header)
    client = _load_client(unverified, load_client)
    jku = header.get("jku")
    if jku is not None and jku != client.jwks_uri:
        raise invalid_client("the jku header is not the client's registered jwks_uri")
    key = _find_key(header.get("kid"), alg, client, fetch)
    claims = _verified_claims(assertion, key, alg)
    jti, exp = _check_claims(claims, client.client_id, token_url, current)
    _record_jti(conn, client.client_id, jti, exp, current)  # last: only valid assertions count
    return client


def _parse_unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before the signature is checked: only to find the client and key."""
    if not isinstance(assertion, str) or len(assertion) > _MAX_ASSERTION_CHARS:
        raise invalid_client("client_assertion must be a compact JWS of reasonable size")
    try:
        obj = jws.extract_compact(assertion.encode("ascii"))
        claims = json.loads(obj.payload)
    except (JoseError, ValueError) as error:
        code = getattr(error, "error", "") or "not JSON"
        raise invalid_client(f"client_assertion is not a well-formed JWT ({code})") from error
    header = obj.headers()
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise invalid_client("client_assertion header and claims must be JSON objects")
    return header, claims


def _check_header(header: dict[str, Any]) -> str:
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        hint = " (HMAC with a public key is refused)" if str(alg).startswith("HS") else ""
        allowed = " or ".join(ALLOWED_ALGORITHMS)
        raise invalid_client(f"alg {_show(alg)} is not allowed{hint}; sign with {allowed}")
    refused = sorted(header.keys() & _REFUSED_HEADERS.keys())
    if refused:
        raise invalid_client(f"the {refused[0]} header {_REFUSED_HEADERS[refused[0]]}")
    if "kid" in header and not isinstance(header["kid"], str):
        raise invalid_client("the kid header must be a string")
    return str(alg)


def _load_client(
    claims: dict[str, Any], load_client: Callable[[str], ClientRecord | None]
) -> ClientRecord:
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not iss or not isinstance(sub, str) or not sub:
        raise invalid_client("iss and sub claims are required (both the client_id)")
    if iss != sub:
        raise invalid_client("iss and sub must be equal (both the client_id)")
    client = load_client(iss)
    if client is None:
        raise invalid_client("unknown client (iss/sub)")
    if not client.uses_key_assertion:
        raise invalid_client("this client has no registered keys (jwks or jwks_uri)")
    return client


def _find_key(kid: str | None, alg: str, client: ClientRecord, fetch: JwksFetcher) -> Key:
    jwk = _select(_registered_keys(client, fetch), kid, alg)
    if jwk is None and client.jwks is None and client.jwks_uri:
        _forget_jwks(client.jwks_uri)  # a rotated key: look at the set once more
        jwk = _select(_registered_keys(client, fetch), kid, alg)
    if jwk is None:
        raise invalid_client(f"no registered key of this client has kid {_show(kid)}")
    return _import_key(jwk, alg)


def _registered_keys(client: ClientRecord, fetch: JwksFetcher) -> list[dict[str, Any]]:
    jwks = client.jwks
    if jwks is None and client.jwks_uri:
        try:
            jwks = fetch(client.jwks_uri)
        except (httpx.HTTPError, OSError, ValueError) as error:
            raise invalid_client("could not fetch the client's JWK Set") from error
    if jwks is None or not _is_jwk_set(jwks):
        raise invalid_client("the client's registered JWK Set is malformed")
    return [k for k in jwks["keys"] if isinstance(k, dict)]


def _select(keys: list[dict[str, Any]], kid: str | None, alg: str) -> dict[str, Any] | None:
    """The key the header names; None when the kid is unknown."""
    if kid is None:
        if len(keys) != 1:
            raise invalid_client("a kid header is required (the client has several or no keys)")
        return keys[0]
    named = [k for k in keys if k.get("kid") == kid]
    named.sort(key=lambda k: not _fits(k, alg))  # a key that fits the alg first
    return named[0] if named else None


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    kty, crv = _KEY_TYPES[alg]
    return jwk.get("kty") == kty and (crv is None or jwk.get("crv") == crv)


def _import_key(jwk: dict[str, Any], alg: str) -> Key:
    if not _fits(jwk, alg):
        kty, crv = _KEY_TYPES[alg]
        wanted = f"{kty} {crv}" if crv else kty
        found = f"{_show(jwk.get('kty'))} {_show(jwk.get('crv'))}" if crv else _show(jwk.get("kty"))
        raise invalid_client(f"key type mismatch: {alg} needs an {wanted} key, not {found}")
    try:
        key: Key = RSAKey.import_key(jwk) if alg.startswith("RS") else ECKey.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise invalid_client("the client's registered key could not be read") from error
    if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:
        raise invalid_client("the client's RSA key is shorter than 2048 bits")
    return key


def _verified_claims(assertion: str, key: Key, alg: str) -> dict[str, Any]:
    try:
        return jwt.decode(assertion, key, algorithms=[alg]).claims
    except BadSignatureError as error:
        raise invalid_client("the signature does not verify with the client's key") from error
    except (JoseError, ValueError) as error:
        code = getattr(error, "error", "") or type(error).__name__
        raise invalid_client(f"the assertion was refused ({code})") from error


def _check_claims(
    claims: dict[str, Any], client_id: str, token_url: str, now: int
) -> tuple[str, int]:
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise invalid_client("iss and sub must be the client_id")
    aud = claims.get("aud")
    if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
        raise invalid_client("aud must be this server's token endpoint URL")
    exp = _timestamp(claims, "exp")
    if exp is None:
        raise invalid_client("the exp claim is required")
    if exp < now - LEEWAY_SECONDS:
        raise invalid_client("the assertion has expired (exp is in the past)")
    # SMART Backend Services: exp SHALL be no more than five minutes in the future. The clock
    # skew leeway applies where it shortens nothing (an assertion just past its exp, an iat a
    # little ahead); it never lengthens the replay window the cap bounds.
    if exp > now + MAX_LIFETIME_SECONDS:
        limit = MAX_LIFETIME_SECONDS
        raise invalid_client(f"far-future assertion: exp may be at most {limit} s from now")
    for name in ("iat", "nbf"):
        value = _timestamp(claims, name)
        if value is not None and value > now + LEEWAY_SECONDS:
            raise invalid_client(f"the {name} claim is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise invalid_client("the jti claim is required: a string of 1 to 255 characters")
    return jti, math.ceil(exp)


def _timestamp(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_client(f"the {name} claim must be a number of seconds since the epoch")
    return float(value)


def _record_jti(conn: Connection, client_id: str, jti: str, exp: int, now: int) -> None:
    """Single use: a replayed jti is refused until its exp has passed (then exp refuses it)."""
    conn.execute(delete(used_assertion).where(used_assertion.c.expires_at < now - LEEWAY_SECONDS))
    values = {"client_id": client_id, "jti": jti, "expires_at": exp}
    if conn.execute(_new_jti_statement(conn.dialect.name, values)).first() is None:
        raise invalid_client("this assertion's jti was already used (replay refused)")


def _new_jti_statement(dialect: str, values: dict[str, Any]) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: a duplicate returns no row, and raises no
    error that would abort a PostgreSQL transaction. RETURNING rather than rowcount: psycopg
    reports -1 for it (as in app/fhir/storage.py). The project runs on SQLite or PostgreSQL."""
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(used_assertion).values(**values)
    return statement.on_conflict_do_nothing(index_elements=_JTI_KEY).returning(used_assertion.c.jti)


def _is_jwk_set(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("keys"), list)


def _show(value: Any) -> str:
    """A header value for a message, shortened: never echo much of what the client sent."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
