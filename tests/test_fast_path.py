"""The FHIR API's short way in (app/api/fast_path.py): /fhir requests skip the framework's
layers and must be answered exactly as the full way answers them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.api import fast_path
from tests.conftest import LiveServer


def answer(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What a client sees, minus what differs between any two answers (date, ids)."""
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
    return response.status_code, headers, response.json() if response.content else None


def full_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_path.MediSentinelApp, "_is_short_way", lambda self, scope: False)


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "Patient/does-not-exist", None),  # 404 OperationOutcome
        ("GET", "NoSuchType/1", None),
        ("POST", "Patient", {"resourceType": "Observation"}),  # 400, wrong type
        ("PUT", "Patient/abc", {"resourceType": "Patient", "id": "other"}),  # 400, id differs
        ("DELETE", "", None),  # 405 at the base
    ],
)
def test_errors_are_answered_as_the_full_way_answers_them(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: Any
) -> None:
    short = answer(client.request(method, path, json=body))
    full_way(monkeypatch)
    full = answer(client.request(method, path, json=body))
    assert short == full
    assert short[0] >= 400 and short[2]["resourceType"] == "OperationOutcome"


def test_a_read_is_answered_as_the_full_way_answers_it(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = client.post("Patient", json={"resourceType": "Patient", "active": True})
    assert created.status_code == 201
    location = created.headers["location"].split("/fhir/", 1)[1]
    short = answer(client.get(location))
    full_way(monkeypatch)
    assert answer(client.get(location)) == short


def test_an_unexpected_error_is_a_500_operation_outcome(
    client: httpx.Client, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(live_server.app.state.fhir_router, "dispatch", broken)
    response = client.get("Patient")
    assert response.status_code == 500
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "boom" not in response.text  # no internals leave


def test_requests_that_need_a_layer_take_the_full_way(
    live_server: LiveServer, auth_headers: dict[str, str]
) -> None:
    base = live_server.base_url
    with httpx.Client(headers=auth_headers) as http:
        # CORS: a browser's request gets CORSMiddleware's headers
        cors = http.get(f"{base}/Patient", headers={"Origin": "https://app.example"})
        assert cors.status_code == 200
        assert cors.headers["access-control-allow-origin"] in ("*", "https://app.example")
        # a route under /fhir that is not the FHIR endpoint
        discovery = http.get(f"{base}/.well-known/smart-configuration")
        assert discovery.status_code == 200 and "token_endpoint" in discovery.json()
