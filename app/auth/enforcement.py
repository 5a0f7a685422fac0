"""Scopes enforced in the one door: the SMART access hook.

For every interaction the hook (1) requires a grant and, for a token, that it is still live
(not revoked) in the request's own transaction, (2) finds the scopes that permit the
interaction's permission (c r u d s) on its type, refusing with 403 when none does, and (3)
hands the storage layer a *row filter* when those scopes confine what may be touched: the
Patient compartment of a `patient/` scope (or of a patient user's `user/` scopes) and the
granular `?param=value` restrictions of v2 scopes. Searches, includes and history apply the
filter in SQL, so another patient's resource is never returned or counted; reads and writes
check the resource before (and, for writes, after) the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, and_, false, not_, or_, select, true

from app.auth import compartment
from app.auth.grant import Grant
from app.auth.reach import Reached, reached
from app.auth.scopes import EXPLICIT_ONLY_TYPES, ResourceScope
from app.auth.tokens import TokenService
from app.auth.versions import version_visible
from app.context import RequestContext
from app.errors import FhirError, Forbidden, Unauthorized
from app.fhir.hooks import Hook, Interaction
from app.fhir.search.params import SearchParams, parse_criterion
from app.fhir.search.sql import criterion_sql
from app.fhir.storage import RowFilter, StoredVersion, UnitOfWork, get_current
from app.fhir.tables import resource
from app.fhir.validation import known_resource_types

PERMISSION = {
    "read": "r", "vread": "r", "history-instance": "r",
    "search-type": "s", "search-system": "s", "history-type": "s", "history-system": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}  # fmt: skip
WRITES = frozenset({"create", "update", "patch"})
# What returns versions other than the current one (judged on their content: versions.py).
VERSIONED = frozenset({"vread", "history-instance", "history-type", "history-system"})
WRITE_PERMISSIONS = frozenset("cud")
PERMISSION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
UNCHECKED = frozenset({"capabilities", "transaction", "batch"})  # their entries are checked
LIVE_NOTE = "smart.token-live"


def bearer_challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="medisentinel"'
    if error:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{description}"'
    return {"WWW-Authenticate": value}


def unauthorized(description: str) -> Unauthorized:
    return Unauthorized(description, headers=bearer_challenge("invalid_token", description))


def token_required() -> Unauthorized:
    """No credentials at all: RFC 6750 section 3.1 says the challenge then carries no error."""
    return Unauthorized("a bearer token is required", headers=bearer_challenge())


def forbidden(description: str, expression: str | None = None) -> Forbidden:
    """The token is valid but its scopes do not reach this (RFC 6750: insufficient_scope)."""
    return Forbidden(
        description, expression=expression, headers=bearer_challenge("insufficient_scope")
    )


@dataclass(frozen=True)
class Rule:
    """One way a grant reaches a type: confined to a patient's compartment and/or a query."""

    patient: str | None
    query: tuple[tuple[str, str], ...]


