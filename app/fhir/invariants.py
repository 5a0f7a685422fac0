"""Invariants of the R4 base types that need the elements' types (validation's fourth check,
after app.fhir.core_rules, which calls this module only when a resource may break one):

- dom-2: a contained resource SHALL NOT contain nested resources;
- dom-3: a contained resource SHALL be referred to from elsewhere in the resource (a
  Reference, canonical, uri or url `#id`) or SHALL refer to the containing resource (`#`);
- dom-4 / dom-5: a contained resource SHALL NOT have meta.versionId, meta.lastUpdated or a
  security label;
- ref-1: a local reference (`#id`) SHALL resolve to a contained resource of the root resource.
  R4's expression refuses `#` alone; the spec's text (references.html, dom-3) has a contained
  resource refer to its container so, and later releases fix the expression: taken as such;
- cpt-2: a ContactPoint with a value SHALL have a system.

"The resource" of dom-3 and "the root resource" of ref-1 are the nearest resource that is not
contained: each resource in a Bundle entry or a Parameters parameter is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.errors import Issue
from app.fhir.element_tables import (
    KIND_OBJECT,
    KIND_PARTNER,
    KIND_RESOURCE,
    Field,
    Walker,
    kind_tables,
)

# Element types whose `#id` value refers to a contained resource (dom-3, with Reference).
LOCAL_LINK_TYPES = frozenset({"canonical", "uri", "url"})
# The elements of ContactPoint, for core_rules' cheap look for cpt-2 candidates.
CONTACT_POINT_KEYS = frozenset(
    {"id", "extension", "system", "_system", "value", "_value", "use", "_use"}
    | {"rank", "_rank", "period"}
)


def may_break_cpt_2(obj: dict[str, Any]) -> bool:
    """Could `obj` be a ContactPoint with a value and no system? (Untyped: an Identifier
    without a system looks the same; the typed walk tells them apart.)"""
    return (
        ("value" in obj or "_value" in obj)
        and "system" not in obj
        and "_system" not in obj
        and obj.keys() <= CONTACT_POINT_KEYS
    )


def invariant_issues(resource: dict[str, Any]) -> list[Issue]:
    walker = _InvariantWalker()
    walker.run(resource)
    return walker.out


@dataclass
class _Contained:
    path: str
    id: Any
    refers_to_container: bool = False


@dataclass
class _Scope:
    """A resource that is not contained, with its contained resources."""

    contained: list[_Contained] = field(default_factory=list)
    links: set[str] = field(default_factory=set)  # every `#...` Reference/canonical/uri/url
    # (target without '#', path, inside a contained resource) of every local Reference
    references: list[tuple[str, str, bool]] = field(default_factory=list)


class _InvariantWalker(Walker):
    __slots__ = ("inside", "out", "scope")

    def __init__(self) -> None:
        super().__init__(kind_tables())
        self.out: list[Issue] = []
        self.scope: _Scope | None = None
        self.inside: _Contained | None = None

    def resource(self, obj: dict[str, Any], path: str | None, depth: int) -> None:
        if self.scope is not None and path is not None and _is_contained(path):
            outer = self.inside
            self.inside = _Contained(path, obj.get("id"))
            self.scope.contained.append(self.inside)
            self._check_contained(obj, path)
            super().resource(obj, path, depth)
            self.inside = outer
            return
        saved = self.scope, self.inside
        self.scope, self.inside = _Scope(), None
        super().resource(obj, path, depth)
        self._finish(self.scope)
        self.scope, self.inside = saved

    def visit(self, value: Any, field: Field, path: str, depth: int) -> None:
        if isinstance(value, str):
            if value.startswith("#") and field.type_code in LOCAL_LINK_TYPES:
                self._link(value)
            return
        if not isinstance(value, dict):
            return
        if field.kind == KIND_RESOURCE:
            self.resource(value, path, depth)
            return
        if field.type_code == "Reference":
            reference = value.get("reference")
            if isinstance(reference, str) and reference.startswith("#") and self.scope:
                self._link(reference)
                inside = self.inside is not None
                self.scope.references.append((reference[1:], f"{path}.reference", inside))
        elif field.type_code == "ContactPoint" and may_break_cpt_2(value):
            self._issue(path, "a ContactPoint with a value must have a system (cpt-2)")
        if field.kind in (KIND_OBJECT, KIND_PARTNER) and field.children:
            self.walk(value, field.children, path, depth)

    def _link(self, value: str) -> None:
        if self.scope is not None:
            self.scope.links.add(value)
        if value == "#" and self.inside is not None:
            self.inside.refers_to_container = True

    def _check_contained(self, obj: dict[str, Any], path: str) -> None:
        if "contained" in obj:
            message = "a contained resource must not contain resources (dom-2)"
            self._issue(f"{path}.contained", message)
        meta = obj.get("meta")
        if not isinstance(meta, dict):
            return
        for key in ("versionId", "lastUpdated"):
            if key in meta:
                message = f"a contained resource must not have meta.{key} (dom-4)"
                self._issue(f"{path}.meta.{key}", message)
        if "security" in meta:
            message = "a contained resource must not have a security label (dom-5)"
            self._issue(f"{path}.meta.security", message)

    def _finish(self, scope: _Scope) -> None:
        ids = {c.id for c in scope.contained if isinstance(c.id, str)}
        for target, path, inside in scope.references:
            if target in ids or (target == "" and inside):
                continue
            message = f"the local reference '#{target}' names no contained resource (ref-1)"
            self._issue(path, message)
        for contained in scope.contained:
            if not isinstance(contained.id, str) or contained.refers_to_container:
                continue
            if f"#{contained.id}" not in scope.links:
                message = (
                    f"contained resource '{contained.id}' is not referred to from elsewhere "
                    "in the resource, and does not refer to it (dom-3)"
                )
                self._issue(contained.path, message)

    def _issue(self, path: str, message: str) -> None:
        self.out.append(Issue("error", "invariant", f"{path}: {message}", (path,)))


def _is_contained(path: str) -> bool:
    return path.rpartition(".")[2].startswith("contained[")
