"""The shape of OAuth requests (RFC 6749): each parameter at most once (section 3.1), the
token endpoint's body form-encoded with a grant_type (sections 3.2 and 4.1.3), and what an
authorization request that breaks these is answered with: an error page while the redirect
URI cannot be trusted, a redirect carrying the error and the state after (section 4.1.2.1)."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from app.auth.assertions import CLIENT_ASSERTION_TYPE
from app.auth.pkce import s256
from tests.conftest import LiveServer
from tests.helpers import headers_only_post
from tests.smart_helpers import CALLBACK, Registered, query_of, register_client

SCOPE = "launch/patient patient/*.rs"


@pytest.fixture(scope="module")
def app(live_server: LiveServer) -> Registered:
    return register_client(live_server.app.state.auth, "public", SCOPE)


def _authorize(live_server: LiveServer, pairs: list[tuple[str, str]]) -> httpx.Response:
    url = f"{live_server.settings.server_root}/auth/authorize?{urlencode(pairs)}"
    return httpx.get(url, follow_redirects=False)


def _request(app: Registered, live_server: LiveServer) -> list[tuple[str, str]]:
    return [("response_type", "code"), ("client_id", app.client_id),
            ("redirect_uri", CALLBACK), ("scope", SCOPE), ("state", "s-1"),
            ("aud", live_server.base_url), ("code_challenge", s256("v" * 43)),
            ("code_challenge_method", "S256")]  # fmt: skip


def test_a_repeated_authorization_parameter_goes_back_to_the_app(
    live_server: LiveServer, app: Registered
) -> None:
    answer = _authorize(live_server, [*_request(app, live_server), ("scope", "patient/*.cruds")])
    assert answer.status_code == 303
    back = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(CALLBACK)
    assert back["error"] == "invalid_request" and "scope" in back["error_description"]
    assert back["state"] == "s-1"


@pytest.mark.parametrize("name", ["redirect_uri", "client_id"])
def test_a_repeated_client_id_or_redirect_uri_is_an_error_page(
    live_server: LiveServer, app: Registered, name: str
) -> None:
    other = "https://attacker.example/cb" if name == "redirect_uri" else app.client_id
    answer = _authorize(live_server, [*_request(app, live_server), (name, other)])
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "may not be repeated" in answer.text


def test_the_token_endpoint_wants_a_grant_type(live_server: LiveServer, app: Registered) -> None:
    answer = httpx.post(
        f"{live_server.settings.server_root}/auth/token",
        data={"client_id": app.client_id, "code": "x"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert "grant_type" in answer.json()["error_description"]


@pytest.mark.parametrize("path", ["/auth/token", "/auth/introspect", "/auth/revoke"])
def test_a_body_that_is_not_form_encoded_is_invalid_request(
    live_server: LiveServer, app: Registered, path: str
) -> None:
    form = {"grant_type": "authorization_code", "client_id": app.client_id, "token": "x"}
    answer = httpx.post(f"{live_server.settings.server_root}{path}", json=form)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert "x-www-form-urlencoded" in answer.json()["error_description"]


@pytest.mark.parametrize("path", ["/auth/token", "/auth/introspect", "/auth/revoke"])
def test_a_form_past_its_limit_is_refused_unread(live_server: LiveServer, path: str) -> None:
    """Starlette's form parser read any length; a token request is a few KB. A form
    declared larger than FORM_LIMIT is refused before it is read (only headers are sent)."""
    url = f"{live_server.settings.server_root}{path}"
    answer = headers_only_post(url, "application/x-www-form-urlencoded", 10**11)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"invalid_request" in answer and b"larger than" in answer


def test_one_client_authentication_method_per_request(live_server: LiveServer) -> None:
    """RFC 6749 section 2.3: a client MUST NOT use more than one method in a request; and the
    client_id a request names is the one its Basic credentials are for."""
    confidential = register_client(live_server.app.state.auth, "confidential", SCOPE)
    other = register_client(live_server.app.state.auth, "public", SCOPE)
    assert confidential.client_secret
    token_url = f"{live_server.settings.server_root}/auth/token"
    basic = (confidential.client_id, confidential.client_secret)
    form = {"grant_type": "authorization_code", "code": "x", "code_verifier": "v" * 43}
    both = httpx.post(token_url, auth=basic, data={**form, "client_secret": "s"})
    assert both.status_code == 400 and both.json()["error"] == "invalid_request", both.text
    with_assertion = httpx.post(
        token_url, auth=basic,
        data={**form, "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": "a.b.c"},
    )  # fmt: skip
    assert with_assertion.status_code == 400 and with_assertion.json()["error"] == "invalid_request"
    named = httpx.post(token_url, auth=basic, data={**form, "client_id": other.client_id})
    assert named.status_code == 401 and named.json()["error"] == "invalid_client", named.text
    # One method alone is judged on its merits (here: an unknown code).
    alone = httpx.post(token_url, auth=basic, data={**form, "client_id": confidential.client_id})
    assert alone.status_code == 400 and alone.json()["error"] == "invalid_grant", alone.text


def test_prompt_none_is_login_required(live_server: LiveServer, app: Registered) -> None:
    """OpenID Connect Core 3.1.2.6: with prompt=none no page may be shown; the server keeps no
    sign-in session, so the app is told at once that a login is required."""
    answer = _authorize(live_server, [*_request(app, live_server), ("prompt", "none")])
    assert answer.status_code == 303 and answer.headers["location"].startswith(CALLBACK)
    back = query_of(answer.headers["location"])
    assert back["error"] == "login_required" and back["state"] == "s-1"
    shown = _authorize(live_server, [*_request(app, live_server), ("prompt", "login")])
    assert shown.headers["location"].startswith("/auth/login")


@pytest.mark.parametrize("name", ["request", "request_uri"])
def test_request_objects_are_refused_as_not_supported(
    live_server: LiveServer, app: Registered, name: str
) -> None:
    """OpenID Connect Core 6.1/6.2: a server that does not support request objects answers
    request_not_supported / request_uri_not_supported instead of ignoring them (their claims
    could ask for something else than the plain parameters say)."""
    value = "eyJhbGciOiJub25lIn0.e30." if name == "request" else "https://app.example/r/1"
    answer = _authorize(live_server, [*_request(app, live_server), (name, value)])
    assert answer.status_code == 303 and answer.headers["location"].startswith(CALLBACK)
    back = query_of(answer.headers["location"])
    assert back["error"] == f"{name}_not_supported" and back["state"] == "s-1"
    said = httpx.get(f"{live_server.base_url}/.well-known/openid-configuration").json()
    assert said[f"{name}_parameter_supported"] is False  # (request_uri's default is true)
