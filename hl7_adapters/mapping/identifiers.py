"""Identifier systems and match queries: how a v2 identifier becomes one stable FHIR key.

Everything that finds a stored resource again (a Patient by PID-3, an Encounter by PV1-19, a
Device by OBX-18, a corrected Observation) depends on the same identifier giving the same
``system|value`` in every message. This module is the single place that decides it.

**System from an HD** (CX.4 assigning authority, EI.2-4, XCN.9, PL.11), first rule that fits:

1. universal ID type ``ISO`` (or no type) and an OID universal ID -> ``urn:oid:<oid>``
   (the IG's CX map: "if CX.4 is a system, map it to .system");
2. type ``UUID``/``GUID`` and a UUID -> ``urn:uuid:<uuid>``;
3. type ``URI``/``URL`` and an absolute URI -> the URI itself;
4. a namespace ID -> ``urn:medisentinel:hl7v2:aa:<namespace>`` (percent-encoded, case kept):
   a namespace such as ``MSH_MRN`` is only meaningful inside one sender's feed, so it gets a
   URI in our own namespace rather than a guessed public one;
5. only a universal ID of another type (``EUI-64``, ``DNS``, ``HCD``, an ISO value that is not
   an OID) -> ``urn:medisentinel:hl7v2:<type>:<universal id>``;
6. nothing -> no system.

**Match queries** are FHIR search query strings, as the applier hands them to the service's
conditional-search door (``parse_qsl``): ``identifier=<system>|<value>`` with the FHIR search
escapes (``\\``, ``|``, ``,``, ``$``) applied to each part and the whole token URL-quoted. A
value without a system matches as ``identifier=|<value>`` (stored identifier without system).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

LOCAL = "urn:medisentinel:hl7v2"
# Derived (not sent) identifiers: one system per kind, value built from message keys.
OBSERVATION_KEY_SYSTEM = f"{LOCAL}:obx"
RELATED_PERSON_KEY_SYSTEM = f"{LOCAL}:nk1"
ALLERGY_KEY_SYSTEM = f"{LOCAL}:al1"
VISIT_KEY_SYSTEM = f"{LOCAL}:visit"  # a visit sent without PV1-19 (mapping/adt.py)
LOCATION_KEY_SYSTEM = f"{LOCAL}:location"
DISCHARGE_LOCATION_KEY_SYSTEM = f"{LOCAL}:dld"  # PV1-37: one Location per type (encounter.py)
MOTHER_KEY_SYSTEM = f"{LOCAL}:mother"  # PID-21: the mother RelatedPerson (demographics.py)
DIAGNOSIS_KEY_SYSTEM = f"{LOCAL}:dg1"  # a DG1 without an authoritative DG1-20
SPECIMEN_KEY_SYSTEM = f"{LOCAL}:spm"  # a specimen sent without SPM-2 (mapping/specimen.py)
PID_OBSERVATION_KEY_SYSTEM = f"{LOCAL}:pid"  # race / ethnic group (mapping/demographics.py)
# IEEE EUI-64 as used by IHE PCD (OBX-18 "0123456789ABCDEF^EUI-64"): the IEEE 11073 system
# identifier OID used by the HL7 Personal Health Device IG for Device.identifier.
EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"

_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_QUERY_SAFE = re.compile(r"[A-Za-z0-9_.~:/|-]*")
_SEARCH_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", ",": "\\,", "$": "\\$"})


def is_oid(value: str) -> bool:
    return _OID.fullmatch(value) is not None


def hd_system(namespace: str, universal_id: str = "", universal_id_type: str = "") -> str | None:
    """The identifier system for an assigning authority / namespace (rules in the module doc)."""
    namespace, uid, kind = namespace.strip(), universal_id.strip(), universal_id_type.strip()
    upper = kind.upper()
    if uid:
        if upper in ("ISO", "") and is_oid(uid):
            return f"urn:oid:{uid}"
        if upper in ("UUID", "GUID") and _UUID.fullmatch(uid):
            return f"urn:uuid:{uid.lower()}"
        if upper in ("URI", "URL") and _ABSOLUTE_URI.fullmatch(uid):
            return uid
    if namespace:
        return f"{LOCAL}:aa:{quote(namespace, safe='')}"
    if uid:
        return f"{LOCAL}:{quote((kind or 'uid').lower(), safe='')}:{quote(uid, safe='')}"
    return None


def assigner(
    namespace: str, universal_id: str = "", universal_id_type: str = ""
) -> dict[str, Any] | None:
    """Identifier.assigner as a logical reference (IG CX.4 -> assigner(Organization)).

    No Organization resource is planned: the assigner is named (display) and, when it has a
    global ID, identified, which is what a reader needs without a resource per feed.
    """
    namespace, uid = namespace.strip(), universal_id.strip()
    ref: dict[str, Any] = {}
    system = hd_system("", uid, universal_id_type) if uid else None
    if system is not None and not system.startswith(LOCAL):
        ref["identifier"] = {"system": "urn:ietf:rfc:3986", "value": system}
    if namespace:
        ref["display"] = namespace
    return ref or None


def search_escape(text: str) -> str:
    """FHIR search escaping of one token part (``\\``, ``|``, ``,``, ``$``)."""
    return text.translate(_SEARCH_ESCAPES)


def identifier_match(system: str | None, value: str) -> str:
    """``identifier=system|value`` as a query string for the conditional-search door."""
    token = f"{search_escape(system or '')}|{search_escape(value)}"
    if _QUERY_SAFE.fullmatch(token):
        return "identifier=" + token  # the common case: nothing to quote
    return "identifier=" + quote(token, safe=":/|")


def match_of(identifier: dict[str, Any]) -> str:
    """The match query for a FHIR Identifier dict (which must have a value)."""
    return identifier_match(identifier.get("system"), str(identifier["value"]))


def key_part(identifier: dict[str, Any] | None) -> str:
    """``system|value`` of an identifier, for building derived identifier values."""
    if not identifier:
        return ""
    return f"{identifier.get('system', '')}|{identifier.get('value', '')}"
