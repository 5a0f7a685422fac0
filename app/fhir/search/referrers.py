"""Who refers to a resource, found through the reference index (as `_revinclude` and reverse
chains find referrers: search_reference rows whose target is the resource, local ones only).

Used by the HL7 A40 merge (hl7_adapters/repoint.py) to move what was filed under a retired
Patient. Only references that some search parameter indexes are seen (the index is what a
search would find); the resource JSON is never scanned. A contained resource's reference is
its container's row (indexer.py), so the container is found.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import distinct, func, select

from app.fhir.search.sql import is_local
from app.fhir.storage import UnitOfWork
from app.fhir.tables import search_reference


@dataclass(frozen=True)
class Referrers:
    counts: dict[str, int]  # referring type -> how many resources of it (skipped types aside)
    first: list[tuple[str, str]]  # (type, id) of the first `limit` of the wanted types


def referrers(
    uow: UnitOfWork,
    target_type: str,
    target_ids: Collection[str],
    *,
    base_url: str,
    wanted: Callable[[str], bool],
    skip: Collection[str],
    limit: int,
) -> Referrers:
    """How many resources of each type (not in `skip`) refer to any of the targets, and the
    first `limit` of those of the types `wanted` accepts, in (type, id) order: a caller that
    handles them and asks again gets the next ones. One statement when none is wanted (or
    nothing refers), two otherwise."""
    ref = search_reference
    where = [
        ref.c.target_type == target_type,
        ref.c.target_id.in_(list(target_ids)),
        is_local(ref, base_url),
    ]
    if skip:
        where.append(ref.c.resource_type.not_in(list(skip)))
    per_type = select(ref.c.resource_type, func.count(distinct(ref.c.resource_id)))
    grouped = uow.conn.execute(per_type.where(*where).group_by(ref.c.resource_type))
    counts: dict[str, int] = {str(t): int(n) for t, n in grouped}
    present = sorted(t for t in counts if wanted(t))
    if not present or limit <= 0:
        return Referrers(counts, [])
    query = (
        select(ref.c.resource_type, ref.c.resource_id)
        .where(*where, ref.c.resource_type.in_(present))
        .distinct()
        .order_by(ref.c.resource_type, ref.c.resource_id)
        .limit(limit)
    )
    return Referrers(counts, [(t, i) for t, i in uow.conn.execute(query)])
