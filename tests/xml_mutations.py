"""Random mutations of FHIR XML requests for the XML fuzz (tests/test_xml_fuzz.py).

The seeds are the JSON seeds of tests/rest_mutations.py (resources, batch/transaction Bundles,
$validate Parameters) rendered as FHIR XML by the server's own JSON -> XML writer, plus a
Patient with a narrative and a contained resource. A case changes a seed at the XML level
(elements dropped, duplicated, moved, renamespaced, turned into attributes or text; odd
`value` attributes; comments, processing instructions, CDATA; deep nesting; narratives with
scripts), at the byte level (tests/rest_mutations.mutate_bytes and XML-specific damage), or
wraps it in hostile XML (DTDs, external entities, billion laughs, wrong encodings, BOMs).
Some cases send JSON requests (rest_mutations' own) and ask for XML answers. Every case is
drawn from one `random.Random`, so a failing one is reproduced from its seed and number.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import httpx
from lxml import etree

from app.fhir.jsonio import MAX_DEPTH
from app.fhir.xml import FhirXmlError, json_to_xml, xml_to_json
from tests.rest_mutations import (
    PATIENT,
    Case,
    CaseMaker,
    answer_problem,
    mutate_bytes,
    mutate_json,
)

XML = "application/fhir+xml"
F = "http://hl7.org/fhir"
XHTML = "http://www.w3.org/1999/xhtml"

NARRATED: dict[str, Any] = {
    **PATIENT,
    "text": {
        "status": "generated",
        "div": f'<div xmlns="{XHTML}"><p>Fuzz <b>Ann</b> &amp; <a href="#x">B.</a></p></div>',
    },
    "contained": [{"resourceType": "Organization", "id": "org", "name": "Ward"}],
    "managingOrganization": {"reference": "#org"},
    "_gender": {"id": "g", "extension": [{"url": "http://example.org/g", "valueCode": "f"}]},
}

# What a `value` attribute (or any attribute) may be set to: near misses of every primitive,
# whitespace, markup characters, astral and invisible characters, huge literals.
_ODD_ATTRIBUTES = [
    "",
    " ",
    " x ",
    "\t\n",
    "<",
    "&",
    '"',
    "]]>",
    "true ",
    "True",
    "1",
    "-0",
    "+1",
    "01",
    "1.",
    ".5",
    "1e400",
    "1" * 5000,
    "NaN",
    "INF",
    "2024-13-45",
    "2024-02-30T25:61:00Z",
    "2024-01-01T10:00:00+14:01",
    "é",
    "\u200b",
    "\ufeff",
    "\U0001f600",
    "x" * 20000,
    "Patient/../x",
    "#",
    "urn:uuid:p-0",
    "javascript:alert(1)",
    "\u0085\u2028",
]

# Things the parser must refuse or ignore: entities (undefined, character references to
# characters XML forbids), CDATA, comments and processing instructions in odd places.
_XML_SNIPPETS = [
    b"&nbsp;",
    b"&undefined;",
    b"&#0;",
    b"&#x1;",
    b"&#xFFFE;",
    b"&#55296;",
    b"&#x10FFFF;",
    b"&#xD800;",
    b"<![CDATA[<id value='x'/>]]>",
    b"<![CDATA[",
    b"<!-- c -->",
    b"<!-- -- -->",
    b"<?pi data?>",
    b"<?xml version='1.0'?>",
    b"<!ENTITY e 'x'>",
    b"<x:y xmlns:x='urn:x'/>",
    b"</Patient>",
    b"<",
    b"&",
    b"\x00",
    b"\x1b",
    b"\xc3\x28",
    b"\xed\xa0\x80",  # a surrogate encoded as UTF-8
    b"\xef\xbf\xbe",  # U+FFFE
    b"\xef\xbb\xbf",  # a BOM in the middle
]

# Narrative content txt-1 forbids, and markup that has fooled sanitizers.
_DIV_BODIES = [
    "<script>alert(1)</script>",
    '<p onclick="alert(1)">x</p>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href=" JaVaScRiPt:alert(1)">x</a>',
    '<img src="data:text/html;base64,PHNjcmlwdD4="/>',
    '<iframe src="http://example.org"/>',
    "<style>p{}</style>",
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<p xmlns="urn:x">x</p>',
    "<p><![CDATA[<script>alert(1)</script>]]></p>",
    "<!-- only a comment -->",
    "",
    "   ",
    "<p>" * 150 + "x" + "</p>" * 150,
    "<object data='x'/>",
    '<p style="background:url(javascript:alert(1))">x</p>',
    '<form action="http://example.org"><input/></form>',
]

_CONTENT_TYPES = [
    "application/xml",
    "text/xml",
    f"{XML}; charset=utf-8",
    f"{XML}; fhirVersion=4.0",
    f"{XML}; charset=utf-16",
    f"{XML}; fhirVersion=3.0",
]

# (headers, query) that ask for XML answers, and a few that ask for XML only half-heartedly.
_XML_ASKS: list[tuple[dict[str, str], str]] = [
    ({"Accept": XML}, ""),
    ({"Accept": XML}, ""),
    ({}, "_format=xml"),
    ({}, "_format=application/fhir%2Bxml"),
    ({}, "_format=application/fhir+xml"),
    ({"Accept": "application/xml"}, ""),
    ({"Accept": "text/xml"}, ""),
    ({"Accept": f"{XML};q=0.9, application/fhir+json;q=0.1"}, ""),
    ({"Accept": f"{XML}; fhirVersion=4.0"}, ""),
    ({"Accept": "application/fhir+json"}, "_format=xml&_pretty=true"),
]


def render(document: Any) -> bytes:
    """The server's own JSON -> XML rendering of a seed."""
    return json_to_xml(document)


