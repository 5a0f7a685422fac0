"""ADT^A40 in the applier: a message's merges, the steps of apply._Run that carry them out
(a base class of it, so that the run reads as the sequence of door interactions it is).

Patients follow FHIR's Patient.link: a merge retires a Patient (``active: false``, ``link``
replaced-by the survivor), the survivor gets ``link`` replaces, chains stay one hop long, and
what referred to the retired one is moved to the survivor (repoint.py). Refused (AE 205):
a patient merged into itself (also a merge reversed), and one already merged into another
survivor (edits.remerge_error says why). An unknown retired identifier gets an inactive
placeholder Patient pointing at the survivor, so that later messages naming it land there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from app.fhir.service import FhirService, WriteOutcome
from app.fhir.storage import StoredVersion, UnitOfWork
from hl7_adapters.ack import AckError
from hl7_adapters.applied import Applied, ApplyError, MessageRef
from hl7_adapters.edits import (
    add_replaces,
    link,
    merge_error,
    placeholder_patient,
    remerge_error,
    replaces,
    retire,
    shown,
)
from hl7_adapters.locks import patient_keys, try_lock_keys
from hl7_adapters.mapping.plan import Merge
from hl7_adapters.repoint import move_referrers

JSON = dict[str, Any]


class MergeSteps:
    """The A40 steps of one message's run. What they use of the run (apply._Run): the door,
    the unit of work, the message, its output, and these of its helpers."""

    service: FhirService
    uow: UnitOfWork
    message: MessageRef
    applied: Applied
    _moves_left: int  # resources a merge may still move in this message
    _body: Callable[[str, str], tuple[StoredVersion, JSON]]
    _find: Callable[[str, str], tuple[str, bool] | None]
    _survivor: Callable[[str], str]
    _edit: Callable[[str, str, Callable[[JSON], JSON]], bool]
    _wrote: Callable[[str | None, WriteOutcome], None]
    _note_patient: Callable[[str], None]

    def merge(self, m: Merge) -> None:
        survivor = self._merge_survivor(m)
        placeholder_made = False
        retired = self.service.find_ids(self.uow, "Patient", m.retired, limit=10)
        if survivor in retired:  # PID and MRG name one patient (also: a merge reversed)
            raise ApplyError(merge_error(m, "names the surviving patient (PID-3) itself"))
        for rid in retired:  # merged before into someone else: a contradiction (edits.py)
            if (earlier := self._survivor(rid)) not in (rid, survivor):
                raise ApplyError(remerge_error(m, self._body("Patient", earlier)[1]))
        if not retired:
            placeholder = placeholder_patient(m.retired)
            if placeholder is None:
                self.applied.warnings.append(
                    merge_error(m, "matches no patient; nothing retired", "W", 204)
                )
                return
            # The retired record never reached us: keep its identifier, pointing at the
            # survivor, so that later messages naming it still land on the survivor.
            placeholder["link"] = [link(survivor, "replaced-by")]
            outcome = self.service.create(self.uow, "Patient", placeholder)
            self._wrote(None, outcome)
            retired = [outcome.version.id]
            text = "is not known; an inactive Patient carrying it now points at the survivor"
            self.applied.warnings.append(merge_error(m, text, "W", 204))
            placeholder_made = True  # a new record: nothing refers to it yet
        else:
            retired = self._retire(retired, survivor)
        self._edit("Patient", survivor, functools.partial(add_replaces, retired=retired))
        self._note_patient(survivor)
        if not placeholder_made:
            self._move_referrers(m, retired, survivor)

    def _move_referrers(self, m: Merge, retired: list[str], survivor: str) -> None:
        """What was filed under the retired patients now names the survivor (repoint.py)."""
        version = self._body("Patient", survivor)[0].version_id
        moved, warnings = move_referrers(
            self.service, self.uow, m, retired, (survivor, version), self._edit,
            self._moves_left, self.message.id,
        )  # fmt: skip
        self._moves_left -= moved
        self.applied.warnings.extend(warnings)

    def _retire(self, retired: list[str], survivor: str) -> list[str]:
        """Retire each patient into `survivor` and keep every chain one hop long: a patient
        merged earlier into a retired one (B into A, now A into C) points at the survivor
        too. Returns every patient the survivor now replaces."""
        records = [self._body("Patient", rid)[1] for rid in retired]  # lock them (locks.py)
        records += [self._body("Patient", o)[1] for r in records for o in replaces(r)]
        try_lock_keys(self.uow, patient_keys(records))
        replaced = list(retired)
        for rid in retired:
            _, body = self._body("Patient", rid)
            absorbed = replaces(body)
            self._edit("Patient", rid, functools.partial(retire, survivor=survivor))
            for other in absorbed:
                if other != survivor and other not in replaced:
                    self._edit("Patient", other, functools.partial(retire, survivor=survivor))
                    replaced.append(other)
        return replaced

    def _merge_survivor(self, m: Merge) -> str:
        """The Patient the PID names, after following merges: a PID naming a patient that
        was itself merged into another merges into that one (as every message naming a
        retired identifier lands on its survivor), with a warning."""
        pair = m.origin[1] if m.origin else 1  # the n-th PID/MRG pair: PID n, MRG n
        survivor_ref = self.applied.resolved.get(m.survivor_full_url or "")
        if survivor_ref is not None:
            survivor = survivor_ref.split("/", 1)[1]
        else:
            found = self._find("Patient", m.survivor)
            if found is None:
                text = f"the surviving patient {shown(m.survivor)} is not known"
                raise ApplyError(AckError(204, text, "E", "PID", pair, 3))
            survivor = found[0]
        if survivor not in self.service.find_ids(self.uow, "Patient", m.survivor, limit=10):
            text = (
                f"PID-3 {shown(m.survivor)} was itself merged into another patient; "
                "merged into that surviving patient"
            )
            self.applied.warnings.append(AckError(0, text, "W", "PID", pair, 3))
        return survivor
