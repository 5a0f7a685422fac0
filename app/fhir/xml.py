"""FHIR R4 XML <-> FHIR JSON, driven by the element table in fhir_profiles/r4_core/elements.json.

The two formats carry the same content (http://hl7.org/fhir/R4/xml.html, json.html); what
differs is only layout, so one table of "type -> ordered elements" is enough in both directions:

* every FHIR element is in the http://hl7.org/fhir namespace; primitives carry their value in a
  ``value`` attribute, and an element id (datatypes, backbones) and ``Extension.url`` are XML
  attributes, while ``Resource.id`` is a child element like any other;
* JSON splits a primitive's id/extensions into a ``_name`` twin (arrays aligned with nulls);
* a resource nested in another (contained, Bundle.entry.resource, ...) is wrapped in an element
  named after the field, holding an element named after its resourceType;
* ``Narrative.div`` is real XHTML in XML and a string in JSON.

XML input is parsed with a hardened parser: no DTD, no entity expansion, no network.
"""

from __future__ import annotations

import functools
import html.entities
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from lxml import etree

import fhir_profiles

try:
    from app.fhir.jsonio import DecimalLiteral
except ImportError:  # jsonio not there: a plain Decimal still keeps the digits
    DecimalLiteral = Decimal  # type: ignore[misc,assignment]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Profiles of Quantity that some tables name as a type; they share Quantity's elements.
_TYPE_ALIASES = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}
_RESOURCE_CODES = frozenset({"Resource", "DomainResource"})
_PRIMITIVE_ATTRIBUTES = frozenset({"id", "value"})
_NO_ATTRIBUTES: frozenset[str] = frozenset()
_XML_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})

_INTEGER_RE = re.compile(r"-?[0-9]+")
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_DECLARATION_RE = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")
_NAMED_ENTITY_RE = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")


