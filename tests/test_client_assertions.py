"""private_key_jwt client authentication (RFC 7523, SMART Backend Services): real RSA and EC
keys, a real migrated database (SQLite, or PostgreSQL in CI), and a real loopback HTTP server
for the jwks_uri case."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from app.auth import assertions
from app.auth.assertions import JwksFetcher, fetch_jwks, verify_client_assertion
from app.auth.clients import ClientRecord
from app.auth.errors import OAuthError
from app.auth.tables import used_assertion
from app.db import create_db_engine, write_transaction

TOKEN_URL = "https://fhir.example.org/auth/token"


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "ec-1"})


def public_set(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def make_client(
    jwks: dict[str, Any] | None = None, jwks_uri: str | None = None, kind: str = "backend"
) -> ClientRecord:
    return ClientRecord(
        client_id=uuid.uuid4().hex,  # the session database is shared: never reuse an id
        name="test backend service",
        kind=kind,
        secret_hash=None,
        redirect_uris=(),
        launch_uri=None,
        scope="system/*.rs",
        jwks=jwks,
        jwks_uri=jwks_uri,
    )


def claims_for(client: ClientRecord, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def sign(
    key: Key,
    client: ClientRecord,
    alg: str = "RS384",
    header: dict[str, Any] | None = None,
    **changes: Any,
) -> str:
    protected = {"alg": alg, "kid": key.kid, **(header or {})}
    return jwt.encode(protected, claims_for(client, **changes), key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{b64(mac)}"


def verify(
    engine: Engine,
    assertion: str,
    *clients: ClientRecord,
    fetch: JwksFetcher | None = None,
    now: int | None = None,
) -> ClientRecord:
    """One token request: its own write transaction, like the token endpoint's."""
    known = {client.client_id: client for client in clients}
    extra: dict[str, Any] = {"fetch": fetch} if fetch else {}
    with engine.connect() as conn:
        conn = conn.execution_options(for_write=True)
        with conn.begin():
            return verify_client_assertion(
                assertion, token_url=TOKEN_URL, load_client=known.get, conn=conn, now=now, **extra
            )


def refused(engine: Engine, assertion: str, *clients: ClientRecord, **kw: Any) -> str:
    with pytest.raises(OAuthError) as caught:
        verify(engine, assertion, *clients, **kw)
    error = caught.value
    assert (error.error, error.status) == ("invalid_client", 401)
    assert assertion not in error.description and len(error.description) < 200
    return error.description


class FakeFetcher:
    """Our own fetch parameter: returns the given JWK Sets in turn, counting calls."""

    def __init__(self, *sets: dict[str, Any]) -> None:
        self.sets = list(sets)
        self.calls: list[str] = []

    def __call__(self, uri: str) -> dict[str, Any]:
        self.calls.append(uri)
        return self.sets[min(len(self.calls), len(self.sets)) - 1]


# ------------------------------------------------------------------ accepted


