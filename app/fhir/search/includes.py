"""`_include` / `_revinclude` of a search page (R4 search.html#include, #revinclude,
#versions): the matches' references followed in the index (versioned ones in the stored
bodies, versioned_includes.py), `:iterate` ones over what each round found, until nothing
new."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Select, bindparam, select

from app.fhir.search import canonical, versioned_includes
from app.fhir.search.params import WILDCARD, WILDCARD_REVINCLUDE_SKIPS, Include
from app.fhir.search.sql import is_local, own_params
from app.fhir.storage import CURRENT_COLUMNS, StoredVersion, UnitOfWork, to_version
from app.fhir.tables import resource, search_reference

MAX_INCLUDES = 1000  # beyond this, includes are cut and the Bundle says so


def follow(
    uow: UnitOfWork, matches: list[StoredVersion], includes: tuple[Include, ...], base_url: str
) -> tuple[list[StoredVersion], tuple[str, ...]]:
    if not includes or not matches:
        return [], ()
    seen = {(v.resource_type, v.id) for v in matches}  # whose current version is listed
    seen_versions = {_ident(v) for v in matches}
    older: set[Ident] = set()  # versions read from history (named by versioned references)
    included: list[StoredVersion] = []
    frontier = matches
    warnings: list[str] = []
    active = list(includes)  # the first round: every include, over the matches
    while frontier:  # then :iterate ones over what the last round found, until nothing new
        current, from_history = _include_round(uow, frontier, active, seen, older, base_url)
        older.update(_ident(v) for v in from_history)
        found = [v for v in current + from_history if _ident(v) not in seen_versions]
        active = [i for i in includes if i.iterate]
        if len(included) + len(found) > MAX_INCLUDES:
            found = found[: MAX_INCLUDES - len(included)]
            warnings.append(f"included resources were limited to {MAX_INCLUDES}; narrow the search")
        included.extend(found)
        # An older version listed does not stand for the current one, which a later round's
        # reference without a version still brings.
        seen.update((v.resource_type, v.id) for v in found if _ident(v) not in older)
        seen_versions.update(_ident(v) for v in found)
        frontier = [] if warnings else found
    return included, tuple(warnings)


Ident = tuple[str, str, int]  # (type, id, version)


def _ident(version: StoredVersion) -> Ident:
    return version.resource_type, version.id, version.version_id


def _include_round(
    uow: UnitOfWork,
    frontier: list[StoredVersion],
    includes: list[Include],
    seen: set[tuple[str, str]],
    older: set[Ident],
    base_url: str,
) -> tuple[list[StoredVersion], list[StoredVersion]]:
    """What the includes find from the frontier: current versions, and versions from
    history that versioned references name."""
    wanted: set[tuple[str, str]] = set()
    versions: set[Ident] = set()  # named by versioned references
    by_type: dict[str, list[str]] = {}
    for version in frontier:
        by_type.setdefault(version.resource_type, []).append(version.id)
    for inc in includes:
        if inc.reverse:
            targets = [(t, ids) for t, ids in by_type.items() if inc.target_type in (None, t)]
            for target_type, ids in targets:
                query = _revinclude_query(inc.source_type, inc.param, target_type, base_url)
                wanted.update(tuple(row) for row in uow.conn.execute(query, {"ids": ids}))
                wanted |= canonical.referring(uow, inc.source_type, inc.param, target_type, ids)
            continue
        sources = by_type if inc.source_type == WILDCARD else [inc.source_type]
        for source_type in [t for t in sources if t in by_type]:
            own = [v for v in frontier if v.resource_type == source_type]
            if older:  # an older version refers to what its own content names, not the index
                old = [v for v in own if _ident(v) in older]
                named = versioned_includes.named(old, inc.param, inc.target_type, base_url)
                wanted |= named.plain
                versions.update((t, i, n) for (t, i), ns in named.versions.items() for n in ns)
                own = [v for v in own if _ident(v) not in older]
                if not own:
                    continue
            ids = [v.id for v in own]
            # (A confined grant gets current versions: an older one's content is not judged.)
            confined = uow.row_filter is not None
            marked = [] if confined else versioned_includes.marked(own, source_type)
            query = _include_query(source_type, inc.param, inc.target_type, base_url, bool(marked))
            found = uow.conn.execute(query, {"ids": ids})
            if not marked:  # (nearly always: no versioned reference in these resources)
                wanted.update((t, i) for t, i in found if t)
            else:
                named = versioned_includes.named(marked, inc.param, inc.target_type, base_url)
                wanted.update((t, i) for s, t, i in found if t and named.wants_current(s, t, i))
                versions.update((t, i, n) for (t, i), ns in named.versions.items() for n in ns)
            types = inc.returned_types()
            wanted.update(canonical.referred(uow, source_type, inc.param, ids, types))
    current = _fetch(uow, sorted(wanted - seen))
    if not versions:
        return current, []
    # `Patient/1/_history/2` names the current version when 2 is current: that version
    # was fetched already if another reference names Patient/1 without one.
    fetched = {_ident(v) for v in current}
    from_history = versioned_includes.fetch(uow, versions)
    return current, [v for v in from_history if _ident(v) not in fetched]


# The include statements are few and depend only on their arguments: built once (the ids
# are bound at execution).


@functools.lru_cache(maxsize=1000)
def _revinclude_query(source_type: str, param: str, target_type: str, base_url: str) -> Select[Any]:
    """(type, id) of the resources of source_type whose `param` refers to one of target_type's
    :ids; WILDCARD for any type, any reference parameter (the target index serves both)."""
    ref = search_reference
    query = select(ref.c.resource_type, ref.c.resource_id).where(
        ref.c.target_type == target_type, ref.c.target_id.in_(bindparam("ids", expanding=True)),
        is_local(ref, base_url),
    )  # fmt: skip
    if source_type != WILDCARD:
        query = query.where(ref.c.resource_type == source_type)
    else:  # the audit trail refers to everything read: only an explicit _revinclude gets it
        query = query.where(ref.c.resource_type.not_in(WILDCARD_REVINCLUDE_SKIPS))
    query = query.where(ref.c.param == param if param != WILDCARD else own_params(ref))
    # Distinct before the limit: one resource may refer to a match through several parameters.
    return query.distinct().limit(MAX_INCLUDES + 1)


@functools.lru_cache(maxsize=1000)
def _include_query(
    source_type: str, param: str, target_type: str | None, base_url: str, sources: bool = False
) -> Select[Any]:
    """What `param` (WILDCARD: any reference parameter) of the source_type resources :ids
    refers to (of target_type, if given): (target type, target id), `sources`: (source id,
    target type, target id)."""
    ref = search_reference
    columns = (ref.c.resource_id,) if sources else ()
    query = select(*columns, ref.c.target_type, ref.c.target_id).where(
        ref.c.resource_type == source_type,
        ref.c.resource_id.in_(bindparam("ids", expanding=True)), ref.c.target_id.is_not(None),
        is_local(ref, base_url),
    )  # fmt: skip
    query = query.where(ref.c.param == param if param != WILDCARD else own_params(ref))
    return query.where(ref.c.target_type == target_type) if target_type else query


def _fetch(uow: UnitOfWork, keys: list[tuple[str, str]]) -> list[StoredVersion]:
    if not keys:
        return []
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    out: list[StoredVersion] = []
    for rtype, ids in by_type.items():
        query = _fetch_query(rtype)
        if uow.row_filter is not None:  # an included resource is shown only if allowed
            query = query.where(uow.row_filter.included_sql(rtype, resource.c.id))
        out.extend(to_version(r) for r in uow.conn.execute(query, {"ids": ids}))
    return out


@functools.lru_cache(maxsize=1000)
def _fetch_query(rtype: str) -> Select[Any]:
    """The current, not deleted, resources of rtype with the :ids."""
    return select(*CURRENT_COLUMNS).where(
        resource.c.resource_type == rtype,
        resource.c.id.in_(bindparam("ids", expanding=True)),
        resource.c.deleted.is_(False),
    )
