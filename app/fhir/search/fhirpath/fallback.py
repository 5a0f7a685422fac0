"""fhirpathpy for the expressions the native compiler does not handle (compiler.py): compiled
once per (expression, resource type), results unwrapped to the JSON nodes, with a
``resolve()`` that knows the referenced type (model.reference_type)."""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable
from typing import Any

from app.fhir.search.fhirpath.compiler import Items
from app.fhir.search.fhirpath.model import (
    is_a,
    is_primitive,
    is_resource_type,
    r4_model,
    reference_type,
)

_ROOT: contextvars.ContextVar[Any] = contextvars.ContextVar("fhirpath_root", default=None)
# fhirpathpy keeps evaluation state in module globals (TypeInfo.model, constants).
_FHIRPATHPY_LOCK = threading.Lock()
_ABSTRACT_HEAD = re.compile(r"(^|[|(]\s*)(Resource|DomainResource)\.")
_AS_OPERATOR = re.compile(r"\s+as\s+([A-Za-z][A-Za-z.]*)")


def _resolve_stub(inputs: Items) -> Items:
    """``resolve()`` for fhirpathpy: the contained resource, or a typed empty stand-in."""
    from fhirpathpy.engine.nodes import ResourceNode

    root = _ROOT.get()
    out: Items = []
    for ref in inputs:
        if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("#"):
            for contained in (root or {}).get("contained") or ():
                if isinstance(contained, dict) and contained.get("id") == ref["reference"][1:]:
                    out.append(ResourceNode.create_node(contained))
                    break
            continue
        rtype = reference_type(ref, root)
        if rtype:
            out.append(ResourceNode.create_node({"resourceType": rtype}))
    return out


class Fallback:
    """fhirpathpy, compiled once per (expression, resource type), results unwrapped."""

    def __init__(self, expression: str, base: str | None) -> None:
        self.expression = expression
        self.base = base
        self._compiled: dict[tuple[str, bool], Callable[..., Items]] = {}

    def __call__(self, node: Any, resource: Any = None) -> Items:
        return [data for data, _ in self.typed(node, resource)]

    def typed(self, node: Any, resource: Any = None) -> list[tuple[Any, str]]:
        """(value, type path) of each result, dropping value-less primitive nodes."""
        from fhirpathpy.engine.nodes import ResourceNode

        root = node if resource is None else resource
        rtype = root.get("resourceType") if isinstance(root, dict) else None
        rtype_key = rtype if isinstance(rtype, str) else ""
        fn = self._function(rtype_key)
        # A resource goes in as is: fhirpathpy's `Patient.` filter reads raw dicts only.
        typed = self.base and not (isinstance(node, dict) and "resourceType" in node)
        start = ResourceNode.create_node(node, self.base) if typed else node
        context = {"resource": root, "rootResource": root}
        token = _ROOT.set(root)
        try:
            with _FHIRPATHPY_LOCK:
                try:
                    raw = fn(start, context)
                except ValueError as exc:
                    if "Expected singleton on left side of 'as'" not in str(exc):
                        raise
                    raw = self._function(rtype_key, as_filters=True)(start, context)
        finally:
            _ROOT.reset(token)
        out: list[tuple[Any, str]] = []
        for item in raw:
            if not isinstance(item, ResourceNode):
                out.append((item, ""))
            elif item.data is not None and not (
                isinstance(item.data, dict) and item.path and is_primitive(item.path)
            ):
                out.append((item.data, item.path or ""))
        return out

    def _function(self, resource_type: str, as_filters: bool = False) -> Callable[..., Items]:
        """fhirpathpy's compiled expression, with ``Resource.`` made concrete and, when
        ``as_filters``, ``as T`` turned into ``ofType(T)`` (fhirpathpy raises on several)."""
        fn = self._compiled.get((resource_type, as_filters))
        if fn is None:
            import fhirpathpy

            text = self.expression
            if as_filters:
                text = _AS_OPERATOR.sub(r".ofType(\1)", text).replace(".as(", ".ofType(")
            if resource_type and is_resource_type(resource_type):
                text = _ABSTRACT_HEAD.sub(
                    lambda m: (
                        m.group(1)
                        + (resource_type if is_a(resource_type, m.group(2)) else m.group(2))
                        + "."
                    ),
                    text,
                )
            options = {
                "returnRawData": True,
                "userInvocationTable": {"resolve": {"fn": _resolve_stub}},
            }
            fn = fhirpathpy.compile(text, model=r4_model(), options=options)
            self._compiled[(resource_type, as_filters)] = fn
        return fn
