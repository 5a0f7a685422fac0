"""The lock keys of a message, and taking them (PostgreSQL advisory transaction locks).

A message locks, in its transaction's first statement, everything it may create: its
patient, every resource it finds by a match (so two messages cannot both create the same
new Practitioner), its control id. All in one statement, in ascending order, so messages
sharing keys cannot deadlock.

A merge (A40) also takes, before it moves anything, the keys of every identifier of the
patients it retires and of those merged into them earlier (`patient_keys`), without
waiting, as below: a message naming one of them waits for the merge, or the merge for it.

The levels above a Location (``Planned.only_for``: its room, ward, facility) are needed
only when the Location itself is new, which is rare once a hospital's beds exist; they are
not locked up front. When a new Location needs them, `try_lock_keys` takes them without
waiting (so no lock order is broken: a lock that waits is only ever taken in the first
statement); if another transaction holds one, the message starts again with every key
locked up front (`LocksNeeded`, handled by ingest).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.fhir import locks
from app.fhir.storage import UnitOfWork
from hl7_adapters.edits import or_tokens
from hl7_adapters.mapping.identifiers import match_of
from hl7_adapters.mapping.plan import MappingResult, Planned


class LocksNeeded(Exception):
    """A new Location needs its parents, or a merge the keys of the patients it retires,
    and another transaction holds one of them: roll back and apply the message again with
    all its keys locked first (`plan_keys(all)` and these `keys`)."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        super().__init__("keys held by another transaction")
        self.keys = tuple(keys)


def lock_keys(uow: UnitOfWork, keys: Iterable[str]) -> None:
    """Serialize transactions that touch the same keys (a patient, a matched resource, a
    message's control id) until this transaction ends: app.fhir.locks, all in one statement
    in ascending order, so that two messages sharing several keys cannot deadlock."""
    locks.lock_keys(uow, keys)


def try_lock_keys(uow: UnitOfWork, keys: Iterable[str]) -> None:
    """Lock more keys later in the transaction, without waiting; LocksNeeded if one is held
    by another transaction (waiting here could deadlock with one waiting for ours)."""
    keys = list(keys)
    if not locks.try_lock_keys(uow, keys):
        raise LocksNeeded(keys)


key_number = locks.key_number


def patient_keys(bodies: Iterable[dict[str, Any]]) -> list[str]:
    """The key a message locks when its PID names one of these Patients, by whichever of
    their identifiers it is named (plan_keys: ``Patient?<match>``). A merge takes them for
    the patients it retires, so that a message filing under one of them by another
    identifier, or under a patient merged into one earlier, does not slip past the move."""
    return [
        f"Patient?{match_of(i)}"
        for body in bodies
        for i in body.get("identifier") or []
        if isinstance(i, dict) and i.get("value")
    ]


def _alternatives(rtype: str, match: str) -> list[str]:
    """The keys of a match naming one of several identifiers (an A06 renumbering a visit:
    MRG-5 or PV1-19): each one's, so that a message naming either waits for it."""
    name, _, value = match.partition("=")
    tokens = or_tokens(value) if name == "identifier" and "," in value else []
    if len(tokens) < 2:
        return [f"{rtype}?{match}"]
    return [f"{rtype}?identifier={t}" for t in tokens]


def planned_key(p: Planned) -> str:
    return f"{p.resource_type}?{p.match}"


def plan_keys(result: MappingResult, *, held: bool = False) -> list[str]:
    """The lock keys of a mapped message: its patient and everything it finds by a match;
    with `held`, also the levels above its Locations (see the module doc)."""
    keys = [f"Patient?{result.patient_match}"] if result.patient_match else []
    for p in result.planned:
        if p.match and (held or p.only_for is None):
            keys += _alternatives(p.resource_type, p.match)
    for merge in result.merges:
        keys += [f"Patient?{merge.survivor}", f"Patient?{merge.retired}"]
    return keys
