"""The element table that drives both directions (fhir_profiles/r4_core/elements.json: per
type, its elements in XML order, with cardinality and type), the hardened XML parser, and the
small helpers reading.py and writing.py share."""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

import fhir_profiles
from app.fhir.jsonio import MAX_DEPTH

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Profiles of Quantity that some tables name as a type; they share Quantity's elements.
_TYPE_ALIASES = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}
_RESOURCE_CODES = frozenset({"Resource", "DomainResource"})
PRIMITIVE_ATTRIBUTES = frozenset({"id", "value"})
NO_ATTRIBUTES: frozenset[str] = frozenset()
XML_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})

# The FHIR R4 regexes of the number types (a JSON number is checked by the JSON grammar, an
# XML attribute only by these: "01.5" would otherwise reach the stored JSON verbatim).
NUMBER_RES = {
    "decimal": re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"),
    "integer": re.compile(r"-?([0]|([1-9][0-9]*))"),
    "positiveInt": re.compile(r"\+?[1-9][0-9]*"),
    "unsignedInt": re.compile(r"[0]|([1-9][0-9]*)"),
}
_DECLARATION_RE = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")
NAMED_ENTITY_RE = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")


class FhirXmlError(ValueError):
    """The document cannot be converted; ``path`` is the FHIR element path of the problem."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


# --------------------------------------------------------------------------- the element table


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    is_array: bool
    type_code: str
    kind: str  # "primitive" | "complex" | "resource" | "xhtml"
    json_kind: str  # primitives: "boolean" | "number" | "string"; "" otherwise
    attribute: bool  # an XML attribute (element id, Extension.url) rather than a child


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    is_resource: bool
    fields: tuple[Field, ...]  # table (= XML) order
    by_name: dict[str, Field]
    positions: dict[str, int]  # a field's place in the table (= XML) order
    attribute_names: frozenset[str]  # fields carried as XML attributes
    json_keys: frozenset[str]  # every key a JSON object of this type may carry


class _Table:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.resource_types: frozenset[str] = frozenset(raw["resourceTypes"])
        self.primitives: dict[str, str] = dict(raw["primitiveTypes"])
        self._rows: dict[str, list[list[Any]]] = raw["types"]
        self._infos: dict[str, TypeInfo] = {}
        self._lock = threading.Lock()

    def info(self, type_code: str, path: str) -> TypeInfo:
        info = self._infos.get(type_code)
        if info is None:
            with self._lock:
                info = self._infos.get(type_code) or self._build(type_code, path)
                self._infos[type_code] = info
        return info

    def _build(self, type_code: str, path: str) -> TypeInfo:
        rows = self._rows.get(type_code) or self._rows.get(_TYPE_ALIASES.get(type_code, ""))
        if rows is None:
            raise FhirXmlError(f"no element definitions for type {type_code!r}", path)
        is_resource = type_code in self.resource_types
        fields = tuple(self._field(type_code, is_resource, row) for row in rows)
        keys = {f.name for f in fields}
        keys.update(f"_{f.name}" for f in fields if f.kind == "primitive" and not f.attribute)
        if is_resource:
            keys.add("resourceType")
        return TypeInfo(
            name=type_code,
            is_resource=is_resource,
            fields=fields,
            by_name={f.name: f for f in fields},
            positions={f.name: i for i, f in enumerate(fields)},
            attribute_names=frozenset(f.name for f in fields if f.attribute),
            json_keys=frozenset(keys),
        )

    def _field(self, owner: str, owner_is_resource: bool, row: list[Any]) -> Field:
        name, is_array, code = row[0], bool(row[1]), row[2]
        if code == "xhtml":  # checked first: xhtml is also listed as a primitive
            kind = "xhtml"
        elif code in _RESOURCE_CODES:
            kind = "resource"
        elif code in self.primitives:
            kind = "primitive"
        else:
            kind = "complex"
        # Resource.id is an element; every other id, and Extension.url, are attributes.
        attribute = (name == "id" and not owner_is_resource) or (
            owner == "Extension" and name == "url"
        )
        json_kind = self.primitives.get(code, "") if kind == "primitive" else ""
        return Field(name, is_array, code, kind, json_kind, attribute)


def _elements_path() -> Path:
    # __path__ works whether fhir_profiles is a regular or a namespace package.
    return Path(next(iter(fhir_profiles.__path__))) / "r4_core" / "elements.json"


@functools.cache
def element_table() -> _Table:
    with _elements_path().open("rb") as fh:
        return _Table(json.load(fh))


def type_info(type_code: str, path: str) -> TypeInfo:
    return element_table().info(type_code, path)


# --------------------------------------------------------------------------- XML parsing

_local = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parser objects must not be shared between threads; keep one per thread.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            remove_blank_text=False,  # whitespace inside XHTML narrative is content
        )
        _local.parser = parser
    return parser


def parse_xml(data: bytes | str, what: str, path: str = "") -> etree._Element:
    if isinstance(data, str):
        # lxml refuses str input that declares an encoding; the declaration says nothing new.
        data = _DECLARATION_RE.sub("", data, count=1)
    elif not isinstance(data, bytes):
        data = bytes(data)
    # A DTD is how XXE and entity-expansion attacks get in, and FHIR never needs one: refuse
    # it before parsing when visible, and after parsing for encodings that hide it (UTF-16).
    if (isinstance(data, str) and "<!DOCTYPE" in data) or (
        isinstance(data, bytes) and b"<!DOCTYPE" in data
    ):
        raise FhirXmlError(f"{what} must not contain a DOCTYPE or entity declarations", path)
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise FhirXmlError(f"{what} is not well-formed XML: {exc}", path) from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise FhirXmlError(f"{what} must not contain a DOCTYPE or entity declarations", path)
    if _depth(root) > MAX_DEPTH:  # the conversions recurse once per level
        raise FhirXmlError(f"{what}: elements nest more than {MAX_DEPTH} levels deep", path)
    return root


def _depth(root: etree._Element) -> int:
    deepest = depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        deepest = max(deepest, depth)
    return deepest


def split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def child_path(path: str, field: Field, index: int) -> str:
    return f"{path}.{field.name}[{index}]" if field.is_array else f"{path}.{field.name}"


def _check_text(text: str | None, path: str) -> None:
    if text and text.strip():
        raise FhirXmlError(f"unexpected text {text.strip()[:40]!r}", path)


def child_elements(el: etree._Element, path: str) -> Iterator[etree._Element]:
    """Child elements, refusing stray text and anything that is not an element."""
    _check_text(el.text, path)
    for child in el:
        _check_text(child.tail, path)
        if not isinstance(child.tag, str):  # e.g. an unresolved entity reference
            raise FhirXmlError("unexpected XML node", path)
        yield child


def attributes_of(el: etree._Element, allowed: frozenset[str], path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in el.attrib.items():
        if key.startswith("{"):  # xsi:schemaLocation, xml:lang, ... carry no FHIR content
            continue
        if key not in allowed:
            raise FhirXmlError(f"unknown attribute {key!r}", path)
        out[key] = value
    return out


def clean_xhtml(src: etree._Element, path: str) -> etree._Element:
    """Copy an XHTML tree so it declares only the default XHTML namespace.

    Serializing the original would drag along namespace declarations inherited from the
    surrounding FHIR document (or an ``h:`` prefix), making the JSON string unstable.
    """
    root = etree.Element(src.tag, nsmap={None: XHTML_NS})
    _copy_xhtml(src, root, path)
    return root


def _copy_xhtml(src: etree._Element, dst: etree._Element, path: str) -> None:
    for key, value in src.attrib.items():
        dst.set(key, value)
    dst.text = src.text
    for child in src:
        if not isinstance(child.tag, str):
            raise FhirXmlError("unexpected XML node in narrative", path)
        copy = etree.SubElement(dst, child.tag)
        _copy_xhtml(child, copy, path)
        copy.tail = child.tail
