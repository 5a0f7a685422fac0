"""SPM -> Specimen (IG ORU_R01 message map: SPECIMEN group SPM[Specimen]).

Each SPM of an order becomes a Specimen of the message's patient, listed in the order's
DiagnosticReport.specimen; when an order has exactly one specimen, its Observations name it
too (Observation.specimen holds one). Mapped: SPM-2 placer/filler specimen ids (EIP ->
identifiers), SPM-4 type (table 0487), SPM-7 collection method (0488), SPM-8 source site,
SPM-12 quantity, SPM-14 description (note), SPM-17 collection time (DR), SPM-18 received
time, SPM-20 availability (Y available, N unavailable).

**Match.** Upsert, found by the filler specimen id (SPM-2.2), else the placer id (SPM-2.1),
when it has an assigning authority; else by a derived identifier
``urn:medisentinel:hl7v2:spm|<order key>|<that id, else SPM-1, else its position>`` so a
re-sent result updates the same Specimen. A specimen id of another patient is refused like an
order number (AE 205 at SPM-2).
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import obx as ox
from hl7_adapters.mapping import periods
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, first, val
from hl7_adapters.mapping.numbers import decimal
from hl7_adapters.values import Segment

JSON = dict[str, Any]
_AVAILABILITY = {"Y": "available", "N": "unavailable"}


def _specimen_ids(spm: Segment) -> list[JSON]:
    """SPM-2 (EIP): component 1 the placer's id, component 2 the filler's (subcomponents EI)."""
    rep = first(spm, 2)
    found = []
    for component, kind in ((2, "FILL"), (1, "PLAC")):
        ident = dt.ei_identifier_from(rep, component) if rep is not None else None
        if ident is not None:
            code = {"system": t.V2 + "0203", "code": kind, "display": t.IDENTIFIER_TYPE_0203[kind]}
            found.append({"type": {"coding": [code]}, **ident})
    return found


def _collection(ctx: MapContext, spm: Segment) -> JSON:
    at = ctx.at(spm)
    collection: JSON = {}
    when = first(spm, 17)
    span = periods.period(at.sub(17), val(when, 1), at.sub(17), val(when, 2), (1, 2))
    if "start" in span and "end" in span and span != {"start": span["end"], "end": span["end"]}:
        collection["collectedPeriod"] = span
    elif "start" in span:
        collection["collectedDateTime"] = span["start"]
    method = dt.codeable_concept(first(spm, 7), "0488")
    if method:
        collection["method"] = method
    site = dt.codeable_concept(first(spm, 8))
    if site:
        collection["bodySite"] = site
    amount = first(spm, 12)
    number = decimal(val(amount, 1))
    if number is not None:
        unit = val(amount, 2, 2) or val(amount, 2, 1)  # CQ.2 (CWE): text, else the code
        collection["quantity"] = ox.quantity(number, {"unit": unit} if unit else {})
    return collection


def plan_specimen(
    ctx: MapContext, spm: Segment, patient_url: str, order_key: str, position: int
) -> str:
    """Plan one SPM's Specimen (upsert); returns its full_url."""
    at = ctx.at(spm)
    identifiers = _specimen_ids(spm)
    if not identifiers or not identifiers[0].get("system"):
        # Without an assigning authority an id ("SpecimenID") names nothing beyond its order:
        # it is found under the order, never taken for another patient's specimen.
        number = identifiers[0]["value"] if identifiers else val(first(spm, 1)) or str(position)
        key = {"system": ids.SPECIMEN_KEY_SYSTEM, "value": f"{order_key}|{number}"}
        identifiers = [key, *identifiers]
    resource: JSON = {"resourceType": "Specimen", "identifier": identifiers}
    status = _AVAILABILITY.get(val(first(spm, 20)).upper())
    if status:
        resource["status"] = status
    kind = dt.codeable_concept(first(spm, 4), "0487")
    if kind:
        resource["type"] = kind
    resource["subject"] = {"reference": patient_url}
    received = at.sub(18).datetime(val(first(spm, 18)))
    if received:
        resource["receivedTime"] = received
    collection = _collection(ctx, spm)
    if collection:
        resource["collection"] = collection
    text = first(spm, 14)
    description = at.text(text) if text is not None else ""
    if description:
        resource["note"] = [{"text": description}]
    match = ids.match_of(identifiers[0])
    return ctx.add(resource, "upsert", match, origin=ctx.origin(spm, 2))