def _elements(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str) and el is not root]


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def mutate_tree(root: etree._Element, rng: random.Random) -> None:
    """One to three XML-level changes of `root`, in place."""
    for _ in range(rng.randint(1, 3)):
        elements = _elements(root)
        if not elements:
            return
        el = rng.choice(elements)
        parent = el.getparent()
        assert parent is not None
        op = rng.randrange(14)
        if op == 0:  # gone
            parent.remove(el)
        elif op == 1:  # repeated, where it may or may not repeat
            for _ in range(rng.choice([1, 1, 2, 50])):
                el.addnext(copy.deepcopy(el))
        elif op == 2:  # moved among its siblings or to its parent's level
            parent.remove(el)
            grandparent = parent.getparent()
            target = parent if grandparent is None or rng.random() < 0.5 else grandparent
            target.insert(rng.randint(0, len(target)), el)
        elif op == 3:  # another namespace, none, or the XHTML one
            el.tag = rng.choice([f"{{urn:x}}{_local(el)}", _local(el), f"{{{XHTML}}}{_local(el)}"])
        elif op == 4:  # the value as text, or a child as an attribute
            value = el.attrib.pop("value", None)
            if value is not None:
                el.text = value
            else:
                children = [child for child in el if isinstance(child.tag, str)]  # no comments
                if children:
                    child = rng.choice(children)
                    el.set(_local(child), child.get("value", "x"))
        elif op == 5:  # an odd value
            el.set(rng.choice(["value", "value", "id", "url"]), rng.choice(_ODD_ATTRIBUTES))
        elif op == 6:  # attributes FHIR does not have, or has elsewhere
            name = rng.choice(
                [
                    "value",
                    "id",
                    "url",
                    "xmlns",
                    "{http://www.w3.org/2001/XMLSchema-instance}type",
                    "{http://www.w3.org/XML/1998/namespace}lang",
                    "{urn:x}value",
                    "onclick",
                ]
            )
            if name != "xmlns":
                el.set(name, rng.choice(_ODD_ATTRIBUTES[:8]))
        elif op == 7:  # an element FHIR does not know, or a resource where none belongs
            name = rng.choice(["unknownElement", f"{_local(el)}X", "resourceType", "Patient"])
            el.insert(rng.randint(0, len(el)), etree.Element(f"{{{F}}}{name}", value="x"))
        elif op == 8:  # text between elements
            el.tail = rng.choice(["text", " ", "\n", "é", "]]>"])
        elif op == 9:  # comments and processing instructions anywhere
            node = rng.choice([etree.Comment(" c "), etree.ProcessingInstruction("pi", "x")])
            el.insert(rng.randint(0, len(el)), node)
        elif op == 10:  # deep nesting of extensions
            nested = el
            for _ in range(rng.choice([5, 60, 130, 2000])):
                nested = etree.SubElement(nested, f"{{{F}}}extension", url="http://x")
            etree.SubElement(nested, f"{{{F}}}valueString", value="y")
        elif op == 11:  # an element emptied: no value, no children
            el.attrib.clear()
            for child in list(el):
                el.remove(child)
        elif op == 12:  # contained inside contained, or a resource wrapper holding two
            wrapper = etree.SubElement(el, f"{{{F}}}contained")
            etree.SubElement(wrapper, f"{{{F}}}Patient")
            if rng.random() < 0.5:
                etree.SubElement(wrapper, f"{{{F}}}Organization")
        else:  # swapped with another element somewhere else
            other = rng.choice(elements)
            if (
                other is not el
                and el not in other.iterancestors()
                and other not in el.iterancestors()
            ):
                el.addprevious(copy.deepcopy(other))
                other.addprevious(copy.deepcopy(el))
                parent.remove(el)
                other_parent = other.getparent()
                if other_parent is not None:
                    other_parent.remove(other)