def test_valid_rs384_accepted(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    assert verify(engine, sign(rsa_key, client), client) == client


def test_valid_es384_accepted(engine: Engine, ec_key: ECKey) -> None:
    client = make_client(public_set(ec_key))
    assert verify(engine, sign(ec_key, client, "ES384"), client) == client


def test_aud_list_and_single_key_without_kid_accepted(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    claims = claims_for(client, aud=["https://other.example", TOKEN_URL])
    token = jwt.encode({"alg": "RS384"}, claims, rsa_key, algorithms=["RS384"])
    assert verify(engine, token, client) == client


def test_small_clock_skew_accepted(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    now = int(time.time())
    token = sign(rsa_key, client, exp=now - 30, iat=now - 200)
    assert verify(engine, token, client, now=now) == client


def test_jwks_uri_with_fake_fetcher(engine: Engine, rsa_key: RSAKey, ec_key: ECKey) -> None:
    client = make_client(jwks_uri="https://backend.example/jwks.json")
    fetch = FakeFetcher(public_set(rsa_key, ec_key))
    assert verify(engine, sign(ec_key, client, "ES384"), client, fetch=fetch) == client
    assert fetch.calls == ["https://backend.example/jwks.json"]


def test_rotated_key_found_by_one_refetch(engine: Engine, rsa_key: RSAKey) -> None:
    new_key = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    client = make_client(jwks_uri="https://backend.example/rotating.json")
    fetch = FakeFetcher(public_set(rsa_key), public_set(new_key))
    assert verify(engine, sign(new_key, client), client, fetch=fetch) == client
    assert len(fetch.calls) == 2


def test_matching_jku_header_accepted(engine: Engine, rsa_key: RSAKey) -> None:
    uri = "https://backend.example/jku.json"
    client = make_client(jwks_uri=uri)
    token = sign(rsa_key, client, header={"jku": uri})
    assert verify(engine, token, client, fetch=FakeFetcher(public_set(rsa_key))) == client


# ------------------------------------------------------------------ claims


def test_wrong_aud_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = sign(rsa_key, client, aud="https://elsewhere.example/token")
    assert "aud" in refused(engine, token, client)


def test_missing_exp_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    assert "exp claim is required" in refused(engine, sign(rsa_key, client, exp=None), client)


def test_expired_exp_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = sign(rsa_key, client, exp=int(time.time()) - 120, iat=int(time.time()) - 400)
    assert "expired" in refused(engine, token, client)


def test_non_numeric_exp_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = sign(rsa_key, client, exp="tomorrow")
    assert "exp claim must be a number" in refused(engine, token, client)


def test_far_future_exp_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = sign(rsa_key, client, exp=int(time.time()) + 600)
    assert "far-future" in refused(engine, token, client)


def test_exp_is_capped_at_five_minutes_without_leeway(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    now = int(time.time())
    assert verify(engine, sign(rsa_key, client, exp=now + 300), client, now=now) == client
    token = sign(rsa_key, client, exp=now + 330)
    assert "far-future" in refused(engine, token, client, now=now)


def test_future_iat_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = sign(rsa_key, client, iat=int(time.time()) + 200)
    assert "iat claim is in the future" in refused(engine, token, client)


def test_missing_jti_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    assert "jti" in refused(engine, sign(rsa_key, client, jti=None), client)


def test_reused_jti_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    jti = uuid.uuid4().hex
    verify(engine, sign(rsa_key, client, jti=jti), client)
    assert "replay" in refused(engine, sign(rsa_key, client, jti=jti), client)
    assert verify(engine, sign(rsa_key, client), client) == client  # another jti: fine
    other = make_client(public_set(rsa_key))  # single use is per client
    assert verify(engine, sign(rsa_key, other, jti=jti), other) == other


def test_expired_jtis_are_swept(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    old = int(time.time()) - assertions.LEEWAY_SECONDS - 10
    with write_transaction(engine) as conn:
        conn.execute(insert(used_assertion).values(client_id="gone", jti="j", expires_at=old))
    verify(engine, sign(rsa_key, client), client)
    with engine.connect() as conn:
        query = select(used_assertion).where(used_assertion.c.client_id == "gone")
        assert conn.execute(query).all() == []


def test_iss_not_sub_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client, other = make_client(public_set(rsa_key)), make_client(public_set(rsa_key))
    token = sign(rsa_key, client, sub=other.client_id)
    assert "iss and sub must be equal" in refused(engine, token, client, other)


def test_unknown_client_refused(engine: Engine, rsa_key: RSAKey) -> None:
    stranger = make_client(public_set(rsa_key))
    assert "unknown client" in refused(engine, sign(rsa_key, stranger))


def test_client_without_keys_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(kind="confidential")
    assert "no registered keys" in refused(engine, sign(rsa_key, client), client)


# ------------------------------------------------------------------ signature and header


def test_signature_by_another_key_refused(engine: Engine, rsa_key: RSAKey) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})  # same kid, other key
    client = make_client(public_set(rsa_key))
    assert "signature does not verify" in refused(engine, sign(impostor, client), client)


def test_alg_none_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = hand_made({"alg": "none", "typ": "JWT"}, claims_for(client), None)
    assert "alg 'none' is not allowed" in refused(engine, token, client)


def test_hmac_with_public_key_refused(engine: Engine, rsa_key: RSAKey) -> None:
    """The algorithm-confusion attack: HS256 keyed with the client's (public) PEM."""
    client = make_client(public_set(rsa_key))
    pem = rsa_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hand_made({"alg": "HS256", "kid": "rsa-1"}, claims_for(client), pem)
    assert "HMAC" in refused(engine, token, client)


def test_rs256_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    assert "'RS256' is not allowed" in refused(engine, sign(rsa_key, client, "RS256"), client)


def test_unknown_kid_refused_after_one_refetch(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(jwks_uri="https://backend.example/stale.json")
    fetch = FakeFetcher(public_set(rsa_key))
    token = sign(rsa_key, client, header={"kid": "nobody"})
    assert "kid 'nobody'" in refused(engine, token, client, fetch=fetch)
    assert len(fetch.calls) == 2


def test_unknown_kid_inline_jwks_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    token = sign(rsa_key, client, header={"kid": "nobody"})
    assert "kid 'nobody'" in refused(engine, token, client)


def test_kid_required_with_several_keys(engine: Engine, rsa_key: RSAKey, ec_key: ECKey) -> None:
    client = make_client(public_set(rsa_key, ec_key))
    token = jwt.encode({"alg": "RS384"}, claims_for(client), rsa_key, algorithms=["RS384"])
    assert "kid header is required" in refused(engine, token, client)


def test_unregistered_jku_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(jwks_uri="https://backend.example/jwks.json")
    fetch = FakeFetcher(public_set(rsa_key))
    token = sign(rsa_key, client, header={"jku": "https://attacker.example/jwks.json"})
    assert "jku" in refused(engine, token, client, fetch=fetch)
    assert fetch.calls == []  # nothing fetched, least of all the token's URL


def test_embedded_jwk_header_refused(engine: Engine, ec_key: ECKey) -> None:
    client = make_client(public_set(ec_key))
    token = sign(ec_key, client, "ES384", header={"jwk": ec_key.as_dict(private=False)})
    assert "jwk header is refused" in refused(engine, token, client)


def test_ec_key_presented_as_rs384_refused(engine: Engine, rsa_key: RSAKey, ec_key: ECKey) -> None:
    client = make_client(public_set(ec_key))
    token = sign(rsa_key, client, "RS384", header={"kid": ec_key.kid})  # names the EC key
    assert "key type mismatch" in refused(engine, token, client)


def test_garbage_refused(engine: Engine, rsa_key: RSAKey) -> None:
    client = make_client(public_set(rsa_key))
    assert "well-formed" in refused(engine, "not.a.jwt", client)
    assert "well-formed" in refused(engine, "only-one-part", client)
    assert "exceeded_size" in refused(engine, f"{b64(b'{}' * 400)}.e30.", client)


# ------------------------------------------------------------------ the default fetcher


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWK Set that a test may change."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {"keys": []}
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                owner.requests += 1
                status, data = (200, json.dumps(owner.body).encode())
                if self.path != "/jwks.json":
                    status, data = 404, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def test_default_fetcher_over_http(
    engine: Engine, rsa_key: RSAKey, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks_server.body = public_set(rsa_key)
    client = make_client(jwks_uri=f"{jwks_server.url}/jwks.json")
    assert verify(engine, sign(rsa_key, client), client) == client
    assert verify(engine, sign(rsa_key, client), client) == client
    assert jwks_server.requests == 1  # the second came from the cache
    new_key = ECKey.generate_key("P-384", parameters={"kid": "ec-rotated"})
    jwks_server.body = public_set(new_key)
    monkeypatch.setattr(assertions, "JWKS_REFETCH_AFTER_SECONDS", 0)
    assert verify(engine, sign(new_key, client, "ES384"), client) == client  # rotated: re-fetch
    assert jwks_server.requests == 2


def test_default_fetcher_errors(jwks_server: JwksServer) -> None:
    with pytest.raises(OAuthError, match="could not fetch"):
        fetch_jwks(f"{jwks_server.url}/missing.json")
    jwks_server.body = {"not": "a key set"}
    with pytest.raises(OAuthError, match="did not return a JWK Set"):
        fetch_jwks(f"{jwks_server.url}/jwks.json")


def test_jti_insert_compiles_for_both_databases() -> None:
    values = {"client_id": "c", "jti": "j", "expires_at": 1}
    for name, dialect in (("postgresql", postgresql.dialect()), ("sqlite", sqlite.dialect())):
        statement = assertions._new_jti_statement(name, values)
        sql = str(statement.compile(dialect=dialect))
        assert "ON CONFLICT (client_id, jti) DO NOTHING RETURNING" in sql
