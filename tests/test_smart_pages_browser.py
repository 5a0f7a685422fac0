"""The SMART sign-in pages (login, patient picker, consent) driven in a real headless Chromium
against the live server, ending on a real redirect target; the code is then exchanged at the
token endpoint and the token used on the FHIR API."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from app.auth.pkce import s256
from tests.browser import CallbackServer
from tests.conftest import LiveServer
from tests.helpers import patient
from tests.smart_helpers import PASSWORD, create_resource, query_of, register_user
from tests.smart_helpers import register_client as public_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

STANDALONE = "launch/patient openid fhirUser patient/*.rs offline_access"
PRACTITIONER = "openid fhirUser user/*.rs"


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def app_callback() -> Iterator[CallbackServer]:
    with CallbackServer() as server:
        yield server


# ---------------------------------------------------------------------- helpers


def path_of(url: str) -> str:
    return urlsplit(url).path


def register_client(live_server: LiveServer, scope: str, redirect_uri: str) -> str:
    """A public app redirecting to `redirect_uri`; its client_id."""
    auth = live_server.app.state.auth
    return public_app(auth, "public", scope, redirect_uris=[redirect_uri]).client_id


class AppRequest:
    """One authorization request as a SMART app would make it: its state and PKCE verifier."""

    def __init__(
        self, live_server: LiveServer, client_id: str, redirect_uri: str, scope: str
    ) -> None:
        self.live_server = live_server
        self.client_id, self.redirect_uri, self.scope = client_id, redirect_uri, scope
        self.state = secrets.token_urlsafe(16)
        self.verifier = secrets.token_urlsafe(48)

    @property
    def server_root(self) -> str:
        return self.live_server.settings.server_root

    def authorize_url(self) -> str:
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "aud": self.live_server.base_url,
            "code_challenge": s256(self.verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.server_root}/auth/authorize?{urlencode(query)}"

    def token(self, code: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.server_root}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": self.verifier,
                "client_id": self.client_id,
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    assert path_of(page.url) == "/auth/login", page.url
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#sign-in")


def wait_for_path(page: Page, path: str) -> None:
    page.wait_for_url(lambda url: path_of(url) == path)


def back_at_app(page: Page, app_callback: CallbackServer) -> dict[str, str]:
    """Wait for the redirect to the app's page; the query it carried."""
    page.wait_for_url(lambda url: url.startswith(app_callback.callback_url + "?"))
    assert page.locator("#callback").is_visible()
    assert len(app_callback.callbacks()) == 1, app_callback.requests
    return query_of(page.url)


