"""Narrative XHTML: parsing a JSON `div` string, and the rules it must follow (R4 txt-1,
txt-2 and http://hl7.org/fhir/R4/narrative.html#xhtml)."""

from __future__ import annotations

import html.entities
import re

from lxml import etree

from app.fhir.xml.table import (
    NAMED_ENTITY_RE,
    XHTML_NS,
    XML_ENTITIES,
    FhirXmlError,
    parse_xml,
    split_tag,
)

# txt-1: "only the basic html formatting elements and attributes described in chapters 7-11
# (except section 4 of chapter 9) and 12 of the HTML 4.0 standard, <a> elements (either name
# or href), images and internally contained style attributes" (the list the HL7 validator uses).
ELEMENTS = frozenset(
    "p br div h1 h2 h3 h4 h5 h6 a span b em i strong small big tt dfn q var abbr acronym "
    "cite blockquote hr address bdo kbd sub sup ul ol li dl dt dd pre table caption colgroup "
    "col thead tr tfoot tbody th td code samp img map area".split()
)
ATTRIBUTES = frozenset(
    "title style class id lang dir accesskey tabindex span width align valign char charoff "
    "abbr axis headers scope rowspan colspan border cellpadding cellspacing summary frame "
    "rules start type value".split()
)
ELEMENT_ATTRIBUTES = {
    "a": frozenset({"href", "name", "shape", "coords"}),
    "img": frozenset({"src", "alt", "height", "width"}),
    "area": frozenset({"href", "alt", "shape", "coords", "nohref"}),
    "map": frozenset({"name"}),
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data:text/html)", re.IGNORECASE)


def parse_div(value: str, path: str) -> etree._Element:
    """The div as an element tree; HTML named entities (&nbsp;), undefined in XML without a
    DTD, become code points."""
    return parse_xml(NAMED_ENTITY_RE.sub(_numeric_entity, value), "narrative div", path)


def _numeric_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in XML_ENTITIES or name not in html.entities.name2codepoint:
        return match.group(0)
    return f"&#{html.entities.name2codepoint[name]};"


def div_problems(value: str) -> list[str]:
    """What is wrong with a narrative div string (empty: nothing)."""
    try:
        div = parse_div(value, "")
    except FhirXmlError as exc:
        return [str(exc)]
    if split_tag(div.tag) != (XHTML_NS, "div"):
        return ['must be a <div> in the XHTML namespace (xmlns="http://www.w3.org/1999/xhtml")']
    problems = [p for node in div.iter() for p in _node_problems(node)]
    if not _has_content(div):
        problems.append("must have some non-whitespace content (txt-2)")
    return problems


def _node_problems(node: etree._Element) -> list[str]:
    if not isinstance(node.tag, str):
        return []  # comments and processing instructions are dropped by the parser
    ns, name = split_tag(node.tag)
    if ns != XHTML_NS or name not in ELEMENTS:
        return [f"<{name}> is not allowed in a narrative (txt-1)"]
    allowed = ELEMENT_ATTRIBUTES.get(name, frozenset())
    problems = []
    for key, value in node.attrib.items():
        if key == XML_LANG:
            continue
        if key not in ATTRIBUTES and key not in allowed:
            problems.append(f"attribute {key!r} of <{name}> is not allowed in a narrative (txt-1)")
        elif key in ("href", "src") and SCRIPT_URL.match(value):
            problems.append(f"<{name} {key}> may not hold a script (txt-1)")
    return problems


def _has_content(div: etree._Element) -> bool:
    text = "".join(div.itertext())
    return bool(text.strip()) or any(
        split_tag(node.tag)[1] == "img" for node in div.iter() if isinstance(node.tag, str)
    )