class FhirXmlError(ValueError):
    """The document cannot be converted; ``path`` is the FHIR element path of the problem."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


# --------------------------------------------------------------------------- the element table


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    is_array: bool
    type_code: str
    kind: str  # "primitive" | "complex" | "resource" | "xhtml"
    json_kind: str  # primitives: "boolean" | "number" | "string"; "" otherwise
    attribute: bool  # an XML attribute (element id, Extension.url) rather than a child


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    name: str
    is_resource: bool
    fields: tuple[_Field, ...]  # table (= XML) order
    by_name: dict[str, _Field]
    attribute_names: frozenset[str]  # fields carried as XML attributes
    json_keys: frozenset[str]  # every key a JSON object of this type may carry


class _Table:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.resource_types: frozenset[str] = frozenset(raw["resourceTypes"])
        self.primitives: dict[str, str] = dict(raw["primitiveTypes"])
        self._rows: dict[str, list[list[Any]]] = raw["types"]
        self._infos: dict[str, _TypeInfo] = {}
        self._lock = threading.Lock()

    def info(self, type_code: str, path: str) -> _TypeInfo:
        info = self._infos.get(type_code)
        if info is None:
            with self._lock:
                info = self._infos.get(type_code) or self._build(type_code, path)
                self._infos[type_code] = info
        return info

    def _build(self, type_code: str, path: str) -> _TypeInfo:
        rows = self._rows.get(type_code) or self._rows.get(_TYPE_ALIASES.get(type_code, ""))
        if rows is None:
            raise FhirXmlError(f"no element definitions for type {type_code!r}", path)
        is_resource = type_code in self.resource_types
        fields = tuple(self._field(type_code, is_resource, row) for row in rows)
        keys = {f.name for f in fields}
        keys.update(f"_{f.name}" for f in fields if f.kind == "primitive" and not f.attribute)
        if is_resource:
            keys.add("resourceType")
        return _TypeInfo(
            name=type_code,
            is_resource=is_resource,
            fields=fields,
            by_name={f.name: f for f in fields},
            attribute_names=frozenset(f.name for f in fields if f.attribute),
            json_keys=frozenset(keys),
        )

    def _field(self, owner: str, owner_is_resource: bool, row: list[Any]) -> _Field:
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
        return _Field(name, is_array, code, kind, json_kind, attribute)


def _elements_path() -> Path:
    # __path__ works whether fhir_profiles is a regular or a namespace package.
    return Path(next(iter(fhir_profiles.__path__))) / "r4_core" / "elements.json"


@functools.cache
def _table() -> _Table:
    with _elements_path().open("rb") as fh:
        return _Table(json.load(fh))


def _info(type_code: str, path: str) -> _TypeInfo:
    return _table().info(type_code, path)


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


def _parse(data: bytes | str, what: str, path: str = "") -> etree._Element:
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
    return root


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _child_path(path: str, field: _Field, index: int) -> str:
    return f"{path}.{field.name}[{index}]" if field.is_array else f"{path}.{field.name}"


def _check_text(text: str | None, path: str) -> None:
    if text and text.strip():
        raise FhirXmlError(f"unexpected text {text.strip()[:40]!r}", path)


def _elements(el: etree._Element, path: str) -> Iterator[etree._Element]:
    """Child elements, refusing stray text and anything that is not an element."""
    _check_text(el.text, path)
    for child in el:
        _check_text(child.tail, path)
        if not isinstance(child.tag, str):  # e.g. an unresolved entity reference
            raise FhirXmlError("unexpected XML node", path)
        yield child


def _attributes(el: etree._Element, allowed: frozenset[str], path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in el.attrib.items():
        if key.startswith("{"):  # xsi:schemaLocation, xml:lang, ... carry no FHIR content
            continue
        if key not in allowed:
            raise FhirXmlError(f"unknown attribute {key!r}", path)
        out[key] = value
    return out


# --------------------------------------------------------------------------- XML -> JSON


def xml_to_json(data: bytes | str) -> dict[str, Any]:
    """Convert one FHIR XML resource into its FHIR JSON form."""
    root = _parse(data, "document")
    return _resource_from_xml(root, "")


def _resource_from_xml(el: etree._Element, path: str) -> dict[str, Any]:
    ns, rtype = _split(el.tag)
    where = path or rtype
    if ns != FHIR_NS:
        raise FhirXmlError(f"<{rtype}> is not in the FHIR namespace {FHIR_NS}", where)
    if rtype not in _table().resource_types:
        raise FhirXmlError(f"unknown resource type {rtype!r}", where)
    out: dict[str, Any] = {"resourceType": rtype}
    out.update(_complex_from_xml(el, _info(rtype, where), where))
    return out


def _complex_from_xml(el: etree._Element, info: _TypeInfo, path: str) -> dict[str, Any]:
    values = _attributes(el, info.attribute_names, path)
    groups = _group_children(el, info, path)
    out: dict[str, Any] = {}
    # Emit in table order whatever order the input used, so output is canonical.
    for field in info.fields:
        if field.attribute:
            if field.name in values:
                out[field.name] = values[field.name]
        elif field.name in groups:
            _field_from_xml(field, groups[field.name], path, out)
    return out


def _group_children(
    el: etree._Element, info: _TypeInfo, path: str
) -> dict[str, list[etree._Element]]:
    groups: dict[str, list[etree._Element]] = {}
    for child in _elements(el, path):
        ns, local = _split(child.tag)
        field = info.by_name.get(local)
        if field is None or field.attribute:
            raise FhirXmlError("unknown element", f"{path}.{local}")
        expected = XHTML_NS if field.kind == "xhtml" else FHIR_NS
        if ns != expected:
            raise FhirXmlError(f"element must be in namespace {expected}", f"{path}.{local}")
        group = groups.setdefault(local, [])
        if group and not field.is_array:
            raise FhirXmlError(
                "element occurs more than once but is not repeating", f"{path}.{local}"
            )
        group.append(child)
    return groups


def _field_from_xml(
    field: _Field, elems: list[etree._Element], path: str, out: dict[str, Any]
) -> None:
    if field.kind == "primitive":
        _primitive_from_xml(field, elems, path, out)
        return
    items = [_value_from_xml(field, e, _child_path(path, field, i)) for i, e in enumerate(elems)]
    out[field.name] = items if field.is_array else items[0]


def _value_from_xml(field: _Field, el: etree._Element, path: str) -> Any:
    if field.kind == "resource":
        return _unwrap_resource(el, path)
    if field.kind == "xhtml":
        return _div_to_string(el, path)
    return _complex_from_xml(el, _info(field.type_code, path), path)


def _unwrap_resource(wrapper: etree._Element, path: str) -> dict[str, Any]:
    _attributes(wrapper, _NO_ATTRIBUTES, path)
    inner = list(_elements(wrapper, path))
    if len(inner) != 1:
        raise FhirXmlError("must contain exactly one resource element", path)
    return _resource_from_xml(inner[0], path)


def _primitive_from_xml(
    field: _Field, elems: list[etree._Element], path: str, out: dict[str, Any]
) -> None:
    pairs = [
        _primitive_item_from_xml(field, e, _child_path(path, field, i)) for i, e in enumerate(elems)
    ]
    values = [value for value, _ in pairs]
    extras = [extra for _, extra in pairs]
    # JSON: the value and its _twin are each present only if they carry something; in
    # arrays, nulls keep the two aligned.
    if any(v is not None for v in values):
        out[field.name] = values if field.is_array else values[0]
    if any(x is not None for x in extras):
        out[f"_{field.name}"] = extras if field.is_array else extras[0]


def _primitive_item_from_xml(
    field: _Field, el: etree._Element, path: str
) -> tuple[Any, dict[str, Any] | None]:
    attrs = _attributes(el, _PRIMITIVE_ATTRIBUTES, path)
    extensions: list[dict[str, Any]] = []
    ext_info = _info("Extension", path)
    for child in _elements(el, path):
        ns, local = _split(child.tag)
        if (ns, local) != (FHIR_NS, "extension"):
            raise FhirXmlError("unknown element", f"{path}.{local}")
        child_path = f"{path}.extension[{len(extensions)}]"
        extensions.append(_complex_from_xml(child, ext_info, child_path))
    extra: dict[str, Any] = {}
    if "id" in attrs:
        extra["id"] = attrs["id"]
    if extensions:
        extra["extension"] = extensions
    raw = attrs.get("value")
    if raw is None and not extra:
        raise FhirXmlError("primitive element has no value, id or extension", path)
    value = None if raw is None else _parse_primitive(raw, field, path)
    return value, extra or None


def _parse_primitive(raw: str, field: _Field, path: str) -> Any:
    if field.json_kind == "boolean":
        if raw not in ("true", "false"):
            raise FhirXmlError(f"invalid boolean {raw!r}", path)
        return raw == "true"
    if field.json_kind == "number":
        if field.type_code == "decimal":
            if not _DECIMAL_RE.fullmatch(raw):
                raise FhirXmlError(f"invalid decimal {raw!r}", path)
            return DecimalLiteral(raw)  # keeps "1.50" as written
        if not _INTEGER_RE.fullmatch(raw):
            raise FhirXmlError(f"invalid {field.type_code} {raw!r}", path)
        return int(raw)
    return raw


def _div_to_string(el: etree._Element, path: str) -> str:
    if _split(el.tag) != (XHTML_NS, "div"):
        raise FhirXmlError("narrative must be an XHTML <div>", path)
    return etree.tostring(_clean_xhtml(el, path), encoding="unicode", with_tail=False)


def _clean_xhtml(src: etree._Element, path: str) -> etree._Element:
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


# --------------------------------------------------------------------------- JSON -> XML


def json_to_xml(resource: dict[str, Any], *, pretty: bool = False) -> bytes:
    """Convert one FHIR JSON resource into UTF-8 FHIR XML, elements in canonical order."""
    if not isinstance(resource, dict):
        raise FhirXmlError("a resource must be a JSON object")
    root = _resource_to_xml(resource, None, "")
    if pretty:
        _indent(root, 0)
    return _XML_DECLARATION + etree.tostring(root, encoding="UTF-8")


def _q(name: str) -> str:
    return f"{{{FHIR_NS}}}{name}"


def _resource_to_xml(obj: Any, parent: etree._Element | None, path: str) -> etree._Element:
    if not isinstance(obj, dict):
        raise FhirXmlError("a resource must be a JSON object", path)
    rtype = obj.get("resourceType")
    if not isinstance(rtype, str) or rtype not in _table().resource_types:
        raise FhirXmlError(f"unknown resourceType {rtype!r}", path or "resourceType")
    where = path or rtype
    if parent is None:
        el = etree.Element(_q(rtype), nsmap={None: FHIR_NS})
    else:
        el = etree.SubElement(parent, _q(rtype))
    _complex_to_xml(obj, el, _info(rtype, where), where)
    return el


def _complex_to_xml(obj: Any, el: etree._Element, info: _TypeInfo, path: str) -> None:
    if not isinstance(obj, dict):
        raise FhirXmlError(f"expected a JSON object for {info.name}", path)
    for key in obj:
        if key not in info.json_keys:
            # Input was validated before; an unplaceable key means a bug upstream.
            raise FhirXmlError("unknown element", f"{path}.{key}")
    for field in info.fields:
        if field.kind == "primitive":
            _primitive_to_xml(obj, field, el, path)
            continue
        value = obj.get(field.name)
        if value is None:
            continue
        for index, item in enumerate(_as_items(value, field, path)):
            _value_to_xml(field, item, el, _child_path(path, field, index))


def _as_items(value: Any, field: _Field, path: str) -> list[Any]:
    if field.is_array:
        if not isinstance(value, list):
            raise FhirXmlError("expected a JSON array", f"{path}.{field.name}")
        return value
    if isinstance(value, list):
        raise FhirXmlError("expected a single value, not an array", f"{path}.{field.name}")
    return [value]


def _value_to_xml(field: _Field, item: Any, parent: etree._Element, path: str) -> None:
    if field.kind == "resource":
        wrapper = etree.SubElement(parent, _q(field.name))
        _resource_to_xml(item, wrapper, path)
    elif field.kind == "xhtml":
        parent.append(_div_from_string(item, path))
    else:
        sub = etree.SubElement(parent, _q(field.name))
        _complex_to_xml(item, sub, _info(field.type_code, path), path)


def _primitive_to_xml(obj: dict[str, Any], field: _Field, el: etree._Element, path: str) -> None:
    value = obj.get(field.name)
    if field.attribute:
        if value is not None:
            _set(el, field.name, _format_primitive(value, field, f"{path}.{field.name}"), path)
        return
    extra = obj.get(f"_{field.name}")
    if value is None and extra is None:
        return
    if not field.is_array:
        if isinstance(value, list) or isinstance(extra, list):
            raise FhirXmlError("expected a single value, not an array", f"{path}.{field.name}")
        _primitive_item_to_xml(value, extra, field, el, f"{path}.{field.name}")
        return
    values = _aligned(value, extra, field, path)
    for index, (item, item_extra) in enumerate(values):
        _primitive_item_to_xml(item, item_extra, field, el, f"{path}.{field.name}[{index}]")


def _aligned(value: Any, extra: Any, field: _Field, path: str) -> list[tuple[Any, Any]]:
    """Pair ``name`` and ``_name`` arrays entry by entry (either may be absent)."""
    values = [] if value is None else value
    extras = [] if extra is None else extra
    if not isinstance(values, list) or not isinstance(extras, list):
        raise FhirXmlError("expected a JSON array", f"{path}.{field.name}")
    if values and extras and len(values) != len(extras):
        raise FhirXmlError(f"arrays {field.name} and _{field.name} differ in length", path)
    size = max(len(values), len(extras))
    values = values or [None] * size
    extras = extras or [None] * size
    return list(zip(values, extras, strict=True))


def _primitive_item_to_xml(
    value: Any, extra: Any, field: _Field, parent: etree._Element, path: str
) -> None:
    if value is None and extra is None:
        raise FhirXmlError("null with neither value nor extension", path)
    el = etree.SubElement(parent, _q(field.name))
    extensions: Any = None
    if extra is not None:
        if not isinstance(extra, dict) or not set(extra) <= {"id", "extension"}:
            raise FhirXmlError(f"_{field.name} may only hold id and extension", path)
        if extra.get("id") is not None:
            if not isinstance(extra["id"], str):
                raise FhirXmlError("element id must be a string", path)
            _set(el, "id", extra["id"], path)
        extensions = extra.get("extension")
    if value is not None:
        _set(el, "value", _format_primitive(value, field, path), path)
    if extensions is not None:
        if not isinstance(extensions, list):
            raise FhirXmlError("extension must be a JSON array", f"{path}.extension")
        ext_info = _info("Extension", path)
        for index, ext in enumerate(extensions):
            sub = etree.SubElement(el, _q("extension"))
            _complex_to_xml(ext, sub, ext_info, f"{path}.extension[{index}]")


def _set(el: etree._Element, name: str, value: str, path: str) -> None:
    try:
        el.set(name, value)
    except ValueError as exc:  # control characters cannot be written in XML
        raise FhirXmlError(f"value cannot be represented in XML: {exc}", path) from exc


def _format_primitive(value: Any, field: _Field, path: str) -> str:
    kind = field.json_kind
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "number" and not isinstance(value, bool | str):
        text = _format_number(value, field.type_code == "decimal")
        if text is not None:
            return text
    if kind == "string" and isinstance(value, str):
        return value
    raise FhirXmlError(f"invalid JSON value {value!r} for type {field.type_code}", path)


def _format_number(value: Any, is_decimal: bool) -> str | None:
    """Literal text for a JSON number, or None when it does not fit the type."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value) or (not is_decimal and not value.is_integer()):
            return None
        return repr(value) if is_decimal else str(int(value))
    if isinstance(value, Decimal):
        if not value.is_finite() or (not is_decimal and value != value.to_integral_value()):
            return None
        if not is_decimal:
            return str(int(value))
        literal = getattr(value, "literal", None)  # DecimalLiteral: exactly what the client sent
        if isinstance(literal, str):
            return literal
        # str() would turn 0.0000001 into 1E-7; fixed notation keeps every significant digit.
        exponent = value.as_tuple().exponent
        return format(value, "f") if isinstance(exponent, int) and exponent <= 0 else str(value)
    return None