class AccessFilter:
    """Which rows of which types a grant may touch with one permission, as SQL."""

    def __init__(self, grant: Grant, permission: str, types: list[str], base_url: str) -> None:
        self.grant = grant
        self.permission = permission
        self.types = types
        self.base_url = base_url
        self._rules: dict[str, list[Rule] | None] = {}
        self._siblings: dict[str, AccessFilter] = {permission: self}

    def rules(self, rtype: str) -> list[Rule] | None:
        """None: every row of the type; []: none at all; else any of the rules."""
        if rtype not in self._rules:
            self._rules[rtype] = self._derive_rules(rtype)
        return self._rules[rtype]

    def _derive_rules(self, rtype: str) -> list[Rule] | None:
        rules: list[Rule] = []
        for scope in self.grant.scopes.matching(rtype, self.permission):
            rule = _rule(self.grant, scope, rtype, self.permission)
            if rule is None:
                continue  # the scope cannot apply (a patient scope without a patient)
            if rule.patient is None and not rule.query:
                return None
            rules.append(rule)
        return rules

    def unrestricted(self) -> bool:
        return all(self.rules(t) is None for t in self.types)

    def for_permission(self, permission: str) -> AccessFilter:
        """The same grant's filter for another permission (the types a search reaches)."""
        if permission not in self._siblings:
            self._siblings[permission] = AccessFilter(
                self.grant, permission, self.types, self.base_url
            )
        return self._siblings[permission]

    def criteria_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        """The resources a chain or `_has` may test criteria on: those the grant may search."""
        return self.for_permission("s")._type_sql(rtype, owner_id)

    def included_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        """The resources `_include` / `_revinclude` may return: those the grant may read."""
        return self.for_permission("r")._type_sql(rtype, owner_id)

    def sql(self, owner_type: Any, owner_id: Any) -> ColumnElement[bool]:
        if isinstance(owner_type, str):
            return self._type_sql(owner_type, owner_id)
        free, parts = [], []
        for rtype in self.types:
            rules = self.rules(rtype)
            if rules is None:
                free.append(rtype)
            elif rules:
                parts.append(and_(owner_type == rtype, self._type_sql(rtype, owner_id)))
        if free:
            parts.append(owner_type.in_(free))
        return or_(*parts) if parts else false()

    def _type_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        rules = self.rules(rtype)
        if rules is None:
            return true()
        return or_(*[self._rule_sql(rtype, rule, owner_id) for rule in rules]) if rules else false()

    def _rule_sql(self, rtype: str, rule: Rule, owner_id: Any) -> ColumnElement[bool]:
        conditions = []
        if rule.patient is not None:
            conditions.append(
                compartment.in_compartment(rtype, owner_id, rule.patient, self.base_url)
            )
            if self.permission in WRITE_PERMISSIONS:  # nothing that is also another's
                conditions.append(
                    not_(
                        compartment.in_other_compartment(
                            rtype, owner_id, rule.patient, self.base_url
                        )
                    )
                )
        for key, value in rule.query:
            criterion = parse_criterion(rtype, key, value)
            conditions.append(
                criterion_sql(criterion, (rtype, owner_id), self.base_url, top=False, drive=False)
            )
        return and_(*conditions)


def _rule(grant: Grant, scope: ResourceScope, rtype: str, permission: str) -> Rule | None:
    if rtype in EXPLICIT_ONLY_TYPES and scope.context != "system":
        # The audit trail: a user scope reaches it only for a compliance officer.
        if scope.context == "patient" or grant.role != "compliance":
            return None
    patient: str | None = None
    if scope.context == "patient":
        if grant.patient is None:
            return None
        patient = grant.patient
    elif scope.context == "user" and grant.role == "patient":
        patient = (grant.fhir_user or "").removeprefix("Patient/") or None
        if patient is None:
            return None
    if patient is not None and not compartment.is_confined_type(rtype):
        # No patient's data: readable, but shared by everyone, so a grant confined to one
        # patient (SMART: data about the patient in context) may not change it.
        if permission in WRITE_PERMISSIONS:
            return None
        patient = None
    return Rule(patient, scope.query)


Witness = Callable[[UnitOfWork, Interaction, StoredVersion], None]


