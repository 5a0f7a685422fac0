"""Small builders shared by tests."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "Example", "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    }
    body.update(extra)
    return body


def observation(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    body.update(extra)
    return body


def issue_paths(outcome: dict[str, Any]) -> list[str]:
    return [e for i in outcome.get("issue", []) for e in i.get("expression", [])]


def server_env(database_url: str, master_key: str, **settings: str) -> dict[str, str]:
    """The environment of a `medisentinel` subprocess on the test database: ours, plus
    MEDISENTINEL_<NAME> for each setting (`mllp_port="2575"` -> MEDISENTINEL_MLLP_PORT)."""
    env = {**os.environ, "MEDISENTINEL_DATABASE_URL": database_url,
           "MEDISENTINEL_MASTER_KEY": master_key}  # fmt: skip
    env.update({f"MEDISENTINEL_{name.upper()}": value for name, value in settings.items()})
    return env


def headers_only_post(url: str, content_type: str, declared_length: int, **headers: str) -> bytes:
    """POST `url` over a raw socket with these headers and a Content-Length of
    `declared_length`, sending no body at all; the first bytes of the answer. (A client
    library sends the body it declares: a limit must answer from the headers alone.)"""
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
             f"Content-Type: {content_type}", f"Content-Length: {declared_length}",
             *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(65536)
