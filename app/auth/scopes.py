"""SMART scopes, v1 (`patient/Observation.read`, `user/*.write`, `system/*.*`) and v2
(`patient/Observation.rs`, `user/*.cruds`, granular `patient/Observation.rs?category=...`).

A v1 scope is read as its v2 equivalent: `read` = `rs`, `write` = `cud`, `*` = `cruds`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from app.auth.errors import invalid_scope
from app.errors import FhirError

CONTEXTS = ("patient", "user", "system")
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
PERMISSION_ORDER = "cruds"
# Resource types a wildcard never reaches: only a scope naming them does (the audit trail).
EXPLICIT_ONLY_TYPES = frozenset({"AuditEvent"})
_RESOURCE_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[a-z*]+)"
    r"(?:\?(?P<query>.+))?$"
)
# Scopes that are not about resources; requested ones outside this list are simply not granted.
KNOWN_SCOPES = frozenset({
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "offline_access", "online_access",
})  # fmt: skip


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a type, or "*"
    permissions: frozenset[str]  # letters of "cruds"
    query: tuple[tuple[str, str], ...]  # granular restriction (v2), empty for none
    text: str
    v1: bool

    def covers_type(self, rtype: str) -> bool:
        if self.resource_type == "*":
            return rtype not in EXPLICIT_ONLY_TYPES
        return self.resource_type == rtype

    def covers(self, other: ResourceScope) -> bool:
        """Would granting `other` give nothing beyond this scope?"""
        if other.context != self.context or not other.permissions <= self.permissions:
            return False
        if self.resource_type != "*" and other.resource_type != self.resource_type:
            return False
        if self.resource_type == "*" and other.resource_type in EXPLICIT_ONLY_TYPES:
            return False
        return not self.query or self.query == other.query


@dataclass(frozen=True)
class Scopes:
    resources: tuple[ResourceScope, ...]
    others: frozenset[str]  # openid, fhirUser, launch/patient, offline_access, ...

    def __contains__(self, name: str) -> bool:
        return name in self.others

    @property
    def text(self) -> str:
        return " ".join([*sorted(self.others), *(s.text for s in self.resources)])

    def matching(self, rtype: str, permission: str) -> list[ResourceScope]:
        """The scopes that allow `permission` (one of c r u d s) on `rtype`."""
        return [s for s in self.resources if permission in s.permissions and s.covers_type(rtype)]

    def contexts(self) -> set[str]:
        return {s.context for s in self.resources}


def parse_scope(text: str) -> ResourceScope | None:
    """A resource scope, None for any other scope; malformed resource scopes are refused."""
    if not text.startswith(("patient/", "user/", "system/")):
        return None
    match = _RESOURCE_SCOPE.match(text)
    if not match:
        raise invalid_scope(f"malformed scope {text!r}")
    perm = match["perm"]
    v1 = perm in V1_PERMISSIONS
    letters = V1_PERMISSIONS.get(perm, perm)
    if not _is_ordered_subset(letters):
        raise invalid_scope(f"malformed scope {text!r}: permissions are letters of 'cruds'")
    query = tuple(parse_qsl(match["query"], keep_blank_values=True)) if match["query"] else ()
    if query and v1:
        raise invalid_scope(f"malformed scope {text!r}: only v2 scopes take a restriction")
    if query and match["type"] != "*":
        _check_restriction(text, match["type"], query)
    return ResourceScope(match["context"], match["type"], frozenset(letters), query, text, v1)


def parse_scopes(text: str) -> Scopes:
    resources: list[ResourceScope] = []
    others: set[str] = set()
    for word in text.split():
        parsed = parse_scope(word)
        if parsed is not None:
            resources.append(parsed)
        elif word in KNOWN_SCOPES or word.startswith("launch"):
            others.add(word)
    return Scopes(tuple(resources), frozenset(others))


def narrow(requested: str, allowed: str) -> tuple[Scopes, list[str]]:
    """What may be granted of `requested` given a client's registration, and what may not."""
    registered = parse_scopes(allowed)
    granted: list[ResourceScope] = []
    refused: list[str] = []
    for word in requested.split():
        scope = parse_scope(word)
        if scope is None:
            if word in registered.others:
                continue
            refused.append(word)
        elif any(r.covers(scope) for r in registered.resources):
            granted.append(scope)
        else:
            refused.append(word)
    others = frozenset(w for w in requested.split() if w in registered.others)
    return Scopes(tuple(granted), others), refused


def _check_restriction(text: str, rtype: str, query: tuple[tuple[str, str], ...]) -> None:
    """A restriction is search criteria on its type. One that is not (an unknown parameter,
    _sort, _count, an unsupported modifier) is refused here, when the scope is registered or
    asked for, rather than granted and then failing every request with a 400 about a
    parameter the client never sent."""
    # Imported here: the search package imports the request context, which holds a grant of
    # these scopes.
    from app.fhir.search.params import parse_criterion

    for key, value in query:
        try:
            parse_criterion(rtype, key, value)
        except FhirError as exc:
            raise invalid_scope(f"scope {text!r}: {exc.message}") from None


def _is_ordered_subset(letters: str) -> bool:
    position = -1
    for letter in letters:
        index = PERMISSION_ORDER.find(letter)
        if index <= position:
            return False
        position = index
    return bool(letters)