class SmartAccessHook(Hook):
    def __init__(self, tokens: TokenService, witness: Witness | None = None) -> None:
        self.tokens = tokens
        # Told of an existing resource this hook refuses (the audit hook's on_access): the
        # record of the refusal then names whose data was asked for (the patients it holds).
        self.witness = witness

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None:
        grant = self._live_grant(uow)
        uow.row_filter = None
        if interaction.name in UNCHECKED:
            return
        # An operation states what it needs ($validate: the write its mode checks, or read);
        # one that does not (maintenance, reindex) is for the server's own identities only.
        permission = PERMISSION.get(interaction.name) or interaction.permission or None
        if permission is None:
            if not grant.scopes.matching(interaction.resource_type or "*", "u"):
                raise forbidden(f"{interaction.name} needs a system scope")
            return
        if self._is_own_user_resource(grant, interaction):
            return
        types = self._types(interaction)
        access = AccessFilter(grant, permission, types, uow.ctx.base_url)
        if not any(access.rules(t) != [] for t in types):  # a type-level call: its one type
            raise forbidden(_refusal(permission, interaction.resource_type or "these types"))
        _check_named_types(access, interaction)
        restricted = not access.unrestricted()
        for reach in _reached(interaction):
            # An operation's own includes ($everything's supporting resources): what the
            # grant may not read of them is left out (the row filter), never refused.
            own = bool(interaction.operation) and reach.parameter.startswith("_include")
            restricted = _check_reached(access, reach, refuse=not own) or restricted
        if not restricted:
            return
        uow.row_filter = access
        if interaction.id and interaction.resource_type:
            self._check_existing(uow, access, interaction)

    def confines(self, ctx: RequestContext, interaction: Interaction) -> bool:
        """Would `authorize` give this interaction a row filter? Asked before its unit of
        work opens, from the token's scopes alone (no database): a refusal is `authorize`'s
        to give, so a context it would refuse is not confined here."""
        grant = ctx.grant
        permission = PERMISSION.get(interaction.name) or interaction.permission or None
        if grant is None or interaction.name in UNCHECKED or permission is None:
            return False
        if self._is_own_user_resource(grant, interaction):
            return False
        access = AccessFilter(grant, permission, self._types(interaction), ctx.base_url)
        reaches = [_check_reached(access, r, refuse=False) for r in _reached(interaction)]
        return not access.unrestricted() or any(reaches)

    def on_access(self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion) -> None:
        if interaction.name == "vread" and not self.visible(uow, interaction, version):
            raise forbidden(
                f"{version.resource_type}/{version.id} version {version.version_id} is outside"
                " what this token may access"
            )
        # (the filter tested here too: an unconfined write, most of them, makes no call)
        if isinstance(uow.row_filter, AccessFilter) and interaction.name in WRITES:
            self.check_result(uow, interaction, version)

    def check_result(
        self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion
    ) -> None:
        access = uow.row_filter
        if not isinstance(access, AccessFilter):
            return
        uow.flush()  # the new index rows decide whether the result is still allowed
        if not _matches(uow, access, version.resource_type, version.id):
            raise forbidden(
                f"the {version.resource_type} written is outside what this token may write"
            )

    def visible(self, uow: UnitOfWork, interaction: Interaction, version: StoredVersion) -> bool:
        """An older version returned by history or vread: judged on its own content. A
        "read" asked by the door of a resource another interaction came upon (the match of a
        conditional create): may this grant read it, whatever the interaction's permission?"""
        if interaction.name == "read":
            return self._readable(uow, version)
        access = uow.row_filter
        if not isinstance(access, AccessFilter) or interaction.name not in VERSIONED:
            return True
        return version_visible(uow, access, version)

    def condition_filter(self, uow: UnitOfWork, interaction: Interaction) -> RowFilter | None:
        """A confined grant's row filter for a condition resolved before its entry runs, so a
        transaction's conditions find only what the grant reaches: without it, a 412 (no
        match) against a 403 (a match elsewhere) told a patient's app that another patient's
        resource meets a criterion. An unconfined grant, or one without the permission at
        all (its entry is refused when it runs), resolves as before."""
        grant = self._live_grant(uow)
        rtype = interaction.resource_type or ""
        access = AccessFilter(grant, PERMISSION[interaction.name], [rtype], uow.ctx.base_url)
        return access if access.rules(rtype) else None

    # ------------------------------------------------------------------ internals

    def _readable(self, uow: UnitOfWork, version: StoredVersion) -> bool:
        grant = self._live_grant(uow)
        rtype = version.resource_type
        read = AccessFilter(grant, "r", [rtype], uow.ctx.base_url)
        rules = read.rules(rtype)
        if rules is None:
            return True
        return rules != [] and _matches(uow, read, rtype, version.id)

    def _live_grant(self, uow: UnitOfWork) -> Grant:
        grant = uow.ctx.grant
        if grant is None:
            raise token_required()
        if grant.token_id is not None and not uow.notes.get(LIVE_NOTE):
            if not self.tokens.is_live(uow.conn, grant.token_id):
                raise unauthorized("the access token was revoked or has expired")
            uow.notes[LIVE_NOTE] = True
        return grant

    @staticmethod
    def _types(interaction: Interaction) -> list[str]:
        if interaction.resource_type:
            return [interaction.resource_type]
        return list(interaction.types) or sorted(known_resource_types())

    @staticmethod
    def _is_own_user_resource(grant: Grant, interaction: Interaction) -> bool:
        """The fhirUser is readable with a token granted the `fhirUser` scope (SMART: the
        scope that asks for the user's FHIR resource); `openid` alone gives only an
        id_token without the claim, so no reach to the resource either."""
        if interaction.name not in ("read", "vread") or grant.fhir_user is None:
            return False
        if "fhirUser" not in grant.scopes.others:
            return False
        return grant.fhir_user == f"{interaction.resource_type}/{interaction.id}"

    def _check_existing(
        self, uow: UnitOfWork, access: AccessFilter, interaction: Interaction
    ) -> None:
        """A resource that exists but lies outside the filter is refused (one query)."""
        rtype, rid = interaction.resource_type or "", interaction.id or ""
        outside = uow.conn.execute(
            select(resource.c.id).where(
                resource.c.resource_type == rtype,
                resource.c.id == rid,
                not_(access.sql(rtype, resource.c.id)),
            )
        ).first()
        if outside is not None:
            current = get_current(uow, rtype, rid) if self.witness else None
            if self.witness and current is not None:
                self.witness(uow, interaction, current)
            raise forbidden(f"{rtype}/{rid} is outside what this token may access")


