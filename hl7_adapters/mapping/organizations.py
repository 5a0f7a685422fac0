"""The organisation that performed a result (IG OBX[Observation] rows OBX-15, OBX-23, OBX-24).

The IG maps OBX-23 (performing organization name, XON[Organization]) with OBX-24 (its
address, XAD) and OBX-15 (producer's ID, CWE[Organization]: CWE.1 the identifier value,
CWE.3 its system, CWE.2 / CWE.9 the name) to one and the same ``performer[2]``, an
Organization. So both fields build one Organization: its identifiers are XON's (XON.10,
else XON.3, system from XON.6, type XON.7) and OBX-15's, its name XON.1 (else OBX-15's
text), its address OBX-24. It is planned with mode "ensure", matched by its first
identifier, like a Practitioner from OBX-16: found, it is used unchanged. Without any
identifier nothing could find it again, so the performer is a Reference by display only
(as for a Practitioner without XCN.1). OBX-25 (medical director) maps to a PractitionerRole
in the IG, a type no feed grant holds: not mapped.

Organization is a supplementary type (``hl7_adapters/optional.py``): a feed token without
``system/Organization.cru`` gets the result without it.
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping.context import MapContext, Where, first, val
from hl7_adapters.values import Repetition, Segment

JSON = dict[str, Any]


def xon_identifier(rep: Repetition, where: Where) -> JSON | None:
    """XON -> Identifier (IG XON[Organization]): XON.10, else XON.3 (deprecated), the value."""
    value = val(rep, 10) or val(rep, 3)
    if not value:
        return None
    hd = (val(rep, 6, 1), val(rep, 6, 2), val(rep, 6, 3))
    return dt.compact(
        {
            "type": dt.identifier_type(val(rep, 7), where),
            "system": ids.hd_system(*hd),
            "value": value,
        }
    )


def producer_identifier(rep: Repetition) -> JSON | None:
    """OBX-15 -> Identifier (IG CWE[Organization]): CWE.1 the value, CWE.3 the system."""
    value = val(rep, 1)
    if not value:
        return None
    return dt.compact({"system": dt.coding_system(val(rep, 3), val(rep, 14)), "value": value})


def performing_organization(ctx: MapContext, obx: Segment, at: Where) -> JSON | None:
    """OBX-15/23/24 -> a Reference to the performing Organization (rules in the module doc).

    A lab repeats the same three fields on every OBX of a panel: they are mapped once per
    message (ctx.memo; a problem in them is reported once, at the first OBX)."""
    key = ("performing-organization", obx.raw(15), obx.raw(23), obx.raw(24))
    if key not in ctx.memo:
        ctx.memo[key] = _performing_organization(ctx, obx, at)
    found = ctx.memo[key]
    return dict(found) if found else None  # each Observation its own Reference


def _performing_organization(ctx: MapContext, obx: Segment, at: Where) -> JSON | None:
    xon, producer = first(obx, 23), first(obx, 15)
    found = (
        xon_identifier(xon, at.sub(23)) if xon is not None else None,
        producer_identifier(producer) if producer is not None else None,
    )
    identifiers = [i for i in found if i is not None]
    name = val(xon, 1) or val(producer, 2) or val(producer, 9)
    if not identifiers:
        return {"display": name} if name else None
    address = first(obx, 24)
    place = dt.address(address, at.sub(24)) if address is not None else None
    resource = dt.compact(
        {
            "resourceType": "Organization",
            "identifier": identifiers,
            "name": name,
            "address": [place] if place else None,
        }
    )
    url = ctx.add(resource, "ensure", ids.match_of(identifiers[0]))
    return dt.compact({"reference": url, "display": name})
