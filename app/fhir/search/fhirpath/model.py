"""What the FHIRPath compiler knows of FHIR R4's types: fhirpathpy's own model, read statically
(the element types at each step, choice elements, the type hierarchy), and the type a
Reference points to, as ``resolve() is T`` needs it."""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple


def reference_type(reference: Any, root: Any = None) -> str | None:
    """The resource type a Reference points to, as ``resolve() is T`` needs it.

    ``Patient/1``, ``Patient/1/_history/2``, ``http://x/fhir/Patient/1``: the segment before
    the id; ``#id``: the contained resource's type; otherwise ``Reference.type``.
    """
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str):
        found = _contained_type(ref, root) if ref.startswith("#") else _url_type(ref)
        if found:
            return found
    declared = reference.get("type")
    if isinstance(declared, str) and declared:
        return declared.rsplit("/", 1)[-1]
    return None


_HISTORY = re.compile(r"/_history/[^/]*$")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]+")


def _url_type(ref: str) -> str | None:
    parts = _HISTORY.sub("", ref.split("?", 1)[0]).split("/")
    if len(parts) >= 2 and _TYPE_NAME.fullmatch(parts[-2]) and parts[-1]:
        return parts[-2]
    return None


def _contained_type(ref: str, root: Any) -> str | None:
    if not isinstance(root, dict):
        return None
    for contained in root.get("contained") or ():
        if isinstance(contained, dict) and contained.get("id") == ref[1:]:
            rtype = contained.get("resourceType")
            return rtype if isinstance(rtype, str) else None
    return None


@functools.cache
def r4_model() -> dict[str, dict[str, Any]]:
    from fhirpathpy.models import models

    return models["r4"]


class Member(NamedTuple):
    """How ``<parent type>.<key>`` is read: one key, or the variants of a choice."""

    key: str
    choices: tuple[tuple[str, str], ...]  # (json key, type path) per choice type; () if none
    type_path: str  # of a non-choice element


@functools.cache
def member_of(parent: str, key: str) -> Member:
    """Resolve an element exactly as fhirpathpy's member invocation does."""
    model = r4_model()
    child = f"{parent}.{key}"
    child = model["pathsDefinedElsewhere"].get(child, child)
    choice = model["choiceTypePaths"].get(child)
    if choice:
        variants = tuple((key + t, model["path2Type"].get(child + t, child + t)) for t in choice)
        return Member(key, variants, "")
    if key == "extension":
        return Member(key, (), "Extension")
    return Member(key, (), model["path2Type"].get(child, child))


@functools.cache
def choice_keys() -> dict[str, tuple[str, ...]]:
    """The element names that are a choice in some R4 type (``value``, ``onset``,
    ``DeviceRequest.code`` ...) -> every JSON key they may take (``valueQuantity`` ...)."""
    keys: dict[str, dict[str, None]] = {}
    for path, variants in r4_model()["choiceTypePaths"].items():
        name = path.rsplit(".", 1)[-1]
        keys.setdefault(name, {}).update(dict.fromkeys(name + t for t in variants))
    return {name: tuple(found) for name, found in keys.items()}


def _type_name(type_path: str) -> tuple[str, str]:
    """(namespace, name) of a node typed ``type_path`` (fhirpathpy's get_type_info)."""
    if type_path.startswith("System."):
        return "System", type_path[7:]
    if "." not in type_path:
        return "FHIR", type_path
    return "FHIR", "BackboneElement"


@functools.lru_cache(maxsize=4096)  # bounded: reference types come from client data
def is_a(type_path: str, wanted: str) -> bool:
    """``node is wanted`` for a node typed ``type_path`` (fhirpathpy's TypeInfo.is_)."""
    namespace, name = _type_name(type_path)
    want_ns, _, want_name = wanted.rpartition(".")
    if want_ns and want_ns != namespace:
        return False
    if namespace == "System":
        return name == want_name
    model = r4_model()
    current: str | None = name
    while current:
        if current == want_name:
            return True
        current = model["type2Parent"].get(current) or model["path2Type"].get(current)
    return False


def is_primitive(type_path: str) -> bool:
    return type_path[:1].islower() or type_path.startswith("System.")


def is_resource_type(name: str) -> bool:
    return is_a(name, "Resource")
