"""Resources a message writes only when the sender's grant allows them.

Specimen (ORU SPM), Condition (ADT DG1) and Organization (an ORU's performing organization,
OBX-15/23) were added to the mapping after feeds had been given tokens for what it wrote
before (docs/hl7v2.md's lab-feed example has no Specimen or Organization).
Refusing such a feed's every message (AR 207) for a resource it never asked to write would
stop results and admissions over a detail, so these are supplementary: without c, r and u
on their type in the grant they are left out, references to them removed, and the AA says so
(ERR 207 severity W). Every other type stays required: a grant without it gets AR as before.
The same holds for single planned resources marked ``supplementary`` (the race and ethnic
group Observations of an ADT's PID): an ADT feed's token need not allow Observation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app.auth.grant import Grant
from hl7_adapters.ack import AckError
from hl7_adapters.mapping.plan import MappingResult

SUPPLEMENTARY = frozenset({"Specimen", "Condition", "Organization"})
NEEDED = "cru"  # an upsert searches, then creates or updates


def allowed(grant: Grant | None, rtype: str) -> bool:
    return grant is not None and all(grant.scopes.matching(rtype, p) for p in NEEDED)


def within_grant(result: MappingResult, grant: Grant | None) -> MappingResult:
    """The result without the supplementary resources the grant does not allow."""
    optional = [p for p in result.planned if p.supplementary or p.resource_type in SUPPLEMENTARY]
    left_out = {p.resource_type for p in optional if not allowed(grant, p.resource_type)}
    if not left_out:
        return result
    dropped = {p.full_url for p in optional if p.resource_type in left_out}
    kept = [
        dataclasses.replace(p, resource=_without_references(p.resource, dropped))
        for p in result.planned
        if p.full_url not in dropped
    ]
    warnings = [
        AckError(207, f"{rtype} not written: the grant lacks system/{rtype}.cru", "W")
        for rtype in sorted(left_out)
    ]
    return dataclasses.replace(result, planned=kept, warnings=[*result.warnings, *warnings])


def _without_references(node: Any, dropped: set[str]) -> Any:
    if isinstance(node, dict):
        kept = {
            key: _without_references(value, dropped)
            for key, value in node.items()
            if not _names(value, dropped)
        }
        return {key: value for key, value in kept.items() if value not in ([], {})}
    if isinstance(node, list):
        return [_without_references(item, dropped) for item in node if not _names(item, dropped)]
    return node


def _names(value: Any, dropped: set[str]) -> bool:
    """A Reference to a left-out resource (or a list element that holds only one)."""
    if not isinstance(value, dict):
        return False
    if value.get("reference") in dropped:
        return True
    inner = [v for v in value.values() if isinstance(v, dict)]  # {"reference": ...} wrapped
    return len(value) == 1 and len(inner) == 1 and inner[0].get("reference") in dropped