def _div_from_string(value: Any, path: str) -> etree._Element:
    if not isinstance(value, str):
        raise FhirXmlError("narrative div must be a string", path)
    # HTML named entities (&nbsp;) are not defined in XML without a DTD; use code points.
    text = _NAMED_ENTITY_RE.sub(_numeric_entity, value)
    div = _parse(text, "narrative div", path)
    for node in div.iter():
        if isinstance(node.tag, str) and not node.tag.startswith("{"):
            node.tag = f"{{{XHTML_NS}}}{node.tag}"  # tolerate a div written without xmlns
    if _split(div.tag) != (XHTML_NS, "div"):
        raise FhirXmlError("narrative must be an XHTML <div>", path)
    return _clean_xhtml(div, path)


def _numeric_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _XML_ENTITIES or name not in html.entities.name2codepoint:
        return match.group(0)
    return f"&#{html.entities.name2codepoint[name]};"


def _indent(el: etree._Element, level: int) -> None:
    """Pretty-print FHIR elements only: whitespace added inside XHTML would change it."""
    children = list(el)
    if not children or _split(el.tag)[0] != FHIR_NS:
        return
    pad = "\n" + "  " * (level + 1)
    el.text = pad
    for child in children:
        _indent(child, level + 1)
        child.tail = pad
    children[-1].tail = "\n" + "  " * level
