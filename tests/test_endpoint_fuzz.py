"""Mutation fuzz of the endpoints outside the FHIR API, over real HTTP: the SMART
authorization server (authorize, login, token, introspect, revoke, launch, client
registration), the audit console and the HL7 v2 HTTP endpoint. Bad input gets a clear
answer, never a crash: every answer below 500; the token, introspection and revocation
endpoints answer errors as RFC 6749 JSON (`error`), HL7 errors as an ACK.

Each case starts from a request those endpoints accept (forms with the real parameter names,
client assertions shaped as JWTs) and changes one to three values, names or the body's bytes
(tests/rest_mutations.py's junk). Reproducible: seed and case number are in every failure.
"""

from __future__ import annotations

import base64
import json
import os
import random
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import LiveServer
from tests.rest_mutations import _QUERY_JUNK, mutate_bytes
from tests.seeds import seeds_from_env
from tests.smart_helpers import CALLBACK, register_client

CASES = int(os.environ.get("MEDISENTINEL_FUZZ_CASES", "300"))
SEEDS = seeds_from_env("MEDISENTINEL_FUZZ_SEED", "20261123")
JSON_ERROR_PATHS = ("/auth/token", "/auth/introspect", "/auth/revoke")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _odd_jwt(rng: random.Random, client_id: str, audience: str) -> str:
    """Something shaped like a client assertion: headers and claims a verifier must refuse
    (no signature, alg none, keys to fetch from elsewhere, wrong kinds of values)."""
    header = rng.choice(
        [
            {"alg": "RS384", "kid": "k1", "typ": "JWT"},
            {"alg": "none"},
            {"alg": "HS256"},
            {"alg": "ES384", "jku": "http://127.0.0.1:9/jwks"},
            {"alg": ["RS384"]},
            {"alg": "RS384", "kid": 7},
            {},
        ]
    )
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": 4102444800,
        "jti": "x",
    }
    key = rng.choice(list(claims))
    claims[key] = rng.choice([None, 1e308, [], {}, "", -1, "\u0000", "\ud800", "x" * 3000])
    signature = rng.choice(["", "AAAA", "!!", _b64(b"\x00" * 256)])
    shape = rng.randrange(5)
    if shape == 0:
        return f"{_b64(header)}.{_b64(claims)}.{signature}"
    if shape == 1:
        return rng.choice(["a.b.c", "....", "e30.e30", "eyJ", "a" * 20000])
    if shape == 2:
        return f"{_b64(b'not json')}.{_b64(claims)}.{signature}"
    if shape == 3:
        return f"{_b64(header)}.{_b64(b'[1,2')}.{signature}"
    return f"{_b64(header)}.{_b64(b'[' * 30000)}.{signature}"  # nesting past any limit


def _junk(rng: random.Random) -> str:
    return rng.choice([*_QUERY_JUNK, "urn:uuid:x", "http://evil.example/cb", "openid fhirUser"])


class Forms:
    """The starting forms of each endpoint, with a real client's id."""

    def __init__(self, client_id: str, backend_id: str, fhir_base: str) -> None:
        self.client_id = client_id
        self.backend_id = backend_id
        self.fhir_base = fhir_base
        self.token_url = fhir_base.rsplit("/fhir", 1)[0] + "/auth/token"

    def pick(self, rng: random.Random) -> tuple[str, str, dict[str, str]]:
        authorize = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": CALLBACK,
            "scope": "launch/patient patient/*.rs openid fhirUser",
            "state": "s",
            "aud": self.fhir_base,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
        choices: list[tuple[str, str, dict[str, str]]] = [
            ("GET", "/auth/authorize", authorize),
            ("POST", "/auth/authorize", authorize),
            ("POST", "/auth/login", {"username": "nobody", "password": "x", "request": "r"}),
            ("POST", "/auth/consent", {"request": "r", "decision": "allow", "scope": "x"}),
            ("GET", "/auth/picker", {"request": "r"}),
            (
                "POST",
                "/auth/token",
                {
                    "grant_type": "authorization_code",
                    "code": "c",
                    "redirect_uri": CALLBACK,
                    "client_id": self.client_id,
                    "code_verifier": "v" * 43,
                },
            ),
            ("POST", "/auth/token", {"grant_type": "refresh_token", "refresh_token": "r"}),
            (
                "POST",
                "/auth/token",
                {
                    "grant_type": "client_credentials",
                    "scope": "system/*.rs",
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": _odd_jwt(rng, self.backend_id, self.token_url),
                },
            ),
            ("POST", "/auth/introspect", {"token": _odd_jwt(rng, "x", "y")}),
            ("POST", "/auth/revoke", {"token": "t", "token_type_hint": "refresh_token"}),
            ("POST", "/auth/launch", {"patient": "p", "encounter": "e"}),
            ("GET", "/audit/", {"patient": "p", "action": "R", "outcome": "0", "page": "2"}),
            ("GET", "/audit/events/x", {}),
            ("GET", "/audit/disclosures/p", {"format": "csv", "since": "2024-01-01"}),
            ("GET", "/audit/callback", {"code": "c", "state": "s"}),
        ]
        return rng.choice(choices)


