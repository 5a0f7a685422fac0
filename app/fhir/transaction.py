"""batch and transaction Bundles (POST to the base URL).

A transaction runs every entry in one unit of work, in the spec's order (DELETE, POST,
PUT/PATCH, GET), after giving each created resource its id up front so that `urn:uuid:`
fullUrls and the references to them can be rewritten; any failing entry rolls back all of
them and the OperationOutcome names that entry. A batch runs each entry in its own unit of
work and reports each entry's outcome.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from app.context import RequestContext
from app.errors import (
    Conflict,
    FhirError,
    InvalidRequest,
    Issue,
    PreconditionFailed,
    ServerError,
)
from app.fhir import bindings, locks, storage
from app.fhir.bundle_entries import (
    PROCESSING_ORDER,
    entry_request,
    error_entry,
    response_entry,
)
from app.fhir.bundle_writes import BundleWrites
from app.fhir.bundles import new_bundle
from app.fhir.element_tables import pointer_type, typed_elements_in
from app.fhir.exchange import FhirRequest, FhirResponse, return_preference
from app.fhir.hooks import Interaction
from app.fhir.storage import UnitOfWork

if TYPE_CHECKING:
    from app.fhir.router import FhirRouter

# Link elements a transaction rewrites (canonical is a uri too); narrative links by regex.
LINK_TYPES = frozenset({"uri", "url", "oid", "uuid", "canonical", "xhtml"})
NARRATIVE_LINK = re.compile(r"""(\b(?:href|src)\s*=\s*)(["'])(.*?)\2""")


def process_bundle(router: FhirRouter, ctx: RequestContext, request: FhirRequest) -> FhirResponse:
    bundle = request.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base URL takes a Bundle of type batch or transaction")
    kind = bundle.get("type")
    entries = bundle.get("entry", [])  # `{}` is no empty list: refused below, not run
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be an array", expression="Bundle.entry")
    _refuse_duplicate_full_urls(entries)
    if kind == "transaction":
        return _transaction(router, ctx, entries, return_preference(request.header("prefer")))
    if kind == "batch":
        return _batch(router, ctx, entries, return_preference(request.header("prefer")))
    raise InvalidRequest(
        f"Bundle.type '{kind}' cannot be processed; use batch or transaction",
        expression="Bundle.type",
    )


# ---------------------------------------------------------------- transaction


def _transaction(
    router: FhirRouter, ctx: RequestContext, entries: list[Any], preference: str
) -> FhirResponse:
    requests = [entry_request(i, e, ctx.base_url) for i, e in enumerate(entries)]
    responses: list[FhirResponse | None] = [None] * len(requests)
    with router.service.unit_of_work(ctx, write=True) as uow:
        router.service.pipeline.authorize(uow, Interaction("transaction"))
        id_map, targets = _assign_ids(router, uow, entries, requests)
        writes = BundleWrites(requests, _refuse_overlapping_targets(router, uow, requests))
        _prefetch_put_targets(uow, requests)
        links = Links(router, uow, id_map, writes)
        for i, request in enumerate(requests):
            if request.body is not None and request.method in ("POST", "PUT"):
                with _entry_errors(i, request):
                    rtype = str(request.body.get("resourceType"))
                    _rewrite_references(links, request.body, rtype)
                    _rewrite_links(request.body, id_map)
            elif request.method == "PATCH" and isinstance(request.body, list):
                with _entry_errors(i, request):
                    entry, rtype = f"Bundle.entry[{i}]", request.path.split("/", 1)[0]
                    _rewrite_patch(links, request.body, entry, rtype)
        order = sorted(range(len(requests)), key=lambda i: PROCESSING_ORDER[requests[i].method])
        for i in order:
            with _entry_errors(i, requests[i]):
                responses[i] = response = router.handle(uow, requests[i])
                _check_created_as_assigned(i, response, targets)
    bundle = new_bundle("transaction-response")
    bundle["entry"] = [
        response_entry(r, q, preference, ctx.base_url)
        for r, q in zip(responses, requests, strict=True)
        if r is not None
    ]
    return FhirResponse(200, bundle)


@contextmanager
def _entry_errors(index: int, request: FhirRequest) -> Iterator[None]:
    """Any error while handling entry `index` names the entry, its paths rooted there."""
    try:
        yield
    except FhirError as exc:
        raise _entry_error(exc, index, request.body) from exc


def _entry_error(error: FhirError, index: int, resource: Any) -> FhirError:
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    return error.prefixed(f"Bundle.entry[{index}]", rtype if isinstance(rtype, str) else None)


def _assign_ids(
    router: FhirRouter, uow: UnitOfWork, entries: list[Any], requests: list[FhirRequest]
) -> tuple[dict[str, str], dict[int, str]]:
    """Give every created resource its id now; map each entry's fullUrl to Type/id. Also
    the id each conditional create (If-None-Exist) with a fullUrl was resolved to, by index:
    what the entry must end on (_check_created_as_assigned)."""
    id_map: dict[str, str] = {}
    targets: dict[int, str] = {}
    claimed: dict[tuple[str, str], str] = {}
    # Every condition that may create, locked up front in one statement (app.fhir.locks):
    # a concurrent writer of the same criteria waits, and no two transactions deadlock.
    locks.lock_keys(uow, [locks.criteria_key(rtype, query) for rtype, query in _creating(requests)])
    for i, request in enumerate(requests):
        full_url = entries[i].get("fullUrl") if isinstance(entries[i], dict) else None
        segments = request.segments
        if not segments:
            continue
        rtype = segments[0]
        with _entry_errors(i, request):
            target = _resolve_target(router, uow, request, rtype, segments, claimed)
        if target and isinstance(full_url, str) and full_url:
            id_map[full_url] = f"{rtype}/{target}"
            if request.method == "POST" and request.header("if-none-exist"):
                targets[i] = target
    return id_map, targets


def _creating(requests: list[FhirRequest]) -> Iterator[tuple[str, str]]:
    """(type, criteria) of the entries that create when their condition matches nothing:
    conditional creates and conditional updates."""
    for request in requests:
        segments = request.segments
        if len(segments) != 1:
            continue
        condition = request.header("if-none-exist") if request.method == "POST" else None
        if condition:
            yield segments[0], condition
        elif request.method == "PUT" and request.query:
            yield segments[0], request.query_string


def _check_created_as_assigned(index: int, response: FhirResponse, targets: dict[int, str]) -> None:
    """A conditional create resolved up front must end on the resource it was resolved to:
    links to its fullUrl were rewritten to that id. Entries run before it can make its
    condition find another resource (one an earlier entry created without a condition,
    or none, the one found having been deleted by a DELETE entry); the links would then
    dangle, so the transaction is refused rather than committed so."""
    expected, version = targets.get(index), response.version
    if expected is None or version is None or version.id == expected:
        return
    where = f"Bundle.entry[{index}].request.ifNoneExist"
    # The id resolved up front is not named: it may be one this client may not see.
    raise Conflict(
        f"{where}: it ended on {version.resource_type}/{version.id}, not on what it found "
        "before the entries ran (an earlier entry changed what it finds), so the references "
        "to this entry's fullUrl would not name it",
        expression=where,
    )


def _prefetch_put_targets(uow: UnitOfWork, requests: list[FhirRequest]) -> None:
    """Read (and lock) the targets of every PUT in one query per type, not one per entry."""
    puts: dict[str, list[FhirRequest]] = {}
    for request in requests:
        if request.method == "PUT" and len(request.segments) == 2 and not request.query:
            puts.setdefault(request.segments[0], []).append(request)
    for rtype, group in puts.items():
        found = storage.lock_currents(uow, rtype, [r.segments[1] for r in group])
        for request in group:
            request.prefetched, request.current = True, found.get(request.segments[1])


def _resolve_target(
    router: FhirRouter,
    uow: UnitOfWork,
    request: FhirRequest,
    rtype: str,
    segments: list[str],
    claimed: dict[tuple[str, str], str],
) -> str | None:
    """The id the entry will write (or read); `claimed`: the ids conditional creates that
    match nothing yet will create, by (type, criteria)."""
    if request.method == "POST" and len(segments) == 1:
        condition = request.header("if-none-exist")
        if condition:
            found = _find_ids(router, uow, "create", rtype, condition)
            if len(found) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist '{condition}' matches more than one {rtype}"
                )
            if found:
                return found[0]
            if (rtype, condition) in claimed:  # an earlier entry creates it; this one finds it
                return claimed[(rtype, condition)]
        request.assigned_id, request.fresh_id = str(uuid.uuid4()), True
        if condition:
            claimed[(rtype, condition)] = request.assigned_id
        return request.assigned_id
    if request.method == "PUT" and len(segments) == 1 and request.query:
        found = _find_ids(router, uow, "update", rtype, request.query_string)
        if len(found) > 1:
            raise PreconditionFailed(
                f"conditional update '{request.query_string}' matches more than one {rtype}"
            )
        body_id = request.body.get("id") if isinstance(request.body, dict) else None
        if found and body_id is not None and body_id != found[0]:  # as when sent alone
            raise InvalidRequest(
                f"resource id '{body_id}' does not match the resource the condition "
                f"'{_criteria(request)}' found ({rtype}/{found[0]})",
                expression=f"{rtype}.id",
            )
        target = found[0] if found else body_id or str(uuid.uuid4())
        # From here on it is a plain update of a known id (update-as-create when new).
        request.path, request.query = f"{rtype}/{target}", []
        if isinstance(request.body, dict):
            request.body = {**request.body, "id": target}
        return target
    if request.method in ("PUT", "PATCH", "DELETE", "GET") and len(segments) == 2:
        return segments[1]
    return None


