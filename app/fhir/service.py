"""THE one door: every read and write of FHIR data, from any channel, goes through FhirService.

A caller opens a unit of work (one database transaction) with :meth:`FhirService.unit_of_work`
and calls interactions on it. Each interaction authorizes through the hook pipeline, validates,
stores the current row, the history row and the index rows, and records the change in the
outbox, all inside that one transaction. Transport concerns (HTTP, Bundles, formats) live in
app.fhir.router and app.api; this module knows none of them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg.errors
import sqlalchemy.exc
from sqlalchemy import Engine

from app.context import RequestContext
from app.errors import Conflict, FhirError, Gone, InvalidRequest, NotFound, PreconditionFailed
from app.fhir import jsonio, locks, preconditions, storage
from app.fhir.compartments import CompartmentFilter
from app.fhir.history import (
    HistoryCursor,
    HistoryResult,
    history_page,
    history_query,
    parse_version_id,
)
from app.fhir.hooks import Interaction, Pipeline
from app.fhir.json_patch import apply_json_patch
from app.fhir.preconditions import conditional_params
from app.fhir.search import SearchParams, SearchResult, search
from app.fhir.search.engine import first_ids
from app.fhir.search.indexer import index_rows
from app.fhir.search.referrers import Referrers, referrers
from app.fhir.service_operations import OperationSteps, require_live
from app.fhir.storage import Change, RowFilter, StoredVersion, UnitOfWork
from app.fhir.validation import is_valid_id, known_resource_types, validate_resource


@dataclass(frozen=True)
class WriteOutcome:
    version: StoredVersion
    created: bool = False  # a new resource (201)
    matched_existing: bool = False  # conditional create found one: nothing written (200)
    content_withheld: bool = False  # ... which the caller may not read: no body for it


class FhirService(OperationSteps):
    def __init__(self, engine: Engine, pipeline: Pipeline) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.last_unit_started = 0.0  # time.monotonic() of the latest unit of work

    # ------------------------------------------------------------ transactions

    @contextmanager
    def unit_of_work(self, ctx: RequestContext, *, write: bool) -> Iterator[UnitOfWork]:
        """One transaction: commits on success (after before_commit hooks), rolls back on error.
        `write=False` promises that the interactions only read (hooks may still record)."""
        self.last_unit_started = time.monotonic()  # background work yields to requests
        try:
            try:
                with storage.open_unit_of_work(self.engine, ctx, write=write) as uow:
                    yield uow
                    self.pipeline.before_commit(uow)
            except (sqlalchemy.exc.IntegrityError, psycopg.errors.IntegrityError) as exc:
                # Only a racing create of the same id gets here (ids are checked first).
                raise Conflict("a resource with that id was created concurrently; retry") from exc
        except Exception as exc:
            self.pipeline.on_failure(ctx, None, exc)
            raise
        self.pipeline.after_commit(uow)

    # ------------------------------------------------------------ reads

    def check_type(self, rtype: str) -> None:
        if rtype not in known_resource_types():
            raise NotFound(f"unknown resource type '{rtype}'")

    def check_listed_types(self, names: list[str]) -> None:
        """`_type` values: an unknown one is a bad parameter value (400), not a missing
        resource endpoint (404, as for an unknown type in the path)."""
        for name in names:
            if name not in known_resource_types():
                raise InvalidRequest(f"unknown resource type '{name}'", expression="_type")

    def read(self, uow: UnitOfWork, rtype: str, rid: str) -> StoredVersion:
        self.check_type(rtype)
        interaction = Interaction("read", rtype, rid)
        self.pipeline.authorize(uow, interaction)
        current = storage.get_current(uow, rtype, rid)
        if current is None:
            raise NotFound(f"{rtype}/{rid} is not known")
        if current.deleted:
            raise Gone(
                f"{rtype}/{rid} was deleted",
                headers={"ETag": f'W/"{current.version_id}"'},
            )
        self.pipeline.on_access(uow, interaction, current)
        return current

    def vread(self, uow: UnitOfWork, rtype: str, rid: str, version_id: str) -> StoredVersion:
        self.check_type(rtype)
        interaction = Interaction("vread", rtype, rid)
        self.pipeline.authorize(uow, interaction)
        number = parse_version_id(version_id)
        if number is None:
            raise NotFound(f"{rtype}/{rid} has no version '{version_id}'")
        version = storage.get_version(uow, rtype, rid, number)
        if version is None:
            raise NotFound(f"{rtype}/{rid} has no version {version_id}")
        if version.deleted:
            raise Gone(f"{rtype}/{rid} version {version_id} is a deletion")
        self.pipeline.on_access(uow, interaction, version)
        return version

    def search(
        self,
        uow: UnitOfWork,
        rtype: str | None,
        params: SearchParams,
        *,
        types: list[str] | None = None,
        compartment: tuple[str, str] | None = None,
        operation: str = "",
        types_named: bool = True,
        within: Callable[[RowFilter], RowFilter] | None = None,
    ) -> SearchResult:
        """Type-level search (rtype), or system-level search over `types` when rtype is None;
        `compartment` (type, id) confines the matches to that compartment (compartments.py),
        `within` narrows it more. An `operation`'s search ($everything): its includes (and
        `types`, unless `types_named`) are its own; what the grant misses of them is left out."""
        if rtype is not None:
            self.check_type(rtype)
        self.check_listed_types(types or [])
        level = "search-type" if rtype else "search-system"
        interaction = Interaction(
            level, rtype, query=params.query_string(), types=tuple(types or ()), search=params,
            operation=operation, types_named=types_named,
        )  # fmt: skip
        self.pipeline.authorize(uow, interaction)
        if operation and compartment is not None:  # $everything: of a patient that is there
            require_live(storage.get_current(uow, *compartment), *compartment)
        searched = [rtype] if rtype else (types or sorted(known_resource_types()))
        granted = uow.row_filter
        if compartment is not None:
            ctype, cid = compartment
            confined = CompartmentFilter(ctype, cid, uow.ctx.base_url, granted, tuple(searched))
            uow.row_filter = within(confined) if within else confined
        try:
            result = search(uow, searched, params, base_url=uow.ctx.base_url)
        finally:
            uow.row_filter = granted
        for version in [*result.versions, *result.included]:
            self.pipeline.on_access(uow, interaction, version)
        return result

    def history(
        self,
        uow: UnitOfWork,
        rtype: str | None,
        rid: str | None,
        *,
        since: int | None,
        at: tuple[int, int] | None,
        cursor: HistoryCursor | None,
        count: int,
    ) -> HistoryResult:
        if rtype is not None:
            self.check_type(rtype)
        level = "history-instance" if rid else "history-type" if rtype else "history-system"
        interaction = Interaction(level, rtype, rid, query=history_query(since, at))
        self.pipeline.authorize(uow, interaction)
        if rid is not None and storage.get_current(uow, rtype or "", rid) is None:
            raise NotFound(f"{rtype}/{rid} is not known")
        rows = history_page(
            uow, rtype=rtype, rid=rid, since=since, current_during=at, after=cursor, limit=count + 1
        )
        page, more = rows[:count], len(rows) > count
        last = page[-1] if page else None  # the cursor goes on from what was read
        page = [v for v in page if self.pipeline.visible(uow, interaction, v)]
        for version in page:
            self.pipeline.on_access(uow, interaction, version)
        next_cursor = (
            HistoryCursor(last.last_updated, last.resource_type, last.id, last.version_id)
            if more and last
            else None
        )
        return HistoryResult(page, next_cursor)

    def find_ids(self, uow: UnitOfWork, rtype: str, query: str, *, limit: int = 2) -> list[str]:
        """Ids matching conditional criteria (strict: an unknown parameter is an error)."""
        params = conditional_params(rtype, query, limit)
        (found,) = first_ids(uow, [(rtype, params)], base_url=uow.ctx.base_url)
        return found

    def find_ids_to_create(self, uow: UnitOfWork, rtype: str, query: str) -> list[str]:
        """`find_ids` for a write that creates when nothing matches (If-None-Exist, a
        conditional update): the criteria's name is locked first, so a concurrent one waits
        and then finds what this one creates (app.fhir.locks) instead of creating a twin."""
        locks.lock_keys(uow, [locks.criteria_key(rtype, query)])
        return self.find_ids(uow, rtype, query)

    def find_ids_many(
        self, uow: UnitOfWork, queries: list[tuple[str, str]], *, limit: int = 2
    ) -> list[list[str] | FhirError]:
        """`find_ids` for each (type, criteria), in one database round trip: per query its
        ids, or the error that query alone raises (the others are still looked up)."""
        results: list[list[str] | FhirError] = []
        asked: list[tuple[int, tuple[str, SearchParams]]] = []
        for rtype, query in queries:
            try:
                asked.append((len(results), (rtype, conditional_params(rtype, query, limit))))
                results.append([])
            except FhirError as exc:
                results.append(exc)
        found = first_ids(uow, [search for _, search in asked], base_url=uow.ctx.base_url)
        for (position, _), ids in zip(asked, found, strict=True):
            results[position] = ids
        return results

    def referrers(
        self, uow: UnitOfWork, rtype: str, ids: Collection[str], *,
        wanted: Callable[[str], bool], skip: Collection[str], limit: int,
    ) -> Referrers:  # fmt: skip
        """Who refers to these resources, by the reference index (search/referrers.py). Like
        find_ids it returns ids only: what the caller then reads or updates is authorized."""
        self.check_type(rtype)
        base_url = uow.ctx.base_url
        return referrers(uow, rtype, ids, base_url=base_url, wanted=wanted, skip=skip, limit=limit)

    # ------------------------------------------------------------ writes

    def create(
        self,
        uow: UnitOfWork,
        rtype: str,
        body: Any,
        *,
        if_none_exist: str | None = None,
        assigned_id: str | None = None,
        fresh_id: bool = False,
        method: str = "POST",
    ) -> WriteOutcome:
        """POST. `assigned_id` comes from a transaction; `fresh_id` says we minted it (no clash).
        `method`: what history shows as the request; a conditional update that creates is
        a PUT (history shows `PUT {type}/{new id}`, as a transaction resolves it)."""
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("create", rtype, query=if_none_exist or ""))
        if if_none_exist:
            matches = self.find_ids_to_create(uow, rtype, if_none_exist)
            if len(matches) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist '{if_none_exist}' matches more than one {rtype}"
                )
            if matches:  # nothing written, but the match is returned: an access (audit)
                existing = storage.get_current(uow, rtype, matches[0])
                assert existing is not None
                self.pipeline.on_access(uow, Interaction("create", rtype), existing)
                # Its content only to a caller who may read it: `c` alone is no read.
                as_read = Interaction("read", rtype, existing.id)
                shown = self.pipeline.visible(uow, as_read, existing)
                return WriteOutcome(existing, matched_existing=True, content_withheld=not shown)
        validate_resource(body, expected_type=rtype)
        rid = assigned_id or str(uuid.uuid4())
        version = storage.stamp(rtype, rid, body, 1)
        if assigned_id is None or fresh_id:
            storage.stage_insert_current(uow, version)
        elif not storage.try_insert_current(uow, version):
            raise Conflict(f"{rtype}/{rid} already exists")
        self._record(uow, version, "create", method, body)
        return WriteOutcome(version, created=True)

    def update(
        self,
        uow: UnitOfWork,
        rtype: str,
        rid: str,
        body: Any,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
        method: str = "PUT",
        prefetched: bool = False,
        current: StoredVersion | None = None,
    ) -> WriteOutcome:
        """PUT. `prefetched`: a transaction already read (and locked) `current` for this id.
        `if_none_match: *` makes it a create only (RFC 9110 13.1.2)."""
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("update", rtype, rid))
        preconditions.check_if_match_syntax(if_match)
        if not is_valid_id(rid):
            raise InvalidRequest(f"'{rid}' is not a valid resource id")
        validate_resource(body, expected_type=rtype, expected_id=rid)
        if not prefetched:
            current = storage.get_current(uow, rtype, rid, lock=True)
        preconditions.check_if_none_match(if_none_match, current)
        if current is None:
            preconditions.check_if_match_absent(if_match, rtype, rid)
            version = storage.stamp(rtype, rid, body, 1)
            if prefetched:  # batched; a concurrent create of the same id fails the commit (409)
                storage.stage_insert_current(uow, version)
                self._record(uow, version, "create", method, body)
                return WriteOutcome(version, created=True)
            if storage.try_insert_current(uow, version):
                self._record(uow, version, "create", method, body)
                return WriteOutcome(version, created=True)
            # Someone created it between our read and insert: fall through as an update.
            current = storage.get_current(uow, rtype, rid, lock=True)
            assert current is not None
            preconditions.check_if_none_match(if_none_match, current)
        preconditions.check_if_match(if_match, current)
        version = storage.stamp(rtype, rid, body, current.version_id + 1)
        if not storage.update_current(uow, version, expected_version=current.version_id):
            raise Conflict(f"{rtype}/{rid} was changed concurrently; retry")
        self._record(uow, version, "update", method, body, resurrects=current.deleted)
        return WriteOutcome(version, created=current.deleted)

    def conditional_update(
        self,
        uow: UnitOfWork,
        rtype: str,
        query: str,
        body: Any,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> WriteOutcome:
        self.check_type(rtype)
        # Authorized first so that the search for a match sees only what may be updated.
        self.pipeline.authorize(uow, Interaction("update", rtype, query=query))
        preconditions.check_if_match_syntax(if_match)
        matches = self.find_ids_to_create(uow, rtype, query)
        body_id = body.get("id") if isinstance(body, dict) else None
        if len(matches) > 1:
            raise PreconditionFailed(f"conditional update '{query}' matches more than one {rtype}")
        if not matches:
            if body_id:
                return self.update(
                    uow, rtype, body_id, body, if_match=if_match, if_none_match=if_none_match
                )
            if if_match:  # false with nothing current (RFC 9110 13.1.1), as for a delete
                raise PreconditionFailed(f"If-Match given but no {rtype} matches '{query}'")
            return self.create(uow, rtype, body, method="PUT")
        if body_id and body_id != matches[0]:
            raise InvalidRequest(
                f"resource id '{body_id}' differs from the matched {rtype}/{matches[0]}",
                expression=f"{rtype}.id",
            )
        if isinstance(body, dict) and not body_id:
            body = {**body, "id": matches[0]}
        return self.update(
            uow, rtype, matches[0], body, if_match=if_match, if_none_match=if_none_match
        )

    def patch(
        self, uow: UnitOfWork, rtype: str, rid: str, operations: Any, *, if_match: str | None = None
    ) -> WriteOutcome:
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("patch", rtype, rid))
        preconditions.check_if_match_syntax(if_match)
        current = storage.get_current(uow, rtype, rid, lock=True)
        if current is None:
            raise NotFound(f"{rtype}/{rid} is not known")
        if current.deleted:
            raise Gone(f"{rtype}/{rid} was deleted")
        preconditions.check_if_match(if_match, current)
        # (apply_json_patch refuses an operation that changes resourceType or id)
        patched = apply_json_patch(jsonio.loads(current.content or b"{}"), operations)
        validate_resource(patched, expected_type=rtype, expected_id=rid)
        version = storage.stamp(rtype, rid, patched, current.version_id + 1)
        if not storage.update_current(uow, version, expected_version=current.version_id):
            raise Conflict(f"{rtype}/{rid} was changed concurrently; retry")
        self._record(uow, version, "update", "PATCH", patched)
        return WriteOutcome(version)

    def conditional_patch(
        self,
        uow: UnitOfWork,
        rtype: str,
        query: str,
        operations: Any,
        *,
        if_match: str | None = None,
    ) -> WriteOutcome:
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("patch", rtype, query=query))
        preconditions.check_if_match_syntax(if_match)
        matches = self.find_ids(uow, rtype, query)
        if len(matches) > 1:
            raise PreconditionFailed(f"conditional patch '{query}' matches more than one {rtype}")
        if not matches:
            raise NotFound(f"no {rtype} matches '{query}'")
        return self.patch(uow, rtype, matches[0], operations, if_match=if_match)

    def delete(
        self, uow: UnitOfWork, rtype: str, rid: str, *, if_match: str | None = None
    ) -> StoredVersion | None:
        """The deletion version; None if there is none to delete (R4 http.html#delete)."""
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("delete", rtype, rid))
        preconditions.check_if_match_syntax(if_match)
        current = storage.get_current(uow, rtype, rid, lock=True)
        if current is None:  # never there: as good as deleted ("does not exist at all")
            preconditions.check_if_match_absent(if_match, rtype, rid)
            return None
        preconditions.check_if_match(if_match, current)
        if current.deleted:
            return None
        version = StoredVersion(
            rtype, rid, current.version_id + 1, storage.now_us(), True, None, "DELETE"
        )
        if not storage.update_current(uow, version, expected_version=current.version_id):
            raise Conflict(f"{rtype}/{rid} was changed concurrently; retry")
        storage.stage_history(uow, version, "DELETE")  # (update_current dropped its index rows)
        # What was accessed is the version deleted (it says whose data it was: the audit
        # trail's patient); the change is the deletion itself.
        self._changed(uow, Change("delete", version), accessed=current)
        return version

    def conditional_delete(
        self, uow: UnitOfWork, rtype: str, query: str, *, if_match: str | None = None
    ) -> StoredVersion | None:
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("delete", rtype, query=query))
        preconditions.check_if_match_syntax(if_match)
        matches = self.find_ids(uow, rtype, query)
        if len(matches) > 1:
            raise PreconditionFailed(f"conditional delete '{query}' matches more than one {rtype}")
        if not matches:
            if if_match:  # false with nothing current, as for a delete by id (RFC 9110 13.1.1)
                raise PreconditionFailed(f"If-Match given but no {rtype} matches '{query}'")
            return None
        return self.delete(uow, rtype, matches[0], if_match=if_match)

    # ------------------------------------------------------------ internals

    def _record(
        self,
        uow: UnitOfWork,
        version: StoredVersion,
        interaction: str,
        method: str,
        body: dict[str, Any],
        *,
        resurrects: bool = False,
    ) -> None:
        """History and index rows of a version just written (a created resource has no
        index rows yet; update_current dropped an updated one's). `resurrects`: it brings
        back a deleted resource (a create: history's 201)."""
        storage.stage_history(uow, version, method, resurrects=resurrects)
        storage.stage_index(uow, index_rows(version.resource_type, version.id, body))
        self._changed(uow, Change("patch" if method == "PATCH" else interaction, version))

    def _changed(
        self, uow: UnitOfWork, change: Change, *, accessed: StoredVersion | None = None
    ) -> None:
        uow.changes.append(change)
        self.pipeline.on_change(uow, change)
        self.pipeline.on_access(
            uow,
            Interaction(change.interaction, change.version.resource_type, change.version.id),
            accessed or change.version,
        )