def _mutated(rng: random.Random, form: dict[str, str]) -> dict[str, str]:
    form = dict(form)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        keys = list(form)
        if op == 0 and keys:
            form[rng.choice(keys)] = _junk(rng)
        elif op == 1 and keys:
            del form[rng.choice(keys)]
        elif op == 2:
            name = rng.choice(["grant_type", "scope", "aud", "x" * 200, "", "client_id"])
            form[name] = _junk(rng)
        elif keys:
            key = rng.choice(keys)
            form[key] = form[key] + _junk(rng)
    return form


def _encoded(form: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in form.items())


def _hl7_case(rng: random.Random) -> tuple[str, dict[str, str], bytes]:
    message = (
        b"MSH|^~\\&|FUZZ|FAC|MEDI|MEDI|20240101120000||ADT^A01^ADT_A01|C1|P|2.5.1\r"
        b"EVN|A01|20240101120000\rPID|1||123^^^FUZZ^MR||Doe^Jane||19700101|F\r"
        b"PV1|1|I|W^1^1||||||||||||||||V1\r"
    )
    content_type = rng.choice(["x-application/hl7-v2+er7", "text/plain", "application/json", ""])
    return "/hl7/v2", {"Content-Type": content_type}, mutate_bytes(message, rng)


def _problem(path: str, response: httpx.Response) -> str | None:
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:600]}"
    if path in JSON_ERROR_PATHS and response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"status {response.status_code} without JSON: {response.text[:300]!r}"
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return f"an RFC 6749 error has an `error` string: {str(body)[:300]}"
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_requests_to_other_endpoints_get_clear_answers(
    live_server: LiveServer, seed: int
) -> None:
    auth = live_server.app.state.auth
    app = register_client(auth, "public", "launch/patient patient/*.rs openid fhirUser")
    backend = register_client(auth, "backend", "system/*.rs", jwks={"keys": []})
    forms = Forms(app.client_id, backend.client_id, live_server.base_url)
    root = live_server.base_url.rsplit("/fhir", 1)[0]
    rng = random.Random(seed)
    failures: list[str] = []
    with httpx.Client(base_url=root, timeout=60, follow_redirects=False) as http:
        for number in range(CASES):
            if rng.random() < 0.15:
                path, headers, body = _hl7_case(rng)
                response = http.post(path, headers=headers, content=body)
                shown = f"POST {path} {headers} {body[:300]!r}"
            else:
                method, path, form = forms.pick(rng)
                form = _mutated(rng, form)
                if method == "GET":
                    response = http.get(f"{path}?{_encoded(form)}")
                else:
                    content_type = rng.choice(
                        ["application/x-www-form-urlencoded"] * 4 + ["application/json", ""]
                    )
                    data = _encoded(form).encode()
                    if rng.random() < 0.2:
                        data = mutate_bytes(data, rng)
                    response = http.post(path, content=data, headers={"Content-Type": content_type})
                shown = f"{method} {path} {str(form)[:400]}"
            problem = _problem(path, response)
            if problem:
                failures.append(f"seed {seed} case {number}: {shown}\n  -> {problem}")
    assert not failures, f"{len(failures)} of {CASES} cases:\n" + "\n".join(failures[:15])