def _criteria(request: FhirRequest) -> str:
    return "&".join(f"{name}={value}" for name, value in request.query)


@dataclasses.dataclass(frozen=True)
class Links:
    """What a transaction's links resolve against: the fullUrls' ids, and for conditional
    references the database as the Bundle's writes will leave it."""

    router: FhirRouter
    uow: UnitOfWork
    id_map: dict[str, str]
    writes: BundleWrites


def _rewrite_references(links: Links, node: Any, path: str) -> None:
    """Replace references to fullUrls (urn:uuid:...) and conditional references in place;
    `path` is where `node` sits (`Observation.subject`), for errors."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                node[key] = _resolve_reference(links, value, f"{path}.{key}")
            elif isinstance(value, dict | list):
                _rewrite_references(links, value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                _rewrite_references(links, item, f"{path}[{index}]")


def _find_ids(
    router: FhirRouter, uow: UnitOfWork, action: str, rtype: str, criteria: str, limit: int = 2
) -> list[str]:
    """A condition's matches, looked up before its entry runs (so before the entry is
    authorized): within what the grant would confine `action` on `rtype` to, so that the
    answer tells a confined grant nothing about resources beyond it."""
    previous = uow.row_filter
    uow.row_filter = router.service.pipeline.condition_filter(uow, Interaction(action, rtype))
    try:
        return router.service.find_ids(uow, rtype, criteria, limit=limit)
    finally:
        uow.row_filter = previous


def _resolve_reference(links: Links, value: str, path: str) -> str:
    if value in links.id_map:
        return links.id_map[value]
    if "?" in value and not value.startswith(("http:", "https:", "urn:")):
        rtype, _, query = value.partition("?")
        router, uow, writes = links.router, links.uow, links.writes
        try:
            # The database within the grant's reach (see _find_ids), then what the Bundle
            # changes there: the resources it writes are the client's own, checked against
            # the grant when their entries run.
            stored = _find_ids(router, uow, "search-type", rtype, query,
                               limit=2 + writes.touched(rtype))  # fmt: skip
            found = writes.after(rtype, query, stored, uow.ctx.base_url)
        except FhirError as exc:  # a bad criterion: say which reference holds it
            raise type(exc)(
                f"{path}: conditional reference '{value}': {exc.message}", expression=path
            ) from exc
        if len(found) != 1:
            raise PreconditionFailed(
                f"{path}: conditional reference '{value}' matches {len(found)} resources, not one",
                expression=path,
            )
        return f"{rtype}/{found[0]}"
    return value


def _rewrite_patch(links: Links, operations: list[Any], entry: str, rtype: str) -> None:
    """The JSON Patch of a PATCH entry links to the Bundle too ("all matching links in the
    bundle"): a value set at a `.../reference` path, and `reference` elements inside object
    values, are resolved as in a resource; so are links in elements of the link types (uri,
    url, oid, uuid, canonical, the narrative), found by the type of the element the path
    names in `rtype` (element_tables.pointer_type). A string of another type (an
    `Identifier.value` that happens to equal a fullUrl) is left as it is, as in a resource."""
    where = f"{entry}.resource.data"  # the patch travels base64-encoded in the Binary
    try:
        for index, operation in enumerate(operations):
            if not isinstance(operation, dict) or "value" not in operation:
                continue
            value, target = operation["value"], operation.get("path")
            name = f"JSON Patch operation {index} ({target})"
            if isinstance(value, str) and isinstance(target, str) and target.endswith("/reference"):
                operation["value"] = _resolve_reference(links, value, name)
                continue
            if isinstance(value, dict | list):
                _rewrite_references(links, value, name)
            type_code = pointer_type(rtype, target) if isinstance(target, str) else None
            if type_code in LINK_TYPES and isinstance(value, str):
                _replace_links([(operation, "value", type_code, name)], links.id_map)
            elif type_code is not None and isinstance(value, dict | list) and links.id_map:
                _replace_links(typed_elements_in(value, type_code, LINK_TYPES), links.id_map)
    except FhirError as exc:  # the element paths are inside the encoded patch: name the data
        exc.issues = [dataclasses.replace(i, expression=(where,)) for i in exc.issues]
        raise


def _rewrite_links(resource: dict[str, Any], id_map: dict[str, str]) -> None:
    """R4 transaction: "Servers SHALL replace all matching links in the bundle, whether they
    are found in the resource ids, resource references, elements of type uri, url, oid,
    uuid, and <a href="" & <img src="" in the narrative" (references: _rewrite_references)."""
    if id_map:
        _replace_links(bindings.typed_elements(resource, LINK_TYPES), id_map)


def _replace_links(elements: list[bindings.TypedElement], id_map: dict[str, str]) -> None:
    """Replace the links to fullUrls among `elements`, in place."""
    for container, key, type_code, _ in elements:
        holder = cast(Any, container)
        value = holder[key]
        if not isinstance(value, str):
            continue
        if type_code == "xhtml":
            holder[key] = NARRATIVE_LINK.sub(lambda m: _narrative_link(m, id_map), value)
        elif value in id_map:
            holder[key] = id_map[value]


def _narrative_link(match: re.Match[str], id_map: dict[str, str]) -> str:
    name, quote, target = match.groups()
    return f"{name}{quote}{id_map.get(target, target)}{quote}"


def _refuse_overlapping_targets(
    router: FhirRouter, uow: UnitOfWork, requests: list[FhirRequest]
) -> dict[int, list[str]]:
    """Two entries writing the same resource (by id, or by a condition that resolves to it)
    have no defined outcome: refuse them by name rather than fail with a conflict that no
    retry can clear. Runs after conditional updates have been resolved to their ids. The
    `Type/id` each entry changes, by index."""
    seen: dict[str, int] = {}
    changes: dict[int, list[str]] = {}
    for i, request in enumerate(requests):
        with _entry_errors(i, request):
            changes[i] = targets = _write_targets(router, uow, request)
        for key in targets:
            if key in seen:
                first = seen[key]
                raise InvalidRequest(
                    f"Bundle.entry[{first}] and Bundle.entry[{i}] both modify {key}: "
                    "a transaction may change each resource only once",
                    issues=[
                        Issue(
                            "error",
                            "invalid",
                            f"Bundle.entry[{first}] and Bundle.entry[{i}] both modify {key}: "
                            "a transaction may change each resource only once",
                            (
                                f"Bundle.entry[{first}].request.url",
                                f"Bundle.entry[{i}].request.url",
                            ),
                        )
                    ],
                )
            seen[key] = i
    return changes


def _write_targets(router: FhirRouter, uow: UnitOfWork, request: FhirRequest) -> list[str]:
    """The resources `request` would change (conditional deletes and patches looked up)."""
    if request.method not in ("PUT", "PATCH", "DELETE"):
        return []
    segments = request.segments
    if len(segments) == 2:
        return [request.path]
    if len(segments) == 1 and request.query and request.method != "PUT":
        action = "delete" if request.method == "DELETE" else "patch"
        found = _find_ids(router, uow, action, segments[0], request.query_string)
        return [f"{segments[0]}/{i}" for i in found]
    return []


def _refuse_duplicate_full_urls(entries: list[Any]) -> None:
    """bdl-7: "FullUrl must be unique in a bundle, or else entries with the same fullUrl must
    have different meta.versionId"."""
    seen: dict[tuple[str, Any], int] = {}
    for i, entry in enumerate(entries):
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(full_url, str):
            continue
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        key = (full_url, meta.get("versionId") if isinstance(meta, dict) else None)
        if key in seen:
            message = (
                f"Bundle.entry[{seen[key]}] and Bundle.entry[{i}] have the same fullUrl "
                f"'{full_url}' (bdl-7: fullUrl must be unique in a bundle)"
            )
            paths = (f"Bundle.entry[{seen[key]}].fullUrl", f"Bundle.entry[{i}].fullUrl")
            raise InvalidRequest(message, issues=[Issue("error", "invariant", message, paths)])
        seen[key] = i


# ---------------------------------------------------------------- batch


def _batch(
    router: FhirRouter, ctx: RequestContext, entries: list[Any], preference: str
) -> FhirResponse:
    bundle = new_bundle("batch-response")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        try:
            request = entry_request(i, entry, ctx.base_url)
            if request.method == "POST" and not request.segments:
                raise InvalidRequest("a batch entry cannot itself be a batch or transaction")
            with router.service.unit_of_work(ctx, write=request.method != "GET") as uow:
                response = router.handle(uow, request)
            out.append(response_entry(response, request, preference, ctx.base_url))
        except FhirError as exc:
            out.append(
                error_entry(
                    _entry_error(exc, i, entry.get("resource") if isinstance(entry, dict) else None)
                )
            )
        except Exception as exc:  # one broken entry must not sink the others
            out.append(
                error_entry(
                    ServerError(f"Bundle.entry[{i}]: internal error ({type(exc).__name__})")
                )
            )
    bundle["entry"] = out
    return FhirResponse(200, bundle)
