"""ADT^A40: what was filed under a retired Patient moves to the survivor.

HL7 v2 A40 ("merge patient - patient identifier list") says the retired patient's data now
belongs to the survivor, and FHIR R5's Patient `$merge` updates every resource that refers
to the source patient to refer to the target. Leaving them under the retired record made
`Observation?patient=<survivor>` miss the old results: an incomplete history.

What moves: every resource whose reference index rows point at a retired Patient (found as
`_revinclude` finds referrers: app/fhir/search/referrers.py; the JSON is not scanned), in
the merge's transaction, each one read and updated through the door (a new version, index
rows, audit, the message's Provenance lists it). In each, every Reference to a retired
Patient is rewritten to the survivor: relative (`Patient/x`), absolute under our base URL,
and versioned (`.../_history/n` names the survivor's current version: the retired record's
versions have no counterpart in the survivor's history). Other servers' URLs are left.

What does not:

* Patients: a Patient refers to another only through `link`, which says how two records
  relate (the merge's own replaces / replaced-by links are written by the applier);
* Provenance and AuditEvent: history is history, they say what was written or read then;
* resources of a type the sender's grant cannot read and update without restriction (a
  feed's grant holds only the types the mapping writes, hl7_adapters/feeds.py): the door
  would refuse the whole message; they stay, and the AA says how many (ERR 207, W). FHIR
  clients still reach the survivor through the retired record's replaced-by link;
* beyond MAX_MOVED per message: one transaction holds the merge's patient locks while it
  writes, so it is bounded; the rest stays, the AA says how many (ERR 0, W), and re-applying
  the message (`medisentinel hl7 reprocess --accepted <id>`) moves the next batch (the merge
  itself is idempotent, and what has moved is no longer found).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Any

from app.auth.enforcement import AccessFilter
from app.auth.grant import Grant
from app.fhir.service import FhirService
from app.fhir.storage import UnitOfWork
from hl7_adapters.ack import AckError
from hl7_adapters.edits import merge_error
from hl7_adapters.mapping.plan import Merge

JSON = dict[str, Any]
NEVER_MOVED = ("Patient", "Provenance", "AuditEvent")
# Moving costs a read and an update through the door per resource: 500 moved in 1.1 s on
# PostgreSQL, 1.5 s on SQLite (2 shared cores, in-process, tests/test_hl7_merge_moves.py).
# The merge's transaction holds both patients' locks meanwhile: bounded to about a second.
MAX_MOVED = 500

Edit = Callable[[str, str, Callable[[JSON], JSON]], bool]  # (type, id, change) -> written?


def movable(grant: Grant | None, base_url: str) -> Callable[[str], bool]:
    """Whether the grant reads and updates every resource of a type (no compartment, no
    query restriction): only then can each referrer be moved without the door refusing."""
    if grant is None:
        return lambda rtype: False
    filters = [AccessFilter(grant, p, [], base_url) for p in "ru"]
    return lambda rtype: rtype not in NEVER_MOVED and all(f.rules(rtype) is None for f in filters)


@lru_cache(maxsize=64)
def _patient_reference(base_url: str) -> re.Pattern[str]:
    base = re.escape(base_url.rstrip("/")) + "/" if base_url else ""
    return re.compile(rf"^({base})?Patient/([A-Za-z0-9\-.]{{1,64}})(/_history/[^/]+)?$")


def repointed(
    node: Any, retired: Collection[str], survivor: str, survivor_version: int, base_url: str
) -> Any:
    """A copy of `node` with every Reference to a retired Patient naming the survivor, in
    the same form (relative, absolute under our base, versioned)."""
    pattern = _patient_reference(base_url)

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(item) for item in value]
        if not isinstance(value, dict):
            return value
        out = {key: walk(item) for key, item in value.items()}
        ref = value.get("reference")
        found = pattern.match(ref) if isinstance(ref, str) else None
        if found and found.group(2) in retired:
            versioned = f"/_history/{survivor_version}" if found.group(3) else ""
            out["reference"] = f"{found.group(1) or ''}Patient/{survivor}{versioned}"
        return out

    return walk(node)


def move_referrers(
    service: FhirService,
    uow: UnitOfWork,
    m: Merge,
    retired: list[str],
    survivor: tuple[str, int],
    edit: Edit,
    budget: int,
    message_id: str,
) -> tuple[int, list[AckError]]:
    """Move up to `budget` resources referring to the `retired` Patients to `survivor`
    (id, current version) with `edit`; (how many were written, warnings for what stays)."""
    base_url = uow.ctx.base_url
    may_move = movable(uow.ctx.grant, base_url)
    found = service.referrers(
        uow, "Patient", retired, wanted=may_move, skip=NEVER_MOVED, limit=budget
    )
    if not found.counts:
        return 0, []
    rid, version = survivor

    def change(body: JSON) -> JSON:
        return repointed(body, retired, rid, version, base_url)

    moved = sum(edit(rtype, ref_id, change) for rtype, ref_id in found.first[:budget])
    warnings: list[AckError] = []
    left = sum(n for rtype, n in found.counts.items() if may_move(rtype)) - moved
    if left > 0:
        text = (
            f"{left} more resources still refer to it (at most {MAX_MOVED} are moved per "
            f"message); re-apply message {message_id} (medisentinel hl7 reprocess --accepted) "
            "to move the next ones"
        )
        warnings.append(merge_error(m, f"was merged; {text}", "W", 0))
    for rtype, count in sorted(found.counts.items()):
        if not may_move(rtype):
            text = (
                f"was merged; {count} {rtype} resources still refer to it: the grant lacks an "
                f"unrestricted system/{rtype}.ru"
            )
            warnings.append(merge_error(m, text, "W", 207))
    return moved, warnings
