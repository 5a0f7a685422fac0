"""Required elements (min 1) of the R4 types that have no R4B model (validation.py: the
types R4B dropped or redesigned), which no model checks: from required.json, generated from
the official definitions (fhir_profiles/generate_core_tables.py), for the resource, its
backbone elements and the datatypes inside it.

A resource that has a model is left to it, with whatever it nests (the validator hands
nested model-less resources in here itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.errors import Issue
from app.fhir.element_tables import (
    KIND_OBJECT,
    KIND_RESOURCE,
    Field,
    Walker,
    kind_tables,
    required_elements,
)


def missing_required(
    resource: dict[str, Any], path: str, has_model: Callable[[str], bool]
) -> list[Issue]:
    """An issue for every required element missing in `resource` (at `path`) and in what it
    nests, except inside resources that `has_model`."""
    walker = _RequiredWalker(has_model)
    walker.resource(resource, path, 0)
    return walker.out


class _RequiredWalker(Walker):
    __slots__ = ("has_model", "out", "required")

    def __init__(self, has_model: Callable[[str], bool]) -> None:
        super().__init__(kind_tables())
        self.has_model = has_model
        self.required = required_elements()
        self.out: list[Issue] = []

    def resource(self, obj: dict[str, Any], path: str | None, depth: int) -> None:
        rtype = obj.get("resourceType")
        if not isinstance(rtype, str) or self.has_model(rtype):
            return
        self._check(obj, rtype, path or rtype)
        super().resource(obj, path, depth)

    def visit(self, value: Any, field: Field, path: str, depth: int) -> None:
        if not isinstance(value, dict):
            return
        if field.kind == KIND_RESOURCE:
            self.resource(value, path, depth)
        elif field.kind == KIND_OBJECT:
            self._check(value, field.type_code, path)
            if field.children:
                self.walk(value, field.children, path, depth)

    def _check(self, obj: dict[str, Any], type_path: str, path: str) -> None:
        for name, names in self.required.get(type_path, ()):
            # A primitive given only by its "_name" partner (extensions: data absent) is there.
            if not any(n in obj or f"_{n}" in obj for n in names):
                where = f"{path}.{name}"
                self.out.append(
                    Issue("error", "required", f"{where}: a required element is missing", (where,))
                )
