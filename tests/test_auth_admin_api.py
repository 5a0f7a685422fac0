"""The admin API. Client registration (`POST /auth/clients`, RFC 7591-like): metadata of the
wrong shape is refused with RFC 7591's error codes (400) and nothing is registered, whatever
JSON the body holds; never a 500, never a private key stored and listed. EHR launches
(`POST /auth/launch`): the patient and encounter are FHIR ids, as on the command line."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.conftest import LiveServer

PRIVATE = RSAKey.generate_key(2048, parameters={"kid": "k"}).as_dict(private=True)
PUBLIC = RSAKey.import_key(PRIVATE).as_dict(private=False)
WEB = {"kind": "public", "scope": "patient/*.rs", "redirect_uris": ["https://app.test/cb"]}
BACKEND = {"kind": "backend", "scope": "system/*.rs", "jwks": {"keys": [PUBLIC]}}

REFUSED = {
    "private key": ({**BACKEND, "jwks": {"keys": [PRIVATE]}}, "invalid_client_metadata"),
    "symmetric key": ({**BACKEND, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
                      "invalid_client_metadata"),
    "jwks not an object": ({**BACKEND, "jwks": "keys"}, "invalid_client_metadata"),
    "jwks_uri file:": ({**BACKEND, "jwks": None, "jwks_uri": "file:///etc/passwd"},
                       "invalid_client_metadata"),
    "javascript: redirect": ({**WEB, "redirect_uris": ["javascript:alert(1)"]},
                             "invalid_redirect_uri"),
    "fragment": ({**WEB, "redirect_uris": ["https://app.test/cb#x"]}, "invalid_redirect_uri"),
    "relative": ({**WEB, "redirect_uris": ["/cb"]}, "invalid_redirect_uri"),
    "string, not list": ({**WEB, "redirect_uris": "https://app.test/cb"}, "invalid_redirect_uri"),
    "number": ({**WEB, "redirect_uris": [5]}, "invalid_redirect_uri"),
    "launch_uri number": ({**WEB, "launch_uri": 5}, "invalid_client_metadata"),
    "scope list": ({**WEB, "scope": ["patient/*.rs"]}, "invalid_client_metadata"),
    "blank name": ({**WEB, "client_name": " "}, "invalid_client_metadata"),
}  # fmt: skip


def _registry(live_server: LiveServer) -> str:
    return f"{live_server.settings.server_root}/auth/clients"


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_malformed_metadata_is_refused_and_nothing_registered(
    live_server: LiveServer, auth_headers: dict[str, str], case: str
) -> None:
    body, error = REFUSED[case]
    name = f"reg-{uuid.uuid4().hex[:8]}"
    sent: dict[str, Any] = {"client_name": name, **body}
    answer = httpx.post(_registry(live_server), json=sent, headers=auth_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error
    listed = httpx.get(_registry(live_server), headers=auth_headers).json()
    assert all(c["client_name"] != sent["client_name"] for c in listed)
    assert all("d" not in k for c in listed for k in (c.get("jwks") or {}).get("keys", []))


@pytest.mark.parametrize(
    "body",
    [{**WEB, "redirect_uris": ["com.example.app:/cb", "http://127.0.0.1:5000/cb"],
      "launch_uri": "https://app.test/launch"}, BACKEND,
     {**BACKEND, "jwks": None, "jwks_uri": "https://app.test/jwks.json"}],
)  # fmt: skip
def test_well_formed_metadata_is_registered(
    live_server: LiveServer, auth_headers: dict[str, str], body: dict[str, Any]
) -> None:
    sent = {"client_name": f"reg-{uuid.uuid4().hex[:8]}", **body}
    answer = httpx.post(_registry(live_server), json=sent, headers=auth_headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["redirect_uris"] == body.get("redirect_uris", [])


@pytest.mark.parametrize(
    "body",
    [{"patient": 5}, {"patient": ["a"]}, {"patient": "../x"}, {"patient": "Patient/1"},
     {"encounter": {"id": "1"}}],
)  # fmt: skip
def test_a_launch_names_fhir_ids(
    live_server: LiveServer, auth_headers: dict[str, str], body: dict[str, Any]
) -> None:
    url = f"{live_server.settings.server_root}/auth/launch"
    answer = httpx.post(url, json=body, headers=auth_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert "FHIR id" in answer.json()["error_description"]


@pytest.mark.parametrize("path", ["/auth/launch", "/auth/clients"])
@pytest.mark.parametrize(
    "content",
    [b"[" * 20000, b'{"client_name": "\\ud800", "patient": "\\ud800"}'],
    ids=["nested past any limit", "lone surrogate"],
)
def test_a_body_no_json_reader_should_take_is_400(
    live_server: LiveServer, auth_headers: dict[str, str], path: str, content: bytes
) -> None:
    """The standard JSON parser recursed into a RecursionError on deep nesting (the
    connection dropped, no answer); a lone surrogate would reach the database. Both are the
    body's fault: 400, and nothing registered."""
    url = f"{live_server.settings.server_root}{path}"
    headers = {**auth_headers, "Content-Type": "application/json"}
    before = httpx.get(f"{live_server.settings.server_root}/auth/clients", headers=auth_headers)
    answer = httpx.post(url, content=content, headers=headers)
    assert answer.status_code == 400, answer.text
    after = httpx.get(f"{live_server.settings.server_root}/auth/clients", headers=auth_headers)
    assert len(after.json()) == len(before.json())
