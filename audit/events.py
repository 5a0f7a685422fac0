"""AuditEvent resources shaped after IHE Basic Audit Log Patterns (BALP), FHIR R4.

One function builds every event: the caller says what happened (`EventKind`), who did it
(`Actor`), to what (`entities`, `patients`, `query`) and how it ended (`Outcome`). The static
codings are module constants so that building an event is cheap: every read builds one.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.errors import printable
from app.fhir.instants import to_instant

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
CLIENT_SYSTEM = "urn:medisentinel:client"  # Identifier.system of an OAuth client_id
# Identifier.system of the server that recorded an event (source.observer), its value the
# server's FHIR base URL: what `AuditEvent?source:identifier=` finds.
SERVER_SYSTEM = "urn:medisentinel:server"
# The client agent of the sign-in pages' own look-ups (the patient picker, the consent page's
# patient): the server acting for the user signing in, not the app asking for a token.
SIGN_IN_CLIENT = "medisentinel-sign-in"
# The description of what an HL7 v2 feed reads or searches while applying its message (the
# patient it names, the visit, the earlier result): the feed's sender gets only an ACK back.
FEED_LOOKUP = "look-up while applying an HL7 v2 message; nothing returned to the sender"
AUTH_EVENT = "urn:medisentinel:audit:auth-event"  # our subtypes of authorization events
HL7V2_EVENT = "urn:medisentinel:audit:hl7v2-event"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

REST_TYPE = {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
AUTH_TYPE = {"system": DCM, "code": "110114", "display": "User Authentication"}
IMPORT_TYPE = {"system": DCM, "code": "110107", "display": "Import"}
APPLICATION_ACTIVITY = {"system": DCM, "code": "110100", "display": "Application Activity"}

ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "capabilities": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
}  # anything else executes: E. That includes searches and history listings (queries: BALP's
# Query profile, e.g. AuditEvent-ex-auditBasicQueryGetNoPatient, has action E), transactions,
# batches, operations and sign-ins.

SOURCE_ROLE = {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]}
DESTINATION_ROLE = {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]}
USER_ROLE = {
    "coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]
}
PATIENT_ENTITY_TYPE = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
PATIENT_ROLE = {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
OBJECT_TYPE = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
RESOURCE_ROLE = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
QUERY_ROLE = {"system": OBJECT_ROLE, "code": "24", "display": "Query"}
SERVER_SOURCE_TYPE = [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]


@dataclass(frozen=True)
class EventKind:
    type: dict[str, str]
    subtype: dict[str, str]
    action: str
    profile: str = ""

    @classmethod
    def rest(cls, interaction: str) -> EventKind:
        action = ACTIONS.get(interaction, "E")
        code = _REST_CODES.get(interaction, interaction)
        return _rest_kind(code, action)

    @classmethod
    def auth(cls, what: str) -> EventKind:
        """login, consent, token-issued, token-refused, token-refreshed, token-introspected,
        token-revoked, launch-created."""
        return cls(AUTH_TYPE, {"system": AUTH_EVENT, "code": what, "display": what}, "E")

    @classmethod
    def hl7v2(cls, message_type: str) -> EventKind:
        return cls(IMPORT_TYPE, {"system": HL7V2_EVENT, "code": printable(message_type)}, "C")


_REST_CODES = {"reindex": "operation"}
_PROFILES = {
    "C": "Create",
    "R": "Read",
    "U": "Update",
    "D": "Delete",
}


def _rest_kind(code: str, action: str) -> EventKind:
    profile = _PROFILES.get(action, "")
    if code.startswith(("search", "history")):
        profile = "Query"
    return EventKind(REST_TYPE, {"system": RESTFUL, "code": code, "display": code}, action, profile)


def _profile(kind: EventKind, outcome: Outcome, entities: Entities) -> str | None:
    """The BALP profile the event conforms to. BALP's profiles describe successful events
    (failures follow FHIR's access-denied pattern: no profile claimed); its Patient* variants
    (PatientRead, PatientQuery ...) hold exactly one patient entity, so an event concerning
    one patient claims the variant, one concerning several the plain profile."""
    if not kind.profile or outcome.code != "0":
        return None
    return _PROFILE_URLS[kind.profile, len(entities.patients) == 1]


_PROFILE_URLS = {  # built once: every read builds an event
    (name, one_patient): f"{BALP}IHE.BasicAudit.{'Patient' if one_patient else ''}{name}"
    for name in ("Create", "Read", "Update", "Delete", "Query")
    for one_patient in (False, True)
}


@dataclass(frozen=True)
class Actor:
    """Who acted: the client application, the user it acts for, from where, through what."""

    client_id: str | None = None
    user: str | None = None  # fhirUser reference, e.g. Practitioner/123
    username: str | None = None  # the login name (AuditEvent.agent.altId)
    address: str | None = None
    channel: str = "rest"
    purpose: tuple[dict[str, str], ...] = ()  # purposeOfUse codings, when known


@dataclass(frozen=True)
class Outcome:
    code: str = "0"  # 0 success, 4 minor failure, 8 serious failure, 12 major failure
    description: str = ""

    @classmethod
    def for_status(cls, status: int, description: str) -> Outcome:
        return cls("4" if status < 500 else "8", description)


SUCCESS = Outcome()


@dataclass
class Entities:
    """What the event touched."""

    resources: list[str] = field(default_factory=list)  # Type/id/_history/n
    patients: list[str] = field(default_factory=list)  # patient ids
    query: str | None = None  # search/history query string (GET form)
    description: str | None = None  # request line, message id ...


def audit_event(
    kind: EventKind,
    actor: Actor,
    outcome: Outcome,
    entities: Entities,
    *,
    recorded_us: int,
    server: str,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One AuditEvent resource (R4), meta included: the stored record is final."""
    recorded = to_instant(recorded_us)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id or str(uuid.uuid4()),
        "meta": {"versionId": "1", "lastUpdated": recorded},
    }
    profile = _profile(kind, outcome, entities)
    if profile:
        event["meta"]["profile"] = [profile]
    event["type"] = kind.type
    event["subtype"] = [kind.subtype]
    event["action"] = kind.action
    event["recorded"] = recorded
    event["outcome"] = outcome.code
    if outcome.description:
        event["outcomeDesc"] = printable(outcome.description[:1000])
    if actor.purpose:
        event["purposeOfEvent"] = [{"coding": [c]} for c in actor.purpose]
    event["agent"] = _agents(actor, server)
    event["source"] = {
        "site": server,
        "observer": {
            "identifier": {"system": SERVER_SYSTEM, "value": server},
            "display": "MediSentinel",
        },  # fmt: skip
        "type": SERVER_SOURCE_TYPE,
    }
    listed = _entities(entities)
    if listed:
        event["entity"] = listed
    return event


