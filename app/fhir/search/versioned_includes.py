"""`_include` of versioned references (R4 search.html#versions: "If a resource has a
reference that is versioned and _include is performed, the specified version SHOULD be
provided").

The reference index keeps the resource a reference names, never its version (docs/search.md,
"Versioned references"), so an include finds its targets there and the versions are read
from the including resources themselves: only from those whose stored bytes hold
`/_history/` at all, so a search whose resources have no versioned reference pays one byte
search per resource and nothing else. A target that the resources read name only with
versions comes as those versions (from history, deletions left out); one also named
without a version (by them, or by a resource not read) keeps its current version as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from app.fhir import jsonio
from app.fhir.search.definitions import params_for
from app.fhir.search.indexer import indexed_param
from app.fhir.search.params import WILDCARD
from app.fhir.storage import StoredVersion, UnitOfWork
from app.fhir.tables import resource_history

_MARK = b"/_history/"
_VERSIONED = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/_history/([0-9]{1,18})$")
Key = tuple[str, str]


@dataclass
class Named:
    """What the sources read name: targets with versions, targets without one."""

    read: set[str] = field(default_factory=set)  # ids of the sources read
    versions: dict[Key, set[int]] = field(default_factory=dict)
    plain: set[Key] = field(default_factory=set)

    def wants_current(self, source_id: str, rtype: str, rid: str) -> bool:
        """Does this index row (source -> target) ask for the target's current version? Not
        when the source was read and names the target with a version only."""
        target = (rtype, rid)
        return not (source_id in self.read and target in self.versions and target not in self.plain)


def marked(frontier: list[StoredVersion], rtype: str) -> list[StoredVersion]:
    """The resources of rtype whose stored bytes hold a versioned reference somewhere."""
    return [
        v
        for v in frontier
        if v.resource_type == rtype and v.content is not None and _MARK in v.content
    ]


def named(
    sources: list[StoredVersion], param: str, target_type: str | None, base_url: str
) -> Named:
    """The references of `param` (WILDCARD: every reference parameter) in the sources (the
    `marked` ones)."""
    found = Named()
    for source in sources:
        assert source.content is not None  # (marked)
        found.read.add(source.id)
        body = jsonio.loads(source.content)
        for node in _reference_nodes(source.resource_type, param, body):
            target = _target(node.get("reference"), base_url)
            if target is None or (target_type and target[0] != target_type):
                continue
            key, version = (target[0], target[1]), target[2]
            if version is None:
                found.plain.add(key)
            else:
                found.versions.setdefault(key, set()).add(version)
    return found


def fetch(uow: UnitOfWork, wanted: set[tuple[str, str, int]]) -> list[StoredVersion]:
    """The versions named, from history; a deletion, or a version never written, is none."""
    if not wanted:
        return []
    h = resource_history
    out: list[StoredVersion] = []
    for rtype, rid, number in sorted(wanted):  # rare: one short indexed lookup each
        row = uow.conn.execute(
            select(h.c.last_updated, h.c.content, h.c.method).where(
                h.c.resource_type == rtype, h.c.id == rid, h.c.version_id == number
            )
        ).first()
        if row is not None and row.method != "DELETE" and row.content is not None:
            out.append(
                StoredVersion(rtype, rid, number, row.last_updated, False, row.content, row.method)
            )
    return out


def _reference_nodes(rtype: str, param: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for code, definition in params_for(rtype).items():
        if definition.type != "reference" or (param != WILDCARD and code != param):
            continue
        if not indexed_param(rtype, definition):
            continue
        nodes += [n for n in definition.evaluate(body, body) if isinstance(n, dict)]
    return nodes


def _target(reference: Any, base_url: str) -> tuple[str, str, int | None] | None:
    """(type, id, version or None) of a literal reference to this server; None otherwise
    (a contained `#id`, another server's URL, a canonical)."""
    if not isinstance(reference, str) or reference.startswith("#"):
        return None
    if reference.startswith(("http:", "https:")):
        if not (base_url and reference.startswith(base_url + "/")):
            return None
        reference = reference[len(base_url) + 1 :]
    match = _VERSIONED.match(reference)
    if match:
        return match.group(1), match.group(2), int(match.group(3))
    parts = reference.split("/")
    return (parts[0], parts[1], None) if len(parts) == 2 else None
