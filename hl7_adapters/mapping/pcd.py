"""Devices from OBX-18 and the IHE PCD-01 containment hierarchy (OBX-4 dotted sub-ids).

OBX-18 (equipment instance identifier, EI) -> Observation.device, a Device planned with mode
"ensure" and matched by that identifier (IG OBX[Observation] row OBX-18 -> device(Device.
identifier)); with several repetitions the first names the device. This holds for every ORU.

IHE PCD-01 (an ORU whose OBX-3 codes are MDC, or whose MSH-21 names the IHE PCD profile)
sends an 11073 containment tree in OBX-4: ``<mds>.<vmd>.<channel>.<metric>``. What we do:

* an MDS row (sub-id of one part, e.g. ``1``) or a VMD row (two parts, no value) carrying
  OBX-18 defines a Device: identifier from OBX-18, Device.type from its OBX-3 (e.g.
  MDC_DEV_SPEC_PROFILE_BP). Without a value neither row is an Observation: both describe
  the equipment, and their device is inherited by the rows below;
* a channel row without value (three parts, OBX-2 and OBX-5 empty, e.g. ``1.0.1`` NIBP)
  becomes a grouping Observation whose ``hasMember`` lists the Observations under it (the
  nearest enclosing group by sub-id prefix);
* every metric (any row with a value) is an Observation; its device is its own OBX-18, else
  the one of the nearest enclosing row that has OBX-18, else that of its MDS;
* DiagnosticReport.result lists only the top of the tree (rows without an enclosing group),
  members are reached through hasMember.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hl7_adapters.er7 import Message
from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping.context import MapContext, Where, first, val
from hl7_adapters.values import Segment

JSON = dict[str, Any]


@dataclass
class Entry:
    """One OBX with its NTEs, and what the tree analysis decided about it."""

    obx: Segment
    notes: list[Segment]
    where: Where
    sub_id: str = ""
    container: bool = False  # no value: a grouping row (MDS/VMD/channel)
    observation: bool = True  # becomes an Observation
    device: JSON | None = None  # Reference to the Device
    parent: Entry | None = None
    members: list[Entry] = field(default_factory=list)
    full_url: str = ""
    specimen: int | None = None  # ORU SPECIMEN_OBSERVATION: the OBX follows its order's SPM n

    @property
    def depth(self) -> int:
        return self.sub_id.count(".") + 1 if self.sub_id else 0


def is_pcd(msg: Message) -> bool:
    if "IHE PCD" in msg.msh.raw(21).upper():
        return True
    return any(val(first(obx, 3), 3).upper() == "MDC" for obx in msg.segments("OBX"))


def device_ref(ctx: MapContext, obx: Segment, device_type: JSON | None = None) -> JSON | None:
    """The Device named by OBX-18 (planned, ensure), as a Reference; None without OBX-18."""
    identifier = dt.ei_identifier(first(obx, 18))
    if identifier is None:
        return None
    resource: JSON = {"resourceType": "Device", "identifier": [identifier]}
    if device_type:
        resource["type"] = device_type
    return {"reference": ctx.add(resource, "ensure", ids.match_of(identifier))}


def arrange(ctx: MapContext, entries: list[Entry], pcd: bool) -> None:
    """Decide devices, containers and membership for the OBX rows of one OBR."""
    for entry in entries:
        entry.sub_id = val(first(entry.obx, 4), 1)
        entry.container = not val(first(entry.obx, 2)) and not entry.where.reps(5)
    if not pcd:
        for entry in entries:
            entry.device = device_ref(ctx, entry.obx)
        return
    by_sub = {e.sub_id: e for e in entries if e.sub_id}
    for entry in entries:
        names_device = entry.depth == 1 or (entry.depth == 2 and entry.container)  # MDS/VMD
        device_type = dt.codeable_concept(first(entry.obx, 3)) if names_device else None
        entry.device = device_ref(ctx, entry.obx, device_type)
        if entry.container and entry.depth <= 2:
            entry.observation = False  # MDS / VMD rows describe the device, not a measurement
    for entry in entries:
        ancestors = [by_sub.get(prefix) for prefix in _prefixes(entry.sub_id)]
        if entry.device is None:
            entry.device = next((a.device for a in ancestors if a and a.device), None)
        entry.parent = next((a for a in ancestors if a and a.observation and a.container), None)
        if entry.parent is not None and entry.observation:
            entry.parent.members.append(entry)


def _prefixes(sub_id: str) -> list[str]:
    """'1.0.1.2' -> ['1.0.1', '1.0', '1'] (nearest first)."""
    parts = sub_id.split(".")
    return [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
