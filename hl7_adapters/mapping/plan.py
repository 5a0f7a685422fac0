"""What a mapped HL7 v2 message asks of the FHIR store: the contract between mapping and applying.

Mapping (the rest of this package) is pure: ER7 message in, a :class:`MappingResult` out, no
database. Applying (``hl7_adapters/apply.py``) turns the result into interactions on the one
door, inside one unit of work, in the order given. Keeping the two apart lets every mapping
table be tested field by field without a server, and keeps the door the only writer.

References between planned resources use their ``full_url`` (``urn:uuid:...``), as inside a
FHIR transaction Bundle; the applier rewrites them to the ids the resources end up with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hl7_adapters.ack import AckError

# upsert: find by `match`; if found, merge the mapped elements into it (elements present in
#         the message replace the stored ones, `nulls` are removed, the rest is kept) and
#         update; else create. (A08 updating a Patient, a corrected OBX updating its Observation.)
# ensure: find by `match`; if found, use it unchanged; else create. (A Practitioner named in
#         PV1-7, a Device named in OBX-18, the Patient of an ORU whose PID only identifies.)
# create: always a new resource (nothing identifies it across messages).
# update: an upsert that must find its resource: not found is an error (AE 204 at its
#         origin). (A cancel without PV1-19, found by the admission's derived visit key.)
Mode = Literal["upsert", "ensure", "create", "update"]


@dataclass(frozen=True)
class Parts:
    """A top-level element a message may send in part, because the mapping builds it from
    several HL7 fields (Encounter.period from PV1-44 and PV1-45). An upsert merges it part by
    part, so that a field left empty leaves its part of the stored element as it is (HL7 v2:
    an empty field means "no change", only ``""`` deletes).

    A complex element (``key`` None): its children are the parts; a child sent replaces the
    stored one (and the stored ``_child``, its primitive's extensions), the others stay.
    A list (``key`` set): ``key`` names the part an entry belongs to (the field it comes
    from, e.g. "PV1-6"), None for an entry no field of the message makes (kept); the entries
    sent replace the stored entries of their parts. ``settle``: makes the merged value
    consistent again (a Period's ends kept orderable, mapping/periods.py). ``default_only``:
    the mapped value is a guess for a new resource, a stored value stays (the status of an
    update event that says nothing of the visit's state). ``unmarked``: for a list whose
    entries carry the mark of their field (mapping/sources.py), what an entry is compared by
    without its mark; a stored entry without a part that compares equal to a sent entry is
    taken as that entry's part (replaced, not duplicated), any other is kept.
    ``across_parts``: with ``unmarked``, so is a stored entry of a part the message does not
    send (an identifier stored from PID-4 and now sent in PID-2 is one identifier, not two).
    ``children``: a list whose part is one entry made by several fields (an allergy's
    reaction: AL1-4 severity, AL1-5 manifestation): the entry sent is merged child by child
    into the stored entry of its part, as a complex element is. ``unfold``: for a list one
    of whose entries may hold a child another field made (PID-12's county as the district of
    the PID-11 address), that child taken out as an entry of its own part, so that the parts
    merge apart; ``settle`` folds it back. ``settle`` also runs on a new resource."""

    key: Callable[[dict[str, Any]], str | None] | None = None
    settle: Callable[[Any], Any] | None = None
    default_only: bool = False
    unmarked: Callable[[dict[str, Any]], object] | None = None
    across_parts: bool = False
    children: bool = False
    unfold: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None


@dataclass
class Planned:
    full_url: str  # "urn:uuid:<uuid4>"; other planned resources reference it by this
    resource: dict[str, Any]  # FHIR R4 JSON, without id; of meta only security labels
    mode: Mode = "create"
    match: str | None = None  # search query that finds the stored instance: "identifier=sys|val"
    # Elements the message deleted (with "", or by its meaning: A13 ends a discharge):
    # top-level names, "element.child" for one child of a top-level element, or
    # "element[part]" for the entries of one part of a list (see Parts).
    nulls: frozenset[str] = frozenset()
    # Where the match comes from (segment, its sequence, field), for an ERR-2 that points
    # the sender at the field to fix when the match finds the wrong patient's resource.
    origin: tuple[str, int, int] | None = None
    # Written only when the sender's grant allows its type (hl7_adapters/optional.py): for
    # resources added to a message's mapping after feeds had tokens (PID-10/22 Observations).
    supplementary: bool = False
    # None: applied in its turn. A set of full_urls: applied only when one of those planned
    # resources is created, just before it (a parent Location, which only a new child refers
    # to: once the bed exists, its room and ward need not be looked up). Its match is then
    # looked up and locked late (hl7_adapters/locks.py).
    only_for: frozenset[str] | None = None
    # The top-level elements merged part by part (see Parts); the others replace the stored.
    parts: dict[str, Parts] = field(default_factory=dict)

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


@dataclass
class Merge:
    """A40: the patient found by `retired` is merged into the one found by `survivor`."""

    survivor: str  # Patient search query, e.g. "identifier=urn:oid:2.16.840.1.113883.19|123"
    retired: str
    survivor_full_url: str | None = None  # when the message also planned the survivor
    origin: tuple[str, int, int] | None = None  # the MRG-1 that names `retired` (ERR-2)


@dataclass
class MappingResult:
    planned: list[Planned] = field(default_factory=list)  # dependency order: referenced first
    merges: list[Merge] = field(default_factory=list)
    event_time: str | None = None  # FHIR instant of EVN-2, else MSH-7 (ordering of updates)
    patient_match: str | None = None  # the Patient this message is about (ordering key)
    warnings: list[AckError] = field(default_factory=list)  # non-fatal: ERR severity W in the AA


class MappingError(Exception):
    """Content the mapping cannot accept (a required field missing or unreadable): AE."""

    def __init__(self, errors: list[AckError]) -> None:
        super().__init__("; ".join(e.text for e in errors))
        self.errors = errors


class UnsupportedMessage(Exception):
    """A message type, trigger or version this server does not map: AR."""

    def __init__(self, error: AckError) -> None:
        super().__init__(error.text)
        self.error = error
