"""The hook point: cross-cutting concerns (authorization, audit, outbox, subscriptions)
attach here instead of being called from handlers (HAPI's interceptors, reduced to five phases).

The service calls, in order, for every interaction:
    authorize(uow, interaction)      before anything is read or written; raise Forbidden to refuse
    on_access(uow, interaction, v)   each version read or written, inside the transaction
    on_change(uow, change)           each write, inside the transaction (the outbox lives here)
    before_commit(uow)               last chance to write in the same transaction; raising aborts
    after_commit(uow)                the transaction is durable
    on_failure(ctx, interaction, e)  the interaction failed (the transaction was rolled back)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.context import RequestContext
from app.fhir import storage
from app.fhir.storage import Change, RowFilter, StoredVersion, UnitOfWork

if TYPE_CHECKING:
    from app.fhir.search.params import SearchParams


@dataclass(frozen=True)
class Interaction:
    name: str  # read vread update patch delete history-instance history-type history-system
    #            create search-type search-system capabilities transaction batch operation
    resource_type: str | None = None
    id: str | None = None
    query: str = ""
    types: tuple[str, ...] = ()  # the types a system-level search covers
    # False: `types` are what an operation covers ($everything without `_type`), not what the
    # client named, so a type the grant may not search is left out rather than refused.
    types_named: bool = True
    # The operation ($validate) of an "operation" interaction, or the one that made a search
    # ($everything): such a search's includes are the operation's, not the client's.
    operation: str = ""
    permission: str = ""  # what an operation needs of the grant on its type: c r u d or s
    # A search's parsed parameters: the types its chains, _has and includes reach are
    # authorized too (app.auth.reach). Not compared: it holds a dict (the cursor).
    search: SearchParams | None = field(default=None, compare=False)


class Hook:
    """Base class with every phase a no-op; override what you need."""

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None: ...

    def on_access(
        self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion
    ) -> None: ...

    def visible(self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion) -> bool:
        """May a version a history returns be listed? (An access hook leaves out older
        versions outside what the grant reaches; the row filter judges current ones only.)"""
        return True

    def check_result(
        self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion
    ) -> None:
        """A write's result, staged (not yet flushed): may the caller have written it? Raises
        if not. The write path asks it through on_access; $validate asks it alone (nothing
        is accessed: the version is tried in a savepoint and undone)."""

    def confines(self, ctx: RequestContext, interaction: Interaction) -> bool:
        """Would `authorize` confine this interaction with a row filter? Asked before a unit
        of work opens, without the database ($validate of a write needs a write transaction
        only to try a confined result in a savepoint)."""
        return False

    def condition_filter(self, uow: UnitOfWork, interaction: Interaction) -> RowFilter | None:
        """The rows a condition may find when it is resolved before its interaction is
        authorized (a transaction's ifNoneExist, conditional updates and references, looked
        up before any entry runs): what `authorize` would confine the interaction to. Nothing
        is recorded; None: no confinement."""
        return None

    def on_change(self, uow: UnitOfWork, change: Change) -> None: ...

    def before_commit(self, uow: UnitOfWork) -> None: ...

    def after_commit(self, uow: UnitOfWork) -> None: ...

    def on_failure(
        self, ctx: RequestContext, interaction: Interaction | None, error: Exception
    ) -> None: ...


class Pipeline(Hook):
    """Runs a list of hooks in registration order."""

    def __init__(self, hooks: list[Hook] | None = None) -> None:
        self.hooks: list[Hook] = list(hooks or [])

    def add(self, hook: Hook) -> None:
        self.hooks.append(hook)

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None:
        for hook in self.hooks:
            hook.authorize(uow, interaction)

    def on_access(self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion) -> None:
        for hook in self.hooks:
            hook.on_access(uow, interaction, version)

    def check_result(
        self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion
    ) -> None:
        for hook in self.hooks:
            hook.check_result(uow, interaction, version)

    def visible(self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion) -> bool:
        return all(hook.visible(uow, interaction, version) for hook in self.hooks)

    def confines(self, ctx: RequestContext, interaction: Interaction) -> bool:
        return any(hook.confines(ctx, interaction) for hook in self.hooks)

    def condition_filter(self, uow: UnitOfWork, interaction: Interaction) -> RowFilter | None:
        found = (hook.condition_filter(uow, interaction) for hook in self.hooks)
        return next((row_filter for row_filter in found if row_filter is not None), None)

    def on_change(self, uow: UnitOfWork, change: Change) -> None:
        for hook in self.hooks:
            hook.on_change(uow, change)

    def before_commit(self, uow: UnitOfWork) -> None:
        for hook in self.hooks:
            hook.before_commit(uow)

    def after_commit(self, uow: UnitOfWork) -> None:
        for hook in self.hooks:
            hook.after_commit(uow)

    def on_failure(
        self, ctx: RequestContext, interaction: Interaction | None, error: Exception
    ) -> None:
        for hook in self.hooks:
            hook.on_failure(ctx, interaction, error)


class OutboxHook(Hook):
    """Records every committed change as a change_event row in the same transaction."""

    def on_change(self, uow: UnitOfWork, change: Change) -> None:
        storage.stage_change_event(uow, change)
