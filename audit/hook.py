"""The audit hook: every interaction through the door leaves an AuditEvent.

Registered first in the pipeline, so an interaction is noted before authorization can refuse
it. Accesses accumulate on the interaction (the resources read or written, the patients they
concern); just before the transaction commits, each interaction becomes one chained record
in that same transaction. When the unit fails, every interaction it attempted is recorded as
failed, in a transaction of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import Engine

from app.auth.reach import reached
from app.context import RequestContext
from app.errors import MethodNotAllowed
from app.fhir import jsonio
from app.fhir.hooks import Hook, Interaction
from app.fhir.storage import StoredVersion, UnitOfWork
from audit import indexing
from audit.chain import AuditRecord
from audit.events import FEED_LOOKUP, SIGN_IN_CLIENT, SUCCESS, Actor, Entities, EventKind, Outcome
from audit.patients import patients_of
from audit.trail import AuditTrail, actor_of, outcome_of

WRITES = frozenset({"create", "update", "patch", "delete"})
# Interactions whose result is a list: the query and patients are recorded, not each resource.
LISTINGS = frozenset({"search-type", "search-system", "history-type", "history-system"})


@dataclass
class Pending:
    interaction: Interaction
    query: str | None = None
    resources: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)


class AuditHook(Hook):
    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None:
        pending = uow.ctx.trail.pending
        last = pending[-1] if pending else None
        if (
            last is not None
            and not last.resources
            and last.interaction.name in WRITES
            and interaction.name in WRITES
            and last.interaction.resource_type == interaction.resource_type
        ):
            # A conditional write authorizes by its criteria, then as the write it becomes.
            pending[-1] = Pending(interaction, query=last.query or interaction.query or None)
        else:
            pending.append(Pending(interaction, query=_query(interaction)))
        if interaction.resource_type == "AuditEvent" and interaction.name in WRITES:
            raise MethodNotAllowed(
                "AuditEvent is written by the server only; it is read-only",
                allow="GET, HEAD",  # RFC 9110 15.5.6: what the target allows
            )

    def on_access(self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion) -> None:
        pending = uow.ctx.trail.pending
        if not pending:
            return
        current = pending[-1]
        if current.interaction.name not in LISTINGS:
            ref = f"{version.resource_type}/{version.id}/_history/{version.version_id}"
            current.resources.append(ref)
        if version.resource_type == "Patient":  # itself, deleted or not
            found = [version.id]
        elif version.resource_type == "AuditEvent" or version.content is None:
            return
        else:
            found = patients_of(version.resource_type, jsonio.loads_stored(version.content))
        for patient in found:
            if patient not in current.patients:
                current.patients.append(patient)

    def before_commit(self, uow: UnitOfWork) -> None:
        self.trail.append_in(uow, self._drain(uow.ctx, SUCCESS))

    def on_failure(
        self, ctx: RequestContext, interaction: Interaction | None, error: Exception
    ) -> None:
        if not ctx.trail.pending:
            self.trail.record_request_failure(ctx, error)
            return
        self.trail.record(self._drain(ctx, outcome_of(error)))
        ctx.trail.failure_recorded = True

    def _drain(self, ctx: RequestContext, outcome: Outcome) -> list[AuditRecord]:
        """Every pending interaction as a record with this outcome; none left pending."""
        records = [self._record(ctx, p, outcome) for p in ctx.trail.pending]
        ctx.trail.pending.clear()
        return records

    def _record(self, ctx: RequestContext, pending: Pending, outcome: Outcome) -> AuditRecord:
        interaction = pending.interaction
        resources = pending.resources
        if not resources and interaction.resource_type and interaction.id:
            resources = [f"{interaction.resource_type}/{interaction.id}"]
        actor, description = actor_of(ctx), ctx.request_line or None
        if ctx.channel == "auth":
            actor, description = _sign_in_page(ctx, actor)
        elif ctx.channel == "hl7" and interaction.name not in WRITES:
            description = f"{FEED_LOOKUP} ({description})" if description else FEED_LOOKUP
        entities = Entities(
            resources=resources,
            patients=pending.patients,
            query=pending.query,
            description=description,
        )
        return self.trail.build(EventKind.rest(interaction.name), actor, outcome, entities)


class AuditCatchUpHook(Hook):
    """Before the audit trail is read, make every committed record searchable.

    Requests write only chain records; their searchable copies follow in background batches
    (indexing.py). A compliance officer must still see everything committed before the search,
    so reads of AuditEvent (and system-wide listings, which may include it) catch up first, in
    a transaction of their own: on PostgreSQL the read's next statement sees it committed; a
    SQLite read unit's snapshot starts at its first read, which comes after this hook (hence
    its place before authorization, which reads the token's state). A SQLite write unit holds
    the only write lock, so there the copy is made inside it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None:
        reads_trail = (
            interaction.resource_type == "AuditEvent"
            or (interaction.resource_type is None and interaction.name in LISTINGS)
            or _search_reaches_trail(interaction)
        )
        if not reads_trail or interaction.name in WRITES:
            return
        if uow.dialect == "sqlite" and not uow.read_only:
            indexing.catch_up(uow)
        else:
            indexing.catch_up_now(self.engine)


def _search_reaches_trail(interaction: Interaction) -> bool:
    """A search of another type that returns or tests AuditEvents, through an include
    (`Patient?_revinclude=AuditEvent:entity`), a chain or a `_has`: it reads the trail too."""
    search = interaction.search
    return search is not None and any("AuditEvent" in r.types for r in reached(search))


def _sign_in_page(ctx: RequestContext, actor: Actor) -> tuple[Actor, str]:
    """The sign-in pages look patients up through the door (the picker's list, the consent
    page's patient) for the user signing in, before the app holds any token: the client agent
    is the server's sign-in page, the app is named in the description."""
    return (
        replace(actor, client_id=SIGN_IN_CLIENT),
        f"patient look-up by the sign-in page, for client {ctx.client_id}",
    )


def _query(interaction: Interaction) -> str | None:
    if interaction.name in LISTINGS or interaction.query:
        return interaction.query
    return None
