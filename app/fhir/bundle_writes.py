"""What a transaction Bundle writes, so that its conditional references see it.

R4 http.html#trules: a conditional reference (`Patient?identifier=sys|123`) is replaced by
a reference to the one resource its search finds. The references are rewritten before any
entry runs, when the Bundle's own resources are not stored yet; looked up in the database
alone, a reference to a Patient POSTed by another entry of the same transaction found
nothing (412). HAPI resolves them after the writes, against what the transaction leaves.
This gives the same answer up front: the database's matches, less the resources the Bundle
deletes or replaces, plus the resources it creates or replaces whose new content matches
(judged from the index rows they will have: search/in_memory.py). So a Patient in the
database and another POSTed with the same identifier are two matches (412), as they will be
once the transaction commits.

A PATCH entry's result is not known before it runs: its target is judged as stored. Criteria
that need the database (`_lastUpdated`, chains, `_has`) cannot be judged on the Bundle's
resources, which then count as not matching (as before).
"""

from __future__ import annotations

from typing import Any

from app.fhir.exchange import FhirRequest
from app.fhir.search import SearchParams
from app.fhir.search.criteria import Plan, plan
from app.fhir.search.in_memory import matches_all
from app.fhir.search.indexer import Rows, index_rows


class BundleWrites:
    """The resources a transaction's entries create, replace or delete, by type and id."""

    def __init__(self, requests: list[FhirRequest], targets: dict[int, list[str]]) -> None:
        """`requests` with their ids assigned (conditional updates resolved to `Type/id`);
        `targets`: by entry index, the `Type/id` each PUT, PATCH or DELETE changes."""
        self.bodies: dict[str, dict[str, dict[str, Any]]] = {}
        self.gone: dict[str, set[str]] = {}  # deleted by a DELETE entry
        self._rows: dict[tuple[str, str], Rows | None] = {}
        for i, request in enumerate(requests):
            body = request.body if isinstance(request.body, dict) else None
            if request.method == "POST" and request.assigned_id and body is not None:
                rtype = request.segments[0]
                self.bodies.setdefault(rtype, {})[request.assigned_id] = body
            elif request.method == "PUT" and len(request.segments) == 2 and body is not None:
                rtype, rid = request.segments
                self.bodies.setdefault(rtype, {})[rid] = body
            elif request.method == "DELETE":
                for target in targets.get(i, []):
                    rtype, _, rid = target.partition("/")
                    self.gone.setdefault(rtype, set()).add(rid)

    def touched(self, rtype: str) -> int:
        """How many resources of `rtype` the database's answer may hold that the Bundle
        changes: a lookup asks for that many more, so that the rest still shows."""
        return len(self.bodies.get(rtype, {})) + len(self.gone.get(rtype, ()))

    def after(self, rtype: str, query: str, stored: list[str], base_url: str) -> list[str]:
        """The ids `query` finds once the transaction has run, from `stored` (what it finds
        in the database now)."""
        bodies = self.bodies.get(rtype, {})
        if not bodies and not self.gone.get(rtype):
            return stored
        changed = bodies.keys() | self.gone.get(rtype, set())
        found = [rid for rid in stored if rid not in changed]
        if bodies:
            plans = _plans(rtype, query, base_url)
            found += [rid for rid in bodies if self._matches(rtype, rid, plans)]
        return found

    def _matches(self, rtype: str, rid: str, plans: tuple[Plan, ...]) -> bool:
        key = (rtype, rid)
        if key not in self._rows:
            self._rows[key] = _index(rtype, rid, self.bodies[rtype][rid])
        rows = self._rows[key]
        return rows is not None and matches_all(plans, rid, rows) is True


def _plans(rtype: str, query: str, base_url: str) -> tuple[Plan, ...]:
    """The criteria as planned for SQL (already checked: the database lookup ran first)."""
    params = SearchParams.parse_query(query, rtype, strict=True)
    return tuple(plan(c, base_url) for c in params.criteria)


def _index(rtype: str, rid: str, body: dict[str, Any]) -> Rows | None:
    """The rows `body` will be indexed by. The entry has not been validated yet: one the
    indexer cannot read is refused with its own 400 when it runs, and matches nothing here
    (this lookup must not become a 500)."""
    try:
        return index_rows(rtype, rid, body)
    except Exception:  # noqa: BLE001 - see above
        return None