def _matches(uow: UnitOfWork, access: AccessFilter, rtype: str, rid: str) -> bool:
    query = select(resource.c.id).where(
        resource.c.resource_type == rtype,
        resource.c.id == rid,
        access.sql(rtype, resource.c.id),
    )
    return uow.conn.execute(query).first() is not None


def _check_named_types(access: AccessFilter, interaction: Interaction) -> None:
    """A system search's `_type` names its types: one the grant may not search is refused,
    never silently left out (the client would believe it had seen everything)."""
    named = [t for t in interaction.types if access.rules(t) == []]
    if interaction.resource_type is None and named and interaction.types_named:
        raise forbidden(f"_type: {_refusal(access.permission, ', '.join(named))}", "_type")


def _refusal(permission: str, what: str) -> str:
    return f"the token's scopes do not allow {PERMISSION_NAMES[permission]} on {what}"


def _reached(interaction: Interaction) -> list[Reached]:
    """The other types a search (or a conditional write's criteria) reaches."""
    params = interaction.search
    if params is None and interaction.query and interaction.resource_type:
        keys = [key for key, _ in parse_qsl(interaction.query, keep_blank_values=True)]
        if not any("." in key or key.startswith("_has:") for key in keys):
            return []  # the usual conditional write (an identifier): nothing to parse
        try:
            params = SearchParams.parse_query(interaction.query, interaction.resource_type)
        except FhirError:
            return []  # the interaction itself refuses the same criteria, with this error
    return reached(params) if params is not None else []


def _check_reached(access: AccessFilter, reach: Reached, *, refuse: bool = True) -> bool:
    """Refuses a parameter none of whose types the grant allows (an out-of-scope type is
    never silently dropped from what the client named); True when the types it reaches need
    the row filter (some of their rows, or some of the alternative types, are not allowed)."""
    sibling = access.for_permission(reach.permission)
    rules = [sibling.rules(t) for t in reach.types]
    if refuse and reach.types and all(r == [] for r in rules):
        what = ", ".join(reach.types)
        raise forbidden(
            f"{reach.parameter}: {_refusal(reach.permission, what)}", expression=reach.parameter
        )
    return not reach.types or any(r is not None for r in rules)
