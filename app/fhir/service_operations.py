"""The door's steps for operations and maintenance: an operation that is no search
($validate), a write staged only to be checked, and reindexing. Part of FhirService (its
base class), kept apart so that app/fhir/service.py holds the interactions themselves."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app.context import RequestContext
from app.errors import Conflict, Gone, NotFound, ServerError
from app.fhir import jsonio, storage
from app.fhir.hooks import Interaction, Pipeline
from app.fhir.search.indexer import index_rows
from app.fhir.storage import StoredVersion, UnitOfWork


def require_live(current: StoredVersion | None, rtype: str, rid: str) -> StoredVersion:
    """The instance an operation is invoked on: 404 when it never was, 410 when deleted
    (R4 http.html#read), rather than an answer about nothing."""
    if current is None:
        raise NotFound(f"{rtype}/{rid} is not known")
    if current.deleted:
        raise Gone(f"{rtype}/{rid} was deleted", headers={"ETag": f'W/"{current.version_id}"'})
    return current


@dataclass(frozen=True)
class ReindexBatch:
    count: int
    last_id: str | None
    failures: list[str]


class OperationSteps:
    pipeline: Pipeline

    def check_type(self, rtype: str) -> None:
        raise NotImplementedError  # FhirService's

    def confines(self, ctx: RequestContext, interaction: Interaction) -> bool:
        """Will this interaction's grant confine it (a row filter)? Before its unit of work
        opens: a $validate of a write opens a write transaction only then."""
        return self.pipeline.confines(ctx, interaction)

    def operation(
        self, uow: UnitOfWork, interaction: Interaction, *, must_exist: bool = True
    ) -> StoredVersion | None:
        """An operation that is no search ($validate), authorized and audited as itself; the
        current version of its instance, noted as accessed (the record names whose data).
        An instance that is not there is 404, a deleted one 410, as a read of it; unless not
        `must_exist` ($validate of an update: a PUT there would create or bring it back)."""
        self.pipeline.authorize(uow, interaction)
        rtype, rid = interaction.resource_type, interaction.id
        current = storage.get_current(uow, rtype, rid) if rtype and rid else None
        if rtype and rid and must_exist:
            require_live(current, rtype, rid)
        if current is not None:
            self.pipeline.on_access(uow, interaction, current)
        return current

    def try_write(
        self, uow: UnitOfWork, rtype: str, rid: str | None, body: dict[str, Any],
        current: StoredVersion | None,
    ) -> None:  # fmt: skip
        """$validate of a create (rid None) or an update of `current`: staged as the write
        stages it and checked by the hooks as the write's result is, in a savepoint rolled
        back (nothing is kept, nothing recorded as accessed). Raises what the write would."""
        if uow.row_filter is None:
            return  # no grant confines the result: nothing to check, nothing to write
        if uow.read_only:  # `confines` said no filter, `authorize` set one: they disagree
            raise ServerError("a confined $validate of a write was opened as a read")
        name = "create" if rid is None else "update"
        number = current.version_id + 1 if current else 1
        version = storage.stamp(rtype, rid or str(uuid.uuid4()), body, number)
        with uow.trial():
            if current is None:
                storage.stage_insert_current(uow, version)
            elif not storage.update_current(uow, version, expected_version=current.version_id):
                raise Conflict(f"{rtype}/{rid} was changed concurrently; retry")
            storage.stage_index(uow, index_rows(rtype, version.id, body))
            self.pipeline.check_result(uow, Interaction(name, rtype, version.id), version)

    def reindex_batch(
        self, uow: UnitOfWork, rtype: str, after_id: str | None, limit: int
    ) -> ReindexBatch:
        """Recompute the index rows of the next `limit` current resources of one type."""
        self.check_type(rtype)
        self.pipeline.authorize(uow, Interaction("reindex", rtype))
        versions = storage.current_page(uow, rtype, after_id, limit)
        failures: list[str] = []
        for version in versions:
            try:
                body = jsonio.loads(version.content or b"{}")
                rows = index_rows(rtype, version.id, body)
            except Exception as exc:  # report and go on: one bad row must not stop a reindex
                failures.append(f"{rtype}/{version.id}: {type(exc).__name__}: {exc}")
                continue
            storage.replace_index(uow, rtype, version.id, rows, new=False)
        last = versions[-1].id if versions else None
        return ReindexBatch(len(versions), last, failures)
