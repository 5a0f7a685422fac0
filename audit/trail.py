"""The audit trail's writer: turns what happened into chained AuditEvent records.

Used by the door's audit hook (hook.py) inside a unit of work, and on its own, in a short
transaction of its own, for events that happen outside the door: a request refused at the
edge (no token, a body that does not parse), a sign-in, a token issued or revoked.

Fail closed: if a record cannot be written, `AuditUnavailable` (500) is raised and the
caller's answer is replaced by it; nothing the record would have covered leaves the server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from app.auth.server import AuthEvent
from app.context import RequestContext
from app.errors import FhirError, ServerError
from app.fhir import storage
from app.fhir.storage import UnitOfWork
from audit import chain
from audit.appender import PartitionAppender
from audit.async_commit import AsyncGroupCommit
from audit.chain import AuditRecord
from audit.events import SUCCESS, Actor, Entities, EventKind, Outcome, audit_event
from audit.group import GroupCommit, UnitOfWorkWriter

log = logging.getLogger("medisentinel.audit")


class AuditUnavailable(ServerError):
    """The audit record could not be written: the request is refused (fail closed)."""


def actor_of(ctx: RequestContext) -> Actor:
    grant = ctx.grant
    username = grant.subject if grant is not None and grant.role is not None else None
    return Actor(
        client_id=ctx.client_id,
        user=ctx.user,
        username=username,
        address=ctx.remote_addr,
        channel=ctx.channel,
    )


def outcome_of(error: BaseException) -> Outcome:
    if isinstance(error, FhirError):
        return Outcome.for_status(error.status, f"{error.status} {error.message}")
    return Outcome("8", f"500 {type(error).__name__}")


class AuditTrail:
    def __init__(self, engine: Engine, server: str) -> None:
        self.engine = engine
        self.server = server  # this server's base URL: AuditEvent.source.site
        # PostgreSQL: this process's audit partitions, for units of work and batches.
        self.appender: PartitionAppender | None = None
        if engine.dialect.name == "postgresql":
            self.appender = PartitionAppender(engine.url.render_as_string(hide_password=False))
        # Records of many callers, one commit: on worker threads (SQLite reads; events
        # outside the door), and in the event loop for the FHIR endpoint's PostgreSQL reads.
        self.group_commit = GroupCommit(self.appender or UnitOfWorkWriter(engine))
        self.async_commit = AsyncGroupCommit(self.appender) if self.appender else None

    def build(
        self, kind: EventKind, actor: Actor, outcome: Outcome, entities: Entities
    ) -> AuditRecord:
        recorded = storage.now_us()
        event = audit_event(
            kind, actor, outcome, entities, recorded_us=recorded, server=self.server
        )
        return chain.record(event, recorded)

    def append_in(self, uow: UnitOfWork, records: list[AuditRecord]) -> None:
        """Chain records in the unit's own transaction (on PostgreSQL a read unit's own
        statement, in autocommit, after its reads); a SQLite read unit's are committed with
        other reads' (group.py) before this returns, i.e. before its data leaves."""
        if not records:
            return
        if self.appender is not None:
            if uow.read_only and uow.ctx.trail.may_defer and self.async_commit is not None:
                uow.ctx.trail.deferred.extend(records)  # see commit_deferred
                return
            # Sent after the staged rows in the COMMIT round trip, where a conflicting row
            # still fails as the write's own (409: see FhirService.unit_of_work).
            with _fail_closed():
                self.appender.append_in(uow, records)
            return
        if uow.read_only:
            self.record(records)
            return
        uow.flush()  # the unit's own writes first: their conflicts are theirs (409), not ours
        with _fail_closed():
            chain.append(uow, records)

    def expect_deferred(self) -> bool:
        """Tell the batch writer that a request which may leave records is being served (it
        may wait a moment for them: async_commit.py); False when nothing is batched."""
        if self.async_commit is None:
            return False
        self.async_commit.expect()
        return True

    async def commit_deferred(self, ctx: RequestContext, *, expected: bool = False) -> None:
        """Commit the records the request's read units left in `ctx.trail.deferred`, with
        other requests' (async_commit.py); the request must not answer before this returns.
        `expected`: `expect_deferred` was called for this request."""
        records, ctx.trail.deferred = ctx.trail.deferred, []
        if self.async_commit is None:
            assert not records
            return
        with _fail_closed():
            await self.async_commit.append(records, expected=expected)

    def record(self, records: list[AuditRecord]) -> None:
        """Chain records in a transaction of their own, with other events' (group.py)."""
        if not records:
            return
        with _fail_closed():
            self.group_commit.append(records)

    def record_event(
        self,
        kind: EventKind,
        actor: Actor,
        outcome: Outcome,
        entities: Entities | None = None,
    ) -> None:
        self.record([self.build(kind, actor, outcome, entities or Entities())])

    def record_auth(self, event: AuthEvent) -> None:
        """An authorization server event (sign-in, consent, token issued/refused/...)."""
        actor = Actor(
            client_id=event.client_id,
            user=event.fhir_user,
            username=event.username,
            address=event.address,
            channel="auth",
        )
        outcome = SUCCESS if event.ok else Outcome("4", event.detail)
        entities = Entities(
            patients=[event.patient] if event.patient else [], description=event.detail or None
        )
        self.record_event(EventKind.auth(event.what), actor, outcome, entities)

    def record_request_failure(self, ctx: RequestContext, error: BaseException) -> None:
        """A request that failed before (or outside) any interaction of the door."""
        kind = EventKind.rest(_interaction_guess(ctx.request_line))
        entities = Entities(description=ctx.request_line or None)
        self.record([self.build(kind, actor_of(ctx), outcome_of(error), entities)])
        ctx.trail.failure_recorded = True


@contextmanager
def _fail_closed() -> Iterator[None]:
    """Any failure to write an audit record becomes AuditUnavailable (500)."""
    try:
        yield
    except Exception as exc:
        log.critical("audit record could not be written: %s", exc, exc_info=True)
        raise AuditUnavailable("the audit trail is unavailable; request refused") from exc


def _interaction_guess(request_line: str) -> str:
    """The REST interaction a request line asked for, for requests refused before the door
    knew: GET -> read/search, POST -> create (or a Bundle), PUT -> update ..."""
    method, _, target = request_line.partition(" ")
    path = target.split("?", 1)[0].removeprefix("/fhir").strip("/")
    segments = [s for s in path.split("/") if s]
    if method in ("GET", "HEAD"):
        if "_history" in segments:
            return "vread" if segments[-1] != "_history" else "history-instance"
        return "read" if len(segments) == 2 else "search-type" if segments else "search-system"
    if method == "POST":
        if not segments:
            return "transaction"
        return "search-type" if path.endswith("_search") else "create"
    return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "operation")
