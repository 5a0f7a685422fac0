"""The Provenance one applied message gets: what it wrote, from which message and feed."""

from __future__ import annotations

from typing import Any

from app.fhir.instants import to_instant
from app.fhir.storage import now_us

MESSAGE_SYSTEM = "urn:medisentinel:hl7v2:message"  # Identifier.system of a message store id
APPLICATION_SYSTEM = "urn:medisentinel:hl7v2:application"  # ... of a sending application
EVENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0003"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def provenance_body(
    produced: list[str],
    *,
    message_id: str,
    code: str,
    trigger: str,
    control_id: str,
    application: str,
    facility: str,
    event_time: int | None,
) -> dict[str, Any]:
    """target: every version written; entity: the message in the store; agent: the feed."""
    display = " / ".join(v for v in (application, facility) if v) or "unknown"
    body: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": ref} for ref in produced],
        "recorded": to_instant(now_us()),
        "agent": [
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]},
                "who": {
                    "identifier": {"system": APPLICATION_SYSTEM, "value": application or "unknown"},
                    "display": display,
                },
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": MESSAGE_SYSTEM, "value": message_id},
                    "display": f"HL7 v2 {code}^{trigger} {control_id}".strip(),
                },
            }
        ],
    }
    if event_time is not None:
        body["occurredDateTime"] = to_instant(event_time)
    if trigger:  # the v2-to-FHIR IG: MSH-9.2 as Provenance.activity (HL7 table 0003)
        body["activity"] = {"coding": [{"system": EVENT_TYPE_SYSTEM, "code": trigger}]}
    return body
