"""FHIR XML -> FHIR JSON (xml_to_json), element by element from the table."""

from __future__ import annotations

from typing import Any

from lxml import etree

from app.fhir.jsonio import DecimalLiteral, FhirJsonError, check_depth, parse_int
from app.fhir.xml.table import (
    FHIR_NS,
    NO_ATTRIBUTES,
    NUMBER_RES,
    PRIMITIVE_ATTRIBUTES,
    XHTML_NS,
    FhirXmlError,
    Field,
    TypeInfo,
    attributes_of,
    child_elements,
    child_path,
    clean_xhtml,
    element_table,
    parse_xml,
    split_tag,
    type_info,
)

# --------------------------------------------------------------------------- XML -> JSON


def xml_to_json(data: bytes | str) -> dict[str, Any]:
    """Convert one FHIR XML resource into its FHIR JSON form."""
    root = parse_xml(data, "document")
    resource = _resource_from_xml(root, "")
    try:
        check_depth(resource)  # arrays add JSON levels the XML does not have
    except FhirJsonError as exc:
        raise FhirXmlError(str(exc)) from exc
    return resource


def _resource_from_xml(el: etree._Element, path: str) -> dict[str, Any]:
    ns, rtype = split_tag(el.tag)
    where = path or rtype
    if ns != FHIR_NS:
        raise FhirXmlError(f"<{rtype}> is not in the FHIR namespace {FHIR_NS}", where)
    if rtype not in element_table().resource_types:
        raise FhirXmlError(f"unknown resource type {rtype!r}", where)
    out: dict[str, Any] = {"resourceType": rtype}
    out.update(_complex_from_xml(el, type_info(rtype, where), where))
    return out


def _complex_from_xml(el: etree._Element, info: TypeInfo, path: str) -> dict[str, Any]:
    values = attributes_of(el, info.attribute_names, path)
    groups = _group_children(el, info, path)
    out: dict[str, Any] = {}
    # Emit in table order (the input's, once checked), so output is canonical.
    for field in info.fields:
        if field.attribute:
            if field.name in values:
                out[field.name] = values[field.name]
        elif field.name in groups:
            _field_from_xml(field, groups[field.name], path, out)
    return out


def _group_children(
    el: etree._Element, info: TypeInfo, path: str
) -> dict[str, list[etree._Element]]:
    groups: dict[str, list[etree._Element]] = {}
    previous = ""
    for child in child_elements(el, path):
        ns, local = split_tag(child.tag)
        field = info.by_name.get(local)
        if field is None or field.attribute:
            raise FhirXmlError("unknown element", f"{path}.{local}")
        # R4 xml.html: "Elements must always appear in the order documented" (the schema is a
        # sequence, so the repeats of an element are next to each other too).
        if previous and info.positions[local] < info.positions[previous]:
            raise FhirXmlError(
                f"out of order: <{local}> must come before <{previous}> "
                "(FHIR XML elements follow the order of their definition)",
                f"{path}.{local}",
            )
        previous = local
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
    field: Field, elems: list[etree._Element], path: str, out: dict[str, Any]
) -> None:
    if field.kind == "primitive":
        _primitive_from_xml(field, elems, path, out)
        return
    items = [_value_from_xml(field, e, child_path(path, field, i)) for i, e in enumerate(elems)]
    out[field.name] = items if field.is_array else items[0]


def _value_from_xml(field: Field, el: etree._Element, path: str) -> Any:
    if field.kind == "resource":
        return _unwrap_resource(el, path)
    if field.kind == "xhtml":
        return _div_to_string(el, path)
    return _complex_from_xml(el, type_info(field.type_code, path), path)


def _unwrap_resource(wrapper: etree._Element, path: str) -> dict[str, Any]:
    attributes_of(wrapper, NO_ATTRIBUTES, path)
    inner = list(child_elements(wrapper, path))
    if len(inner) != 1:
        raise FhirXmlError("must contain exactly one resource element", path)
    return _resource_from_xml(inner[0], path)


def _primitive_from_xml(
    field: Field, elems: list[etree._Element], path: str, out: dict[str, Any]
) -> None:
    pairs = [
        _primitive_item_from_xml(field, e, child_path(path, field, i)) for i, e in enumerate(elems)
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
    field: Field, el: etree._Element, path: str
) -> tuple[Any, dict[str, Any] | None]:
    attrs = attributes_of(el, PRIMITIVE_ATTRIBUTES, path)
    extensions: list[dict[str, Any]] = []
    ext_info = type_info("Extension", path)
    for child in child_elements(el, path):
        ns, local = split_tag(child.tag)
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


def _parse_primitive(raw: str, field: Field, path: str) -> Any:
    if field.json_kind == "boolean":
        if raw not in ("true", "false"):
            raise FhirXmlError(f"invalid boolean {raw!r}", path)
        return raw == "true"
    if field.json_kind == "number":
        pattern = NUMBER_RES.get(field.type_code, NUMBER_RES["integer"])
        if not pattern.fullmatch(raw):
            raise FhirXmlError(f"invalid {field.type_code} {raw!r}", path)
        if field.type_code == "decimal":
            return DecimalLiteral(raw)  # keeps "1.50" as written
        return parse_int(raw.removeprefix("+"))
    return raw


def _div_to_string(el: etree._Element, path: str) -> str:
    if split_tag(el.tag) != (XHTML_NS, "div"):
        raise FhirXmlError("narrative must be an XHTML <div>", path)
    return etree.tostring(clean_xhtml(el, path), encoding="unicode", with_tail=False)