def fhir_get(base_url: str, access_token: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"}
    return httpx.get(f"{base_url}/{path}", headers=headers, timeout=30)


# ---------------------------------------------------------------------- tests


def test_practitioner_standalone_launch_picks_a_patient(
    page: Page,
    app_callback: CallbackServer,
    live_server: LiveServer,
    client: httpx.Client,
    base_url: str,
    tmp_path: Any,
) -> None:
    marker = "brw" + uuid.uuid4().hex[:10]
    families = [f"{marker}alpha", f"{marker}bravo", f"{marker}charlie"]
    ids = [
        create_resource(client, patient(name=[{"family": f, "given": ["Sam"]}])) for f in families
    ]
    doctor = create_resource(
        client, {"resourceType": "Practitioner", "name": [{"family": f"{marker}doc"}]}
    )
    username = register_user(live_server.app.state.auth, "practitioner", f"Practitioner/{doctor}")
    app = AppRequest(
        live_server,
        register_client(live_server, STANDALONE, app_callback.callback_url),
        app_callback.callback_url,
        STANDALONE,
    )

    page.goto(app.authorize_url())
    sign_in(page, username)
    wait_for_path(page, "/auth/picker")

    page.fill("#name", marker)
    page.click("#find")
    page.wait_for_url(lambda url: query_of(url).get("name") == marker)
    radios = page.locator("input[name=patient]")
    assert radios.count() == 3
    assert [radios.nth(i).get_attribute("value") for i in range(3)] == ids  # sorted by family
    assert families[1] in page.locator("ul.patients li").nth(1).inner_text()
    chosen, others = ids[1], [ids[0], ids[2]]
    radios.nth(1).check()
    page.click("#choose")

    wait_for_path(page, "/auth/consent")
    assert page.locator("#patient").get_attribute("data-id") == chosen
    assert marker in page.locator("#patient").inner_text()  # the name, not only the id
    screenshot = tmp_path / "consent.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 2000
    page.click("#allow")

    back = back_at_app(page, app_callback)
    assert back["state"] == app.state
    assert back["code"]
    assert "error" not in back

    token = app.token(back["code"])
    assert token["patient"] == chosen
    granted = token["scope"].split()
    assert "patient/*.rs" in granted and "launch/patient" in granted
    assert token.get("refresh_token")
    assert token.get("id_token")  # openid was granted
    access = token["access_token"]
    assert fhir_get(base_url, access, f"Patient/{chosen}").status_code == 200
    for other in others:
        assert fhir_get(base_url, access, f"Patient/{other}").status_code == 403


def test_wrong_password_stays_on_the_login_page(
    page: Page, app_callback: CallbackServer, live_server: LiveServer, client: httpx.Client
) -> None:
    doctor = create_resource(
        client, {"resourceType": "Practitioner", "name": [{"family": "Login"}]}
    )
    username = register_user(live_server.app.state.auth, "practitioner", f"Practitioner/{doctor}")
    app = AppRequest(
        live_server,
        register_client(live_server, PRACTITIONER, app_callback.callback_url),
        app_callback.callback_url,
        PRACTITIONER,
    )

    page.goto(app.authorize_url())
    sign_in(page, username, password="not-the-password")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "Wrong username or password" in error.inner_text()
    assert path_of(page.url) == "/auth/login"
    assert app_callback.requests == []

    sign_in(page, username)
    wait_for_path(page, "/auth/consent")
    page.click("#allow")
    back = back_at_app(page, app_callback)
    assert back["state"] == app.state
    assert back["code"]


def test_deny_on_consent_returns_access_denied(
    page: Page, app_callback: CallbackServer, live_server: LiveServer, client: httpx.Client
) -> None:
    doctor = create_resource(client, {"resourceType": "Practitioner", "name": [{"family": "Deny"}]})
    username = register_user(live_server.app.state.auth, "practitioner", f"Practitioner/{doctor}")
    app = AppRequest(
        live_server,
        register_client(live_server, PRACTITIONER, app_callback.callback_url),
        app_callback.callback_url,
        PRACTITIONER,
    )

    page.goto(app.authorize_url())
    sign_in(page, username)
    wait_for_path(page, "/auth/consent")
    page.click("#deny")

    back = back_at_app(page, app_callback)
    assert back["error"] == "access_denied"
    assert back["state"] == app.state
    assert "code" not in back


def test_unticked_offline_group_gives_no_refresh_token(
    page: Page, app_callback: CallbackServer, live_server: LiveServer, client: httpx.Client
) -> None:
    own = create_resource(client, patient())
    username = register_user(live_server.app.state.auth, "patient", f"Patient/{own}")
    app = AppRequest(
        live_server,
        register_client(live_server, STANDALONE, app_callback.callback_url),
        app_callback.callback_url,
        STANDALONE,
    )

    page.goto(app.authorize_url())
    sign_in(page, username)
    wait_for_path(page, "/auth/consent")
    offline = page.locator("input[name=group][value=session]")
    assert offline.is_checked()
    assert "Stay connected" in page.locator("fieldset", has=offline).inner_text()
    offline.uncheck()
    page.click("#allow")

    back = back_at_app(page, app_callback)
    token = app.token(back["code"])
    granted = token["scope"].split()
    assert "offline_access" not in granted
    assert "patient/*.rs" in granted and "openid" in granted
    assert "refresh_token" not in token


def test_unregistered_redirect_uri_shows_an_error_page(
    page: Page, app_callback: CallbackServer, live_server: LiveServer
) -> None:
    registered = app_callback.callback_url
    client_id = register_client(live_server, PRACTITIONER, registered)
    server = urlsplit(live_server.settings.server_root)
    refused = [
        (client_id, f"{registered}/../evil", "redirect_uri"),
        (client_id, f"{app_callback.root}/callbackx", "redirect_uri"),
        (client_id, f"{registered}?next=elsewhere", "redirect_uri"),
        (uuid.uuid4().hex, registered, "invalid_client"),
    ]
    for cid, redirect_uri, expected in refused:
        app = AppRequest(live_server, cid, redirect_uri, PRACTITIONER)
        response = page.goto(app.authorize_url())
        assert response is not None and response.status == 400
        error = page.locator("#error")
        assert error.is_visible()
        assert expected in error.inner_text()
        landed = urlsplit(page.url)
        assert (landed.netloc, landed.path) == (server.netloc, "/auth/authorize")
    assert app_callback.requests == []


def test_patient_user_skips_the_picker(
    page: Page,
    app_callback: CallbackServer,
    live_server: LiveServer,
    client: httpx.Client,
    base_url: str,
) -> None:
    own = create_resource(client, patient())
    username = register_user(live_server.app.state.auth, "patient", f"Patient/{own}")
    app = AppRequest(
        live_server,
        register_client(live_server, STANDALONE, app_callback.callback_url),
        app_callback.callback_url,
        STANDALONE,
    )
    visited: list[str] = []
    page.on("framenavigated", lambda frame: visited.append(frame.url))

    page.goto(app.authorize_url())
    sign_in(page, username)
    wait_for_path(page, "/auth/consent")
    assert page.locator("#patient").get_attribute("data-id") == own
    page.click("#allow")

    back = back_at_app(page, app_callback)
    assert "/auth/picker" not in [path_of(url) for url in visited], visited
    token = app.token(back["code"])
    assert token["patient"] == own
    assert fhir_get(base_url, token["access_token"], f"Patient/{own}").status_code == 200
