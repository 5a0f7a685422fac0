"""PL -> a Location hierarchy (IG PL[Location]): every level the PL names is a Location of
its own, and each is ``partOf`` the next one up.

The IG's chain (its Location[1..6]): bed (PL.3) partOf room (PL.2) partOf floor (PL.8)
partOf point of care (PL.1) partOf facility (PL.4); building (PL.7) partOf facility (the IG's
building row names itself as parent, which we read as the facility above it). A level not
sent is skipped: a bed with a room and a point of care but no floor is partOf the room,
the room partOf the point of care. The encounter references the most granular level.

**Found again by identifier** (mode ensure, so a Location found is used unchanged): each
level carries a derived identifier (system ``urn:medisentinel:hl7v2:location``) whose value
is the path that names it -- ``facility^point of care^room^bed`` cut after the level, the
form the single flat Location of earlier versions used, so those are found again as the
leaves they were; a floor is ``facility^point of care^floor:<PL.8>`` and a building
``facility^building:<PL.7>`` (a room number means something only inside its ward, a floor
or building only inside its facility). PL.10 (comprehensive location identifier), when
sent, identifies the most granular level instead. Two messages creating the same new level
at once cannot both create it: every match is a lock key of the message (locks.py), the
same rule that keeps Practitioners single.

**Bed status** (PV1-40, IG PV1[Encounter]: ``Location.operationalStatus`` of the most
granular level): a bed found is otherwise used unchanged, so the status is planned as a
second resource, an upsert of that Location carrying ``operationalStatus`` alone; only a
message that sends PV1-40 writes the bed, and only when its status changes.

**Looked up from the bed down** (cost): the levels above the most granular are planned
``only_for`` it (Planned.only_for). A Location found is used unchanged and nothing else
refers to its parents, so while the bed exists (a hospital's steady state) a message looks
up and locks the bed alone; only a new bed gets the levels above it looked up (all at once,
a second round), locked, and ensured, parents first, before it is created.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import MapContext, val
from hl7_adapters.values import Repetition

JSON = dict[str, Any]


class Level(NamedTuple):
    component: int  # PL.n
    key: str  # the derived identifier value
    name: str


def _levels(rep: Repetition) -> list[Level]:
    """The levels a PL names, from the top (facility) down to the most granular."""
    facility = val(rep, 4, 1) or val(rep, 4, 2)
    care, room, bed = val(rep, 1, 1), val(rep, 2, 1), val(rep, 3, 1)
    building, floor = val(rep, 7, 1), val(rep, 8, 1)
    levels = []
    if facility:
        levels.append(Level(4, facility, facility))
    if building:
        levels.append(Level(7, f"{facility}^building:{building}", building))
    path = [facility]
    for component, part in ((1, care), (8, floor), (2, room), (3, bed)):
        if not part:
            if component != 8:
                path.append("")  # the flat key keeps a slot for care, room and bed
            continue
        key = "^".join([*path, f"floor:{part}"]) if component == 8 else "^".join([*path, part])
        if component != 8:
            path.append(part)
        levels.append(Level(component, key, part))
    return levels


def _parent(levels: list[Level], index: int) -> int | None:
    """The index of the level a level is partOf (rules in the module doc)."""
    component = levels[index].component
    if component == 4:
        return None
    if component in (7, 1):  # building, point of care: in the facility
        return 0 if levels[0].component == 4 else None
    above = [i for i in range(index) if levels[i].component in (4, 1, 8, 2)]
    return above[-1] if above else None


def plan_location(
    ctx: MapContext,
    rep: Repetition,
    status: JSON | None = None,
    origin: tuple[str, int, int] | None = None,
) -> JSON | None:
    """Plan the Locations of one PL (parents first); the Reference to the most granular.
    `status` (PV1-40): the most granular level's operationalStatus (see the module doc)."""
    levels = _levels(rep)
    description = val(rep, 9)
    if not levels and not description:
        return None
    if not levels:  # only a description: one Location named by it
        levels = [Level(9, description, description)]
    leaf = len(levels) - 1
    comprehensive = dt.ei_identifier_from(rep, 10)
    urls: list[str] = []
    for i, level in enumerate(levels):
        identifier = {"system": ids.LOCATION_KEY_SYSTEM, "value": level.key.rstrip("^")}
        if i == leaf and comprehensive is not None:
            identifier = comprehensive
        physical = t.PL_PHYSICAL_TYPE.get(level.component)
        name = level.name
        if i == leaf:  # as the flat Location was named: its description, else its path
            parts = [val(rep, n, 1) for n in (1, 2, 3)]
            name = description or " ".join(p for p in parts if p) or level.name
        parent = _parent(levels, i)
        resource = dt.compact(
            {
                "resourceType": "Location",
                "identifier": [identifier],
                "name": name,
                "description": description if i == leaf and description != name else None,
                "mode": "instance",
                "physicalType": {"coding": [physical._asdict()]} if physical else None,
                "partOf": {"reference": urls[parent]} if parent is not None else None,
            }
        )
        only_for = None if i == leaf else frozenset[str]()  # (the leaf is added last)
        urls.append(ctx.add(resource, "ensure", ids.match_of(identifier), only_for=only_for))
    ctx.planned_of(urls[leaf]).only_for = None  # (also when another PL planned it above one)
    if status is not None:
        _plan_status(ctx, urls[leaf], status, origin)
    for url in urls[:leaf]:  # ensured when the leaf is new; a level ensured always stays so
        above = ctx.planned_of(url)
        if above.only_for is not None:
            above.only_for |= {urls[leaf]}
    ref: JSON = {"reference": urls[leaf]}
    leaf_name = ctx.resource_of(urls[leaf]).get("name")
    if leaf_name:
        ref["display"] = leaf_name
    return ref


def _plan_status(
    ctx: MapContext, url: str, status: JSON, origin: tuple[str, int, int] | None
) -> None:
    """A new level is created with its status; a found one is used unchanged, so the status
    is a second, separate upsert of that Location with the status alone (nothing else of it
    replaced; unchanged: no version; an older message's: kept, by the event clock)."""
    leaf = ctx.planned_of(url)
    leaf.resource["operationalStatus"] = status
    body = {"resourceType": "Location", "operationalStatus": status}
    ctx.add(body, "upsert", leaf.match, origin=origin, separate=True)