def _agents(actor: Actor, server: str) -> list[dict[str, Any]]:
    # A refused caller's client_id and user name are whatever it sent.
    client_id = printable(actor.client_id) if actor.client_id else "anonymous"
    client: dict[str, Any] = {
        "type": SOURCE_ROLE,
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}, "display": client_id},
        "name": client_id,
        "requestor": actor.user is None and actor.username is None,
    }
    if actor.address:
        client["network"] = {"address": printable(actor.address), "type": "2"}
    agents = [client]
    if actor.user or actor.username:
        user: dict[str, Any] = {"type": USER_ROLE, "who": {}, "requestor": True}
        if actor.user:
            user["who"]["reference"] = printable(actor.user)
        if actor.username:
            username = printable(actor.username)
            user["who"]["display"] = username
            user["altId"] = username
            user["name"] = username
        agents.append(user)
    agents.append(
        {
            "type": DESTINATION_ROLE,
            "who": {"display": "MediSentinel"},
            "requestor": False,
            "network": {"address": server, "type": "5"},
        }
    )
    return agents


def _entities(entities: Entities) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{pid}"}, "type": PATIENT_ENTITY_TYPE, "role": PATIENT_ROLE}
        for pid in entities.patients
    ]
    listed.extend(  # (a refused request's id is the URL's, whatever it holds)
        {"what": {"reference": printable(ref)}, "type": OBJECT_TYPE, "role": RESOURCE_ROLE}
        for ref in entities.resources
    )
    if entities.query is not None or entities.description:
        query: dict[str, Any] = {"type": OBJECT_TYPE, "role": QUERY_ROLE}
        if entities.query:  # "" (no criteria) has no base64Binary: FHIR strings are never empty
            query["query"] = base64.b64encode(entities.query.encode()).decode()
        if entities.description:
            query["description"] = printable(entities.description)
        listed.append(query)
    return listed
