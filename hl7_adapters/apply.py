"""Apply a MappingResult through the one door, inside the caller's unit of work.

The mapping (``mapping/``) is pure; this module is where a mapped message meets the stored
data. Everything goes through :class:`FhirService` (authorization, audit, outbox happen there);
only the feed's own bookkeeping (the event clock, ``tables.py``) is written directly, in the
same transaction.

Per planned resource, in the order given:

* ``upsert``: find by ``match``; when found, the mapped top-level elements replace the stored
  ones, ``nulls`` are removed, everything else is kept, and the result is written with
  If-Match on the version just read (a concurrent writer makes it fail, and the caller
  retries the whole message). An upsert whose event time is older than the event time that
  last wrote the resource leaves it alone (a warning goes into the ACK): messages for one
  patient that arrive out of order must not make newer data older.
* ``ensure``: find by ``match``, use it unchanged; create it when nothing matches.
* ``create``: always a new resource.

A resource planned ``only_for`` others (the levels above a Location: only a new child refers
to its parent) is held: applied just before one of those is created, else never. Its match
is looked up, and locked, only then (hl7_adapters/locks.py).

``urn:uuid:`` references between planned resources are rewritten to ``Type/id``.

Patients follow FHIR's Patient.link: a merge (A40) retires a Patient (``active: false``,
``link`` replaced-by the survivor), the survivor gets ``link`` replaces, and what referred to
the retired one is moved to the survivor (the steps: merging.py; the move: repoint.py). A
match that finds a retired Patient follows replaced-by to the survivor, so later messages
naming the old identifier land on the survivor; such a redirected upsert keeps the
survivor's identifiers.

Then one Provenance names every resource the message wrote (target, versioned), the message
in the store (entity.what.identifier) and the feed (agent).

Cost: every match is looked up before the first write (lookahead.py says when such a
result is still used), so the rows the writes stage go out in one batch instead of one flush
per resource. For the same reason the event clock rows are written once per message, at the
end (on PostgreSQL in the same round trip as COMMIT): the clock is read only for a resource
found by its match, and a message never reads back the time it is writing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from app.errors import FhirError, Gone, NotFound
from app.fhir import jsonio
from app.fhir.service import FhirService, WriteOutcome
from app.fhir.storage import StoredVersion, UnitOfWork
from hl7_adapters.ack import AckError
from hl7_adapters.applied import Applied, ApplyError, MessageRef
from hl7_adapters.edits import (
    CONTROL_CHARACTERS,
    UnresolvedReference,
    fhir_strings,
    merge_elements,
    not_found_error,
    replaced_by,
    rewrite,
    settled,
    shown,
    stale_warning,
    without_server_elements,
)
from hl7_adapters.locks import planned_key, try_lock_keys
from hl7_adapters.lookahead import Lookahead
from hl7_adapters.mapping.plan import MappingResult, Planned
from hl7_adapters.merging import MergeSteps
from hl7_adapters.provenance import provenance_body
from hl7_adapters.repoint import MAX_MOVED
from hl7_adapters.tables import CLOCKS_OF, PG_CLOCKS, sqlite_clock_upsert

JSON = dict[str, Any]
MAX_LINK_HOPS = 10  # replaced-by chains longer than this are a loop or a mess; stop there


PATIENT_REFERENCES = ("subject", "patient")  # where a mapped resource names its patient


def _patient_id(reference: Any) -> str | None:
    ref = reference.get("reference", "") if isinstance(reference, dict) else ""
    return ref.removeprefix("Patient/") if ref.startswith("Patient/") else None


class Applier:
    def __init__(self, service: FhirService) -> None:
        self.service = service

    def apply(
        self,
        uow: UnitOfWork,
        result: MappingResult,
        message: MessageRef,
        *,
        event_time: int | None,
        held_locked: bool = False,
    ) -> Applied:
        """`held_locked`: the keys of the resources planned `only_for` others are locked
        already (locks.plan_keys(held=True)); else they are locked when needed."""
        result, stripped = fhir_strings(result)
        run = _Run(self.service, uow, message, event_time, held_locked)
        if stripped:
            run.applied.warnings.append(CONTROL_CHARACTERS)
        run.held = [p for p in result.planned if p.only_for is not None]
        run.look_ahead([p for p in result.planned if p.only_for is None])
        for planned in result.planned:
            if planned.only_for is None:
                run.planned(planned)
        for merge in result.merges:
            run.merge(merge)
        run.provenance()
        run.write_clocks()
        return run.applied


class _Run(MergeSteps):
    """One message being applied: its resolved references, cache of what it read, output."""

    def __init__(
        self, service: FhirService, uow: UnitOfWork, message: MessageRef,
        event_time: int | None, held_locked: bool,
    ) -> None:  # fmt: skip
        self.service = service
        self.uow = uow
        self.message = message
        self.event_time = event_time
        self.applied = Applied()
        self.held: list[Planned] = []  # planned only_for others, not applied (yet)
        self._held_locked = held_locked
        self._held_ahead: set[str] = set()  # held resources looked up (and locked) already
        self._bodies: dict[tuple[str, str], tuple[StoredVersion, dict[str, Any]]] = {}
        self._clocks: dict[tuple[str, str], None] = {}  # resources whose clock this sets
        # Clocks read so far, and resources found ahead whose clocks are read with the first
        # (the table changes only at the end of the message, under the message's locks).
        self._clocks_read: dict[tuple[str, str], int | None] = {}
        self._clocks_ahead: list[tuple[str, str]] = []
        self._moves_left = MAX_MOVED  # resources a merge may still move in this message
        self._ahead: Lookahead[tuple[str, bool] | None] = Lookahead(
            self._find,
            self._find_many,
            lambda found: [found[0]] if found else [],
            (ApplyError, FhirError),
        )

    # ------------------------------------------------------------ planned resources

    def planned(self, p: Planned) -> None:
        rtype = p.resource_type
        try:
            found = self._ahead.find(rtype, p.match) if p.match and p.mode != "create" else None
        except ApplyError as exc:  # an ambiguous match: point at the field it comes from
            if exc.error.segment or p.origin is None:
                raise
            segment, sequence, field_ = p.origin
            error = dataclasses.replace(exc.error, segment=segment, sequence=sequence, field=field_)
            raise ApplyError(error) from exc
        if found is None and p.mode == "update":
            raise ApplyError(not_found_error(p))
        if found is None:
            self._held_for(p)
        elif p.mode == "ensure" and not any(key in p.resource for key in PATIENT_REFERENCES):
            self._resolve(p.full_url, rtype, found[0])  # used unchanged: its references
            return  # (a Location's partOf) are not needed, nor resolved (held)
        try:
            body = rewrite(without_server_elements(p.resource), self.applied.resolved)
        except UnresolvedReference as exc:
            raise ApplyError(AckError(207, str(exc))) from exc
        if found is None:  # parts a stored element would complete, settled alone
            outcome = self.service.create(self.uow, rtype, settled(body, p.parts))
            self._wrote(p.full_url, outcome)
            if p.mode == "upsert":
                self._set_clock(rtype, outcome.version.id)
            return
        rid, redirected = found
        self._resolve(p.full_url, rtype, rid)
        if p.mode == "ensure":  # an Encounter named by PV1-19
            self._refuse_other_patients(p, self._body(rtype, rid)[1], body)
            return
        stored, current = self._body(rtype, rid)
        self._refuse_other_patients(p, current, body)  # (even when older: a mix-up is an error)
        stale_after = self._clock(rtype, rid)
        if self.event_time is not None and stale_after is not None:
            if self.event_time < stale_after:
                self.applied.warnings.append(stale_warning(p, stale_after))
                return
        keep = ("identifier",) if redirected else ()
        merged = merge_elements(current, body, p.nulls, keep, p.parts)
        if merged != current:
            outcome = self._update(rtype, rid, stored, merged)
            self._wrote(p.full_url, outcome)
        self._set_clock(rtype, rid)

    def _held_for(self, p: Planned) -> None:
        """Before `p` is created: the resources planned only for it (a new Location's levels
        above), looked up together, locked (locks.py) and applied, parents first."""
        needed = [q for q in self.held if p.full_url in (q.only_for or ())]
        self.held = [q for q in self.held if q not in needed]
        self._held_ahead_for(needed)
        for q in needed:
            self.planned(q)

    def _held_ahead_for(self, held: list[Planned]) -> None:
        """Look up these held resources together; lock (unless locked up front) only those
        missing, then look those up again. A level found is used unchanged and needs no lock:
        locking every level of a new bed made each admission to a new bed hold its facility's
        key to the end of its transaction, one admission at a time (MLLP adt 241-250 -> 136-147
        msgs/s). A level created meanwhile by another transaction is found by the second look:
        the lock is free only once that transaction has committed."""
        fresh = [q for q in held if q.match and q.full_url not in self._held_ahead]
        if not fresh:
            return
        self._held_ahead.update(q.full_url for q in fresh)
        keys = [(q.resource_type, str(q.match)) for q in fresh]
        self._ahead.prepare(keys)
        if self._held_locked:
            return
        missing = [q for q, key in zip(fresh, keys, strict=True) if self._ahead.absent(*key)]
        if missing:
            try_lock_keys(self.uow, [planned_key(q) for q in missing])
            again = [(q.resource_type, str(q.match)) for q in missing]
            self._ahead.forget(again)
            self._ahead.prepare(again)

    def _refuse_other_patients(self, p: Planned, stored: JSON, mapped: JSON) -> None:
        """Nothing is filed under, or moved to, another patient: a visit number, order number
        or identifier of a different person found by the match is an error in the data (AE
        205), not a correction. Patients merged into one (A40) count as the same."""
        for key in PATIENT_REFERENCES:
            before = _patient_id(stored.get(key))
            after = _patient_id(mapped.get(key))
            if before and after and self._survivor(before) != self._survivor(after):
                segment, sequence, field_ = p.origin or ("", None, None)
                where = f"{segment}-{field_}: " if segment else ""
                named = shown(p.match or "") or "named here"
                text = (
                    f"{where}the {p.resource_type} {named} belongs to another patient than "
                    "this message's; nothing of the message was filed"
                )
                raise ApplyError(AckError(205, text, "E", segment, sequence, field_))

    def look_ahead(self, planned: list[Planned]) -> None:
        """Every match, looked up while nothing is staged (see lookahead.py)."""
        matched = [p for p in planned if p.match and p.mode != "create"]
        self._ahead.prepare([(p.resource_type, str(p.match)) for p in matched])
        # A new Location (a bed not found): the levels above it too, while nothing is staged
        # (a second round of look-ups, only for new beds).
        new = {p.full_url for p in matched if self._ahead.absent(p.resource_type, str(p.match))}
        self._held_ahead_for([q for q in self.held if new & (q.only_for or set())])
        self._clocks_ahead = self._ahead.found()

    def _find(self, rtype: str, match: str) -> tuple[str, bool] | None:
        """(id, found through replaced-by links) of the one resource `match` names."""
        return self._one(rtype, match, self.service.find_ids(self.uow, rtype, match, limit=10))

    def _find_many(self, keys: list[tuple[str, str]]) -> list[tuple[str, bool] | None | Exception]:
        """`_find` for each (type, match), in one round trip; an error is returned, not raised."""
        outcomes: list[tuple[str, bool] | None | Exception] = []
        found = self.service.find_ids_many(self.uow, keys, limit=10)
        for (rtype, match), ids in zip(keys, found, strict=True):
            try:
                outcomes.append(ids if isinstance(ids, Exception) else self._one(rtype, match, ids))
            except ApplyError as exc:
                outcomes.append(exc)
        return outcomes

    def _one(self, rtype: str, match: str, ids: list[str]) -> tuple[str, bool] | None:
        if not ids:
            return None
        ends = {self._survivor(i) if rtype == "Patient" else i for i in ids}
        if len(ends) > 1:
            text = f"{len(ends)} {rtype} resources match {shown(match)}; cannot choose"
            raise ApplyError(AckError(205, text))
        end = ends.pop()
        return end, end not in ids

    def _survivor(self, pid: str) -> str:
        """Follow Patient.link replaced-by to the patient that is current."""
        seen = {pid}
        for _ in range(MAX_LINK_HOPS):
            try:
                _, body = self._body("Patient", pid)
            except (NotFound, Gone):
                break
            successor = replaced_by(body)
            if successor is None or successor in seen:
                break
            seen.add(successor)
            pid = successor
        return pid

    def _edit(self, rtype: str, rid: str, change: Callable[[JSON], JSON]) -> bool:
        """Update a resource with `change` applied (If-Match); False if nothing changed."""
        stored, current = self._body(rtype, rid)
        changed = change(dict(current))
        if changed == current:
            return False
        self._wrote(None, self._update(rtype, rid, stored, changed))
        return True

    # ------------------------------------------------------------ provenance

    def provenance(self) -> None:
        if not self.applied.produced:
            return
        m = self.message
        body = provenance_body(
            self.applied.produced, message_id=m.id, code=m.code, trigger=m.trigger,
            control_id=m.control_id, application=m.sending_application,
            facility=m.sending_facility, event_time=self.event_time,
        )  # fmt: skip
        outcome = self.service.create(self.uow, "Provenance", body)
        self.applied.provenance_id = outcome.version.id

    # ------------------------------------------------------------ bookkeeping

    def _body(self, rtype: str, rid: str) -> tuple[StoredVersion, dict[str, Any]]:
        """The current version and its JSON, read through the door once per message."""
        key = (rtype, rid)
        if key not in self._bodies:
            version = self.service.read(self.uow, rtype, rid)
            self._bodies[key] = (version, jsonio.loads(version.content or b"{}"))
        return self._bodies[key]

    def _update(
        self, rtype: str, rid: str, stored: StoredVersion, body: dict[str, Any]
    ) -> WriteOutcome:
        """Update the version this message read (`_body`), without reading it again: the
        update applies only if it is still current (else 409, and the message is retried)."""
        return self.service.update(
            self.uow, rtype, rid, body, if_match=f'W/"{stored.version_id}"',
            prefetched=True, current=stored,
        )  # fmt: skip

    def _wrote(self, full_url: str | None, outcome: WriteOutcome) -> None:
        v = outcome.version
        body = jsonio.loads(v.content or b"{}")
        self._bodies[(v.resource_type, v.id)] = (v, body)
        self._ahead.wrote(v.resource_type, v.id, body)
        self.applied.produced.append(f"{v.resource_type}/{v.id}/_history/{v.version_id}")
        if full_url:
            self._resolve(full_url, v.resource_type, v.id)
        elif v.resource_type == "Patient":
            self._note_patient(v.id)

    def _resolve(self, full_url: str, rtype: str, rid: str) -> None:
        self.applied.resolved[full_url] = f"{rtype}/{rid}"
        if rtype == "Patient":
            self._note_patient(rid)

    def _note_patient(self, pid: str) -> None:
        if pid not in self.applied.patients:
            self.applied.patients.append(pid)

    def _clock(self, rtype: str, rid: str) -> int | None:
        """The event time that last wrote the resource (None: none known). The first call
        reads the clocks of everything found ahead too, in the same statement."""
        key = (rtype, rid)
        if key not in self._clocks_read:
            keys = {key, *self._clocks_ahead} - self._clocks_read.keys()
            self._clocks_ahead = []
            self._clocks_read.update(dict.fromkeys(keys))
            found = self.uow.conn.execute(CLOCKS_OF, {"keys": sorted(keys)})
            for found_type, found_id, event_time in found:
                self._clocks_read[(found_type, found_id)] = int(event_time)
        return self._clocks_read[key]

    def _set_clock(self, rtype: str, rid: str) -> None:
        """Remember the event time that wrote the resource (none known: the clock stays);
        written by write_clocks at the end of the message."""
        if self.event_time is not None:
            self._clocks[(rtype, rid)] = None

    def write_clocks(self) -> None:
        """One statement for every clock the message sets. On PostgreSQL it goes with COMMIT
        (uow.with_commit, one round trip); nothing in the message reads it back."""
        if not self._clocks or self.event_time is None:
            return
        keys = list(self._clocks)
        if self.uow.dialect == "postgresql":
            params = {
                "types": [t for t, _ in keys],
                "ids": [i for _, i in keys],
                "event_time": self.event_time,
                "message_id": self.message.id,
            }
            self.uow.with_commit.append((PG_CLOCKS, params))
            return
        rows = [
            {"resource_type": t, "resource_id": i, "event_time": self.event_time,
             "message_id": self.message.id}
            for t, i in keys
        ]  # fmt: skip
        self.uow.conn.execute(sqlite_clock_upsert(), rows)
