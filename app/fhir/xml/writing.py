"""FHIR JSON -> FHIR XML (json_to_xml), element by element from the table."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from lxml import etree

from app.fhir.jsonio import IntegerLiteral
from app.fhir.xml.narrative import parse_div
from app.fhir.xml.table import (
    FHIR_NS,
    XHTML_NS,
    XML_DECLARATION,
    FhirXmlError,
    Field,
    TypeInfo,
    child_path,
    clean_xhtml,
    element_table,
    split_tag,
    type_info,
)

# --------------------------------------------------------------------------- JSON -> XML


def json_to_xml(resource: dict[str, Any], *, pretty: bool = False) -> bytes:
    """Convert one FHIR JSON resource into UTF-8 FHIR XML, elements in canonical order."""
    if not isinstance(resource, dict):
        raise FhirXmlError("a resource must be a JSON object")
    root = _resource_to_xml(resource, None, "")
    if pretty:
        _indent(root, 0)
    return XML_DECLARATION + etree.tostring(root, encoding="UTF-8")


def _q(name: str) -> str:
    return f"{{{FHIR_NS}}}{name}"


def _resource_to_xml(obj: Any, parent: etree._Element | None, path: str) -> etree._Element:
    if not isinstance(obj, dict):
        raise FhirXmlError("a resource must be a JSON object", path)
    rtype = obj.get("resourceType")
    if not isinstance(rtype, str) or rtype not in element_table().resource_types:
        raise FhirXmlError(f"unknown resourceType {rtype!r}", path or "resourceType")
    where = path or rtype
    if parent is None:
        el = etree.Element(_q(rtype), nsmap={None: FHIR_NS})
    else:
        el = etree.SubElement(parent, _q(rtype))
    _complex_to_xml(obj, el, type_info(rtype, where), where)
    return el


def _complex_to_xml(obj: Any, el: etree._Element, info: TypeInfo, path: str) -> None:
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
            _value_to_xml(field, item, el, child_path(path, field, index))


def _as_items(value: Any, field: Field, path: str) -> list[Any]:
    if field.is_array:
        if not isinstance(value, list):
            raise FhirXmlError("expected a JSON array", f"{path}.{field.name}")
        return value
    if isinstance(value, list):
        raise FhirXmlError("expected a single value, not an array", f"{path}.{field.name}")
    return [value]


def _value_to_xml(field: Field, item: Any, parent: etree._Element, path: str) -> None:
    if field.kind == "resource":
        wrapper = etree.SubElement(parent, _q(field.name))
        _resource_to_xml(item, wrapper, path)
    elif field.kind == "xhtml":
        parent.append(_div_from_string(item, path))
    else:
        sub = etree.SubElement(parent, _q(field.name))
        _complex_to_xml(item, sub, type_info(field.type_code, path), path)


def _primitive_to_xml(obj: dict[str, Any], field: Field, el: etree._Element, path: str) -> None:
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


def _aligned(value: Any, extra: Any, field: Field, path: str) -> list[tuple[Any, Any]]:
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
    value: Any, extra: Any, field: Field, parent: etree._Element, path: str
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
        ext_info = type_info("Extension", path)
        for index, ext in enumerate(extensions):
            sub = etree.SubElement(el, _q("extension"))
            _complex_to_xml(ext, sub, ext_info, f"{path}.extension[{index}]")


def _set(el: etree._Element, name: str, value: str, path: str) -> None:
    try:
        el.set(name, value)
    except ValueError as exc:  # control characters cannot be written in XML
        raise FhirXmlError(f"value cannot be represented in XML: {exc}", path) from exc


def _format_primitive(value: Any, field: Field, path: str) -> str:
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
        if isinstance(value, IntegerLiteral):  # -0, or beyond 64 bits: as the client sent it
            return value.literal
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
    div = parse_div(value, path)
    for node in div.iter():
        if isinstance(node.tag, str) and not node.tag.startswith("{"):
            node.tag = f"{{{XHTML_NS}}}{node.tag}"  # tolerate a div written without xmlns
    if split_tag(div.tag) != (XHTML_NS, "div"):
        raise FhirXmlError("narrative must be an XHTML <div>", path)
    return clean_xhtml(div, path)


def _indent(el: etree._Element, level: int) -> None:
    """Pretty-print FHIR elements only: whitespace added inside XHTML would change it."""
    children = list(el)
    if not children or split_tag(el.tag)[0] != FHIR_NS:
        return
    pad = "\n" + "  " * (level + 1)
    el.text = pad
    for child in children:
        _indent(child, level + 1)
        child.tail = pad
    children[-1].tail = "\n" + "  " * level
