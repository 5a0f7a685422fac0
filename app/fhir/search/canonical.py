"""_include / _revinclude through canonical references (`QuestionnaireResponse.questionnaire`,
`Observation.basedOn` to a PlanDefinition by url, ...).

A canonical names a resource by its `url` (and, after `|`, its `version`), wherever that
resource lives: `http://example.org/fhir/Questionnaire/intake|2.0` is the Questionnaire whose
url is `http://example.org/fhir/Questionnaire/intake` and version 2.0, even though no such
address is ours. The index holds canonicals as reference rows with a `url` (engine.py resolves
only those under our base, by type and id); here they are matched to the `url` (search_uri)
and `version` (search_token) index rows of the resources that carry them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from sqlalchemy import select

from app.fhir.search.definitions import params_for
from app.fhir.search.element_types import may_return
from app.fhir.search.params import WILDCARD, WILDCARD_REVINCLUDE_SKIPS
from app.fhir.search.sql import own_params
from app.fhir.storage import UnitOfWork
from app.fhir.tables import search_reference, search_token, search_uri

Key = tuple[str, str]  # (resource type, id)


def referred(
    uow: UnitOfWork, source_type: str, param: str, ids: list[str], types: Iterable[str]
) -> set[Key]:
    """The resources of `types` that the canonicals in `param` of the sources name."""
    params = canonical_params(source_type, param)
    if not params:  # only Reference elements: followed by type and id (engine.py), not here
        return set()
    ref = search_reference
    query = select(ref.c.url).where(
        ref.c.resource_type == source_type, ref.c.resource_id.in_(ids), ref.c.url.is_not(None),
        ref.c.param.in_(params),
    )  # fmt: skip
    wanted: dict[str, set[str | None]] = {}  # url -> the versions asked (None: any)
    for (canonical,) in uow.conn.execute(query):
        url, bar, version = canonical.partition("|")
        wanted.setdefault(url, set()).add(version if bar else None)
    if not wanted:
        return set()
    holders = _holders(uow, list(wanted), types)
    versions = _versions(uow, [key for key, _ in holders])
    return {
        key for key, url in holders if None in wanted[url] or wanted[url] & versions.get(key, set())
    }


# What a canonical parameter's expression returns (uri for the few that hold plain uris).
CANONICAL_TYPES = frozenset({"canonical", "uri", "url"})


@functools.lru_cache(maxsize=1000)
def canonical_params(source_type: str, param: str) -> tuple[str, ...]:
    """The reference parameters of source_type (`param`, or every one for WILDCARD) whose
    values may be canonicals. A forward include asks for canonicals only through these: the
    others hold Reference elements (subject, performer, ...; 438 of the 514 R4 reference
    parameters), and one more query per include and round found nothing for them. An
    expression whose types the compiler cannot tell counts as possibly canonical."""
    return tuple(
        code
        for code, definition in params_for(source_type).items()
        if definition.type == "reference"
        and param in (WILDCARD, code)
        and may_return(source_type, code, CANONICAL_TYPES)
    )


def referring(
    uow: UnitOfWork, source_type: str, param: str, target_type: str, ids: list[str]
) -> set[Key]:
    """The resources of source_type whose canonical `param` names one of the targets."""
    holders = _holders(uow, None, [target_type], ids)
    if not holders:
        return set()
    versions = _versions(uow, [key for key, _ in holders])
    names = set()
    for key, url in holders:
        names.add(url)
        names.update(f"{url}|{version}" for version in versions.get(key, ()))
    ref = search_reference
    query = select(ref.c.resource_type, ref.c.resource_id).where(ref.c.url.in_(sorted(names)))
    if source_type != WILDCARD:
        query = query.where(ref.c.resource_type == source_type)
    else:  # as for literal references: the audit trail only when asked for by name
        query = query.where(ref.c.resource_type.not_in(WILDCARD_REVINCLUDE_SKIPS))
    query = query.where(ref.c.param == param if param != WILDCARD else own_params(ref))
    return {(t, i) for t, i in uow.conn.execute(query.distinct())}


def _holders(
    uow: UnitOfWork, urls: list[str] | None, types: Iterable[str], ids: list[str] | None = None
) -> list[tuple[Key, str]]:
    """((type, id), url) of the resources of `types` whose `url` is one of urls (or whose id
    is one of ids)."""
    uri = search_uri
    query = select(uri.c.resource_type, uri.c.resource_id, uri.c.value).where(
        uri.c.param == "url", uri.c.resource_type.in_(sorted(set(types)))
    )
    query = query.where(uri.c.value.in_(urls)) if urls is not None else query
    query = query.where(uri.c.resource_id.in_(ids)) if ids is not None else query
    return [((t, i), url) for t, i, url in uow.conn.execute(query)]


def _versions(uow: UnitOfWork, keys: list[Key]) -> dict[Key, set[str]]:
    if not keys:
        return {}
    token = search_token
    found: dict[Key, set[str]] = {}
    for rtype in {t for t, _ in keys}:
        ids = [i for t, i in keys if t == rtype]
        query = select(token.c.resource_id, token.c.code).where(
            token.c.resource_type == rtype, token.c.resource_id.in_(ids),
            token.c.param == "version", token.c.code.is_not(None),
        )  # fmt: skip
        for rid, code in uow.conn.execute(query):
            found.setdefault((rtype, rid), set()).add(code)
    return found
