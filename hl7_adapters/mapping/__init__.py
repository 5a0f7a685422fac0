"""Pure mapping of parsed HL7 v2 messages to FHIR R4 resources: ``map_message``.

Follows the HL7 v2-to-FHIR Implementation Guide (https://build.fhir.org/ig/HL7/v2-to-fhir/,
STU1) field by field; each module names the IG maps it implements:

* ``tables``      code tables (gender, marital status, patient class, events, flags, statuses)
* ``identifiers`` identifier systems from assigning authorities, match queries
* ``datatypes``   CX, EI, XPN, XAD, XTN, CWE, XCN; ``locations`` PL -> the Location hierarchy
                  ``periods``: a Period from two timestamps that R4's per-1 can order
                  ``lookups``: a code looked up in an HL7 table, unknown -> ERR 103 (W)
* ``patient``     PID -> Patient (and the Patient match rule, nulls); ``demographics``
                  PID-10/22 (Observations) and PID-23/26/28 (Patient extensions)
* ``adt``         ADT A01-A08/A11-A14/A21/A22/A27/A28/A31/A38, A40 merges (``nk1``: NK1;
                  ``dg1``: DG1;
                  OBX in an ADT: ``oru.map_adt_observations``); ``encounter`` PV1/PV2 ->
                  Encounter (``visit_tables``; ``visit_parts``: what an update merges
                  field by field, what ``""`` deletes; ``leave``: A21/A22 statusHistory)
* ``oru`` ``obx`` ORU^R01 -> DiagnosticReport, Observation (``sampled``: OBX-2 NA;
                  ``numbers``: HL7 NM values)
* ``specimen``    SPM -> Specimen (ORU^R01 SPECIMEN group)
* ``pcd``         OBX-18 devices and the IHE PCD-01 containment tree
* ``organizations`` OBX-15/23/24 -> the performing Organization of a result
* ``plan``        the output contract (MappingResult, Parts) shared with the applier

No database and no I/O: a message in, a :class:`MappingResult` out, or
:class:`UnsupportedMessage` (AR: type, trigger or version we do not map) or
:class:`MappingError` (AE: content a required mapping cannot use, every problem listed).
"""

from __future__ import annotations

import re

from hl7_adapters.ack import AckError
from hl7_adapters.dates import to_fhir_datetime
from hl7_adapters.er7 import Message
from hl7_adapters.mapping.adt import map_adt
from hl7_adapters.mapping.context import MapContext
from hl7_adapters.mapping.oru import map_adt_observations, map_oru
from hl7_adapters.mapping.plan import (
    MappingError,
    MappingResult,
    Merge,
    Planned,
    UnsupportedMessage,
)

# docs/hl7v2.md "Supported ADT events" lists what each does to the Encounter.
ADT_TRIGGERS = frozenset(
    "A01 A02 A03 A04 A05 A06 A07 A08 A11 A12 A13 A14 A21 A22 A27 A28 A31 A38 A40".split()
)
ORU_TRIGGERS = frozenset({"R01"})
SUPPORTED: dict[str, frozenset[str]] = {"ADT": ADT_TRIGGERS, "ORU": ORU_TRIGGERS}
_VERSION = re.compile(r"2\.(\d+)(?:\.\d+)*")

__all__ = [
    "MappingError",
    "MappingResult",
    "Merge",
    "Planned",
    "UnsupportedMessage",
    "check_supported",
    "map_message",
]


def check_supported(msg: Message) -> None:
    """Raise UnsupportedMessage (AR) for a version outside 2.2-2.8 or a type/trigger we do
    not map; cheap, so a receiver can refuse before doing any work."""
    version = msg.version
    found = _VERSION.fullmatch(version)
    if found is None or not 2 <= int(found.group(1)) <= 8:
        raise UnsupportedMessage(
            AckError(
                203, f"HL7 version '{version}' is not supported (2.2 to 2.8 are)", "E", "MSH", 1, 12
            )
        )
    code, trigger = msg.message_code, msg.trigger_event
    triggers = SUPPORTED.get(code)
    if triggers is None:
        raise UnsupportedMessage(
            AckError(
                200,
                f"message type '{code or '(none)'}' is not supported (ADT and ORU^R01 are)",
                "E",
                "MSH",
                1,
                9,
            )
        )
    if trigger not in triggers:
        raise UnsupportedMessage(
            AckError(
                201, f"event '{code}^{trigger or '(none)'}' is not supported", "E", "MSH", 1, 9
            )
        )


def _event_time(msg: Message, zone: str | None) -> str | None:
    """EVN-2 (recorded date/time), else MSH-7, as a FHIR dateTime at the sent precision
    (an instant whenever the sender gave seconds and an offset)."""
    evn = msg.segment("EVN")
    if evn is not None:
        recorded = to_fhir_datetime(evn.get("2"), zone)
        if recorded:
            return recorded
    return msg.timestamp_fhir


def map_message(msg: Message, *, default_offset: str | None = None) -> MappingResult:
    """Map one parsed message to the resources, merges and warnings it asks for.

    ``default_offset`` ("+01:00") is the sender's time zone for times sent without one when
    MSH-7 carries none either (FHIR needs a zone on every time); None keeps such values at
    date precision, with a warning.
    """
    check_supported(msg)
    ctx = MapContext(msg, default_offset)
    merges: list[Merge] = []
    if msg.message_code == "ADT":
        patient, merges = map_adt(ctx, msg.trigger_event)
        if patient is not None and not merges:
            map_adt_observations(ctx, patient)
    else:
        patient = map_oru(ctx)
    ctx.raise_errors()
    return MappingResult(
        planned=ctx.planned,
        merges=merges,
        event_time=_event_time(msg, ctx.zone),
        patient_match=patient.match if patient is not None else None,
        warnings=ctx.warnings,
    )
