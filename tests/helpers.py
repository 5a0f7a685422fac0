"""Small builders shared by tests."""

from __future__ import annotations

import os
import uuid
from typing import Any

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
