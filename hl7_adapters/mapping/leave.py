"""A21 / A22 (leave of absence, return) -> Encounter.statusHistory.

R4 Encounter: ``onleave`` is "the Encounter has begun, but the patient is temporarily on
leave", and ``statusHistory`` (status + period) keeps the statuses an Encounter has had
"without needing to read through the historical versions of the resource". The IG maps no
A21/A22 message; v2.5 3.3.21/3.3.22 say the event is the leave's start or end, whose time is
EVN-6 (event occurred), else EVN-2 (recorded), else MSH-7. So:

* A21: status ``onleave`` and an entry ``{"status": "onleave", "period": {"start": t}}``;
* A22: status ``in-progress`` and an entry ``{"status": "onleave", "period": {"end": t}}``,
  which the merge folds into the stored open leave (fold_leaves), closing it.

Each leave is its own entry (a list part keyed by its times), so a second leave is added and
a re-sent message writes nothing new; entries of other statuses (another client's) are kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hl7_adapters.mapping import periods
from hl7_adapters.mapping.context import MapContext, first, val
from hl7_adapters.mapping.plan import Parts

JSON = dict[str, Any]
ON_LEAVE = "onleave"
_SIDE = {"A21": "start", "A22": "end"}  # which end of the leave the event is


def leave_history(ctx: MapContext, trigger: str) -> list[JSON]:
    """The statusHistory entry an A21/A22 makes (none for other events, or without a time)."""
    side = _SIDE.get(trigger)
    if side is None:
        return []
    evn = ctx.msg.segment("EVN")
    when = None
    if evn is not None:
        for field in (6, 2):
            sent = val(first(evn, field))
            if sent and (when := ctx.at(evn, field).datetime(sent)):
                break
    when = when or ctx.msg.timestamp_fhir
    return [{"status": ON_LEAVE, "period": {side: when}}] if when else []


def leave_part(entry: JSON) -> str | None:
    """A leave is known by its times; an entry of another status is no part of ours."""
    if entry.get("status") != ON_LEAVE:
        return None
    period = entry.get("period") or {}
    return f"{period.get('start', '')}|{period.get('end', '')}"


def fold_leaves(entries: list[JSON]) -> list[JSON]:
    """A return (a leave with only its end) closes the latest open leave that began before
    it; one whose end a stored leave already has (a re-sent A22) goes; one with no open
    leave stays as it is (the patient was on leave until then). A re-opened leave whose
    start a closed one has (an A21 re-applied after its A22) goes too."""
    out = list(entries)
    for entry in [e for e in out if _leave(e) and set(_period(e)) == {"end"}]:
        end = _period(entry)["end"]
        out.remove(entry)
        if any(_period(e).get("end") == end for e in out if _leave(e)):
            continue
        opened = [
            i
            for i, e in enumerate(out)
            if _leave(e) and "end" not in _period(e) and _not_after(_period(e).get("start"), end)
        ]
        if opened:
            i = opened[-1]
            out[i] = {**out[i], "period": periods.settled({**_period(out[i]), "end": end})}
        else:
            out.append(entry)
    closed = {_period(e).get("start") for e in out if _leave(e) and "end" in _period(e)}
    return [
        e
        for e in out
        if not (_leave(e) and set(_period(e)) == {"start"} and _period(e)["start"] in closed)
    ]


LEAVES = Parts(key=leave_part, settle=fold_leaves)


def _leave(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("status") == ON_LEAVE


def _period(entry: JSON) -> JSON:
    period = entry.get("period")
    return period if isinstance(period, dict) else {}


def _not_after(start: str | None, end: str) -> bool:
    """`start` is no later than `end` (FHIR dateTimes; to the day when one has no time)."""
    if start is None:
        return False
    if "T" in start and "T" in end:
        return datetime.fromisoformat(start) <= datetime.fromisoformat(end)
    return start[:10] <= end[:10]
