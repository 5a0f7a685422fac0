"""The key facts of an AuditEvent, as the console lists and shows them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from audit.events import CLIENT_SYSTEM

ACTIONS = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "execute"}
OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure", "12": "major failure"}


@dataclass(frozen=True)
class Facts:
    id: str
    recorded: str
    type: str
    subtype: str
    action: str
    outcome: str
    outcome_desc: str
    client_id: str | None
    user: str | None  # fhirUser reference
    username: str | None
    address: str | None
    patients: tuple[str, ...]
    resources: tuple[str, ...]
    query: str | None  # decoded search criteria
    request: str | None  # the request line
    purpose: str | None

    @property
    def action_label(self) -> str:
        return ACTIONS.get(self.action, self.action)

    @property
    def outcome_label(self) -> str:
        return OUTCOMES.get(self.outcome, self.outcome)

    @property
    def failed(self) -> bool:
        return self.outcome != "0"


def facts_of(event: dict[str, Any]) -> Facts:
    client_id = user = username = address = None
    for agent in event.get("agent", []):
        who = agent.get("who") or {}
        identifier = who.get("identifier") or {}
        if identifier.get("system") == CLIENT_SYSTEM:
            client_id = identifier.get("value")
            address = (agent.get("network") or {}).get("address")
        elif agent.get("requestor") and (who.get("reference") or agent.get("altId")):
            user, username = who.get("reference"), agent.get("altId")
    patients: list[str] = []
    resources: list[str] = []
    query = request = None
    for entity in event.get("entity", []):
        role = (entity.get("role") or {}).get("code")
        what = (entity.get("what") or {}).get("reference")
        if role == "1" and what:
            patients.append(what)
        elif what:
            resources.append(what)
        if role == "24":
            request = entity.get("description") or request
            if entity.get("query"):
                query = _decoded(entity["query"])
    subtypes = [c.get("code", "") for c in event.get("subtype", [])]
    purposes = [
        c.get("display") or c.get("code") or ""
        for concept in event.get("purposeOfEvent", [])
        for c in concept.get("coding", [])
    ]
    return Facts(
        id=str(event.get("id", "")),
        recorded=str(event.get("recorded", "")),
        type=(event.get("type") or {}).get("display") or (event.get("type") or {}).get("code", ""),
        subtype=", ".join(s for s in subtypes if s),
        action=str(event.get("action", "")),
        outcome=str(event.get("outcome", "")),
        outcome_desc=str(event.get("outcomeDesc", "")),
        client_id=client_id,
        user=user,
        username=username,
        address=address,
        patients=tuple(patients),
        resources=tuple(resources),
        query=query,
        request=request,
        purpose="; ".join(p for p in purposes if p) or None,
    )


def _decoded(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