def mutate_div(root: etree._Element, rng: random.Random) -> bytes:
    """The document with its narrative (if any) replaced by one txt-1 forbids."""
    div = root.find(f".//{{{XHTML}}}div")
    data = etree.tostring(root)
    if div is None:
        return data
    marker = "MUTATED-DIV"
    div.clear()
    div.text = marker
    data = etree.tostring(root)
    body = rng.choice(_DIV_BODIES).encode()
    return data.replace(marker.encode(), body)


def mutate_xml_bytes(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: the generic one, or XML snippets at random places."""
    if rng.random() < 0.4:
        return mutate_bytes(data, rng)
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(out) + 1)
        out[pos:pos] = rng.choice(_XML_SNIPPETS)
    return bytes(out)


def hostile(data: bytes, rng: random.Random, canary: str) -> bytes:
    """A seed wrapped in what a hardened parser must refuse: DTDs and entities (local files,
    the canary URL that must never be fetched, billion laughs), encodings, BOMs."""
    body = data.removeprefix(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root_name = body[1 : body.index(b" ")]
    in_attribute = b'<id value="&e;"/>'
    in_text = (
        b'<text><status value="generated"/><div xmlns="' + XHTML.encode() + b'">&e;</div></text>'
    )
    dtds = [
        b'<!DOCTYPE R [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
        b'<!DOCTYPE R [<!ENTITY e SYSTEM "' + canary.encode() + b'/entity">]>',
        b'<!DOCTYPE R SYSTEM "' + canary.encode() + b'/dtd">',
        b'<!DOCTYPE R [<!ENTITY % p SYSTEM "' + canary.encode() + b'/param"> %p;]>',
        b'<!DOCTYPE R [<!ENTITY e "x"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
        b'<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;">]>',
        b"<!DOCTYPE R>",
    ]
    op = rng.randrange(9)
    if op <= 2:  # a DTD, its entity used in an attribute or in the narrative, or not at all
        dtd = rng.choice(dtds)
        if rng.random() < 0.7:
            use = rng.choice([in_attribute, in_text]).replace(b"&e;", rng.choice([b"&e;", b"&h;"]))
            body = body.replace(b">", b">" + use, 1)
        out = b'<?xml version="1.0"?>\n' + dtd + body
        return out.decode().encode("utf-16") if op == 2 else out
    if op == 3:  # XInclude and schema locations: never followed
        include = (
            b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="'
            + rng.choice([b"file:///etc/passwd", canary.encode() + b"/xinclude"])
            + b'" parse="text"/>'
        )
        located = b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="'
        located += b"http://hl7.org/fhir " + canary.encode() + b'/xsd"'
        body = body.replace(b">", b">" + include, 1) if rng.random() < 0.5 else body
        return body.replace(root_name, root_name + located, 1)
    if op == 4:  # a declaration that does not match the bytes
        declared = rng.choice([b"ISO-8859-1", b"UTF-16", b"UTF-32", b"EBCDIC-US", b"x-nope", b""])
        version = rng.choice([b"1.0", b"1.1", b"2.0"])
        text = body.replace(b"Ann", "Ånn\u00e9".encode())
        return b'<?xml version="' + version + b'" encoding="' + declared + b'"?>' + text
    if op == 5:  # other encodings of the same document, with and without their BOM
        text = (b'<?xml version="1.0"?>' + body).decode()
        encoded = text.encode(rng.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1"]))
        return rng.choice([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]) + encoded
    if op == 6:  # BOMs and whitespace before the declaration
        return rng.choice([b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b" ", b"\n"]) + data
    if op == 7:  # elements nested far deeper than any resource
        depth = rng.choice([129, 1000, 20000])
        inner = b"<extension url='x'>" * depth + b"</extension>" * depth
        return body.replace(b">", b">" + inner, 1)
    # a second root, or trailing garbage
    return data + rng.choice([body, b"<x/>", b"\x00", b"garbage", b"<!-- end -->"])


class XmlCaseMaker(CaseMaker):
    """Cases with FHIR XML bodies or XML answers, against the resources the test created."""

    def __init__(
        self, rng: random.Random, patient_id: str, observation_id: str, canary: str
    ) -> None:
        super().__init__(rng, patient_id, observation_id)
        self.canary = canary

    def case(self) -> Case:
        maker = self.rng.choice(
            [
                self.xml_write,
                self.xml_write,
                self.xml_bundle,
                self.xml_validate,
                self.xml_json_mutated,
                self.xml_damaged,
                self.xml_narrative,
                self.xml_hostile,
                self.xml_answer,
            ]
        )
        return self._maybe_wanting_xml(maker())

    def _maybe_wanting_xml(self, case: Case) -> Case:
        if case.wants_xml or self.rng.random() < 0.4:
            return case
        return self._asking_for_xml(case)

    def _asking_for_xml(self, case: Case) -> Case:
        """`case` asking for an XML answer, in one of the ways a client can."""
        headers, query = self.rng.choice(_XML_ASKS)
        case.headers = {**case.headers, **headers}
        if query:
            case.path += ("&" if "?" in case.path else "?") + query
        case.wants_xml = True
        return case

    def _xml_seed(self) -> dict[str, Any]:
        if self.rng.random() < 0.3:
            return json.loads(json.dumps(NARRATED))
        return self._seed_resource()

    def _write_target(self, document: dict[str, Any]) -> tuple[str, str]:
        rtype = str(document.get("resourceType", "Patient"))
        if self.rng.random() < 0.5:
            return "POST", rtype
        rid = f"xfuzz-{self.rng.randrange(10**6)}"
        if rtype == "Patient" and self.rng.random() < 0.5:
            rid = self.patient_id
        document["id"] = rid
        return "PUT", f"{rtype}/{rid}"

    def _xml_case(self, method: str, path: str, data: bytes) -> Case:
        content_type = XML if self.rng.random() < 0.6 else self.rng.choice(_CONTENT_TYPES)
        return Case(method, path, {"Content-Type": content_type}, data)

    def _mutated(self, document: Any) -> bytes:
        root = etree.fromstring(render(document))
        mutate_tree(root, self.rng)
        return etree.tostring(root, xml_declaration=self.rng.random() < 0.5, encoding="UTF-8")

    def xml_write(self) -> Case:
        document = self._xml_seed()
        method, path = self._write_target(document)
        return self._xml_case(method, path, self._mutated(document))

    def xml_bundle(self) -> Case:
        return self._xml_case("POST", "", self._mutated(self.bundle_document()))

    def xml_validate(self) -> Case:
        document, path = self.validate_document(), self.validate_path()
        return self._xml_case("POST", path, self._mutated(document))

    def xml_json_mutated(self) -> Case:
        """JSON-level changes the XML writer can still express (wrong kinds of values are
        refused by the writer: then the XML-level ones)."""
        document = self.rng.choice([self._xml_seed, self.bundle_document, self.validate_document])()
        path = self.rng.choice(["Patient", "", "Patient/$validate"])
        for _ in range(5):
            try:
                return self._xml_case("POST", path, render(mutate_json(document, self.rng)))
            except (FhirXmlError, ValueError, TypeError, AttributeError):
                continue
        return self._xml_case("POST", path, self._mutated(document))

    def xml_damaged(self) -> Case:
        document = self._xml_seed()
        method, path = self._write_target(document)
        return self._xml_case(method, path, mutate_xml_bytes(render(document), self.rng))

    def xml_narrative(self) -> Case:
        document = json.loads(json.dumps(NARRATED))
        method, path = self._write_target(document)
        root = etree.fromstring(render(document))
        if self.rng.random() < 0.3:
            mutate_tree(root, self.rng)
        return self._xml_case(method, path, mutate_div(root, self.rng))

    def xml_hostile(self) -> Case:
        document = self.rng.choice([self._xml_seed, self.bundle_document])()
        path = "" if document["resourceType"] == "Bundle" else str(document["resourceType"])
        data = hostile(render(document), self.rng, self.canary)
        return self._xml_case("POST", path, data)

    def xml_answer(self) -> Case:
        """rest_mutations' JSON cases (and a few reads), answered in XML."""
        case = self.rng.choice(
            [
                super().case,
                super().case,
                lambda: Case("GET", f"Patient/{self.patient_id}"),
                lambda: Case("GET", f"Patient/{self.patient_id}/_history"),
                lambda: Case("GET", f"Patient/{self.patient_id}/$everything"),
                lambda: Case("GET", "metadata"),
                lambda: Case("GET", f"Observation?subject={self.patient_id}&_include=*"),
            ]
        )()
        return self._asking_for_xml(case)


# --------------------------------------------------------------------------- checking answers

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def xml_answer_problem(response: httpx.Response, case: Case) -> str | None:
    """What is wrong with this answer, or None. A client that asked for XML gets FHIR XML
    back (an XML OperationOutcome for every error) that the server itself can read again."""
    if response.status_code >= 500 or not case.wants_xml:
        return answer_problem(response)
    status = response.status_code
    if (status < 300 and not response.content) or status == 304:
        return None  # Prefer: return=minimal, HEAD, not modified
    if not response.headers.get("content-type", "").startswith(XML):
        return f"status {status} asked for XML, got {response.headers.get('content-type')!r}"
    try:
        root = etree.fromstring(response.content, _SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        return f"status {status}: not well-formed XML ({exc}): {response.text[:300]!r}"
    name = etree.QName(root)
    if name.namespace != F:
        return f"status {status}: root <{name.localname}> outside the FHIR namespace"
    if status >= 400:
        issues = root.findall(f"{{{F}}}issue")
        if name.localname != "OperationOutcome" or not issues:
            return f"status {status}: not an OperationOutcome with issues: {response.text[:300]!r}"
    try:
        xml_to_json(response.content)  # what the server writes, it reads
    except FhirXmlError as exc:
        # A stored resource may nest up to the input limit, and a Bundle holding it nests
        # deeper than any request may (JSON alike): a limit, not a fault of the XML path.
        if f"nest more than {MAX_DEPTH} levels" not in str(exc):
            return f"status {status}: the server cannot read its own XML back ({exc})"
    return None
