"""Round-trip the official HL7 FHIR R4 examples (npm package hl7.fhir.r4.examples@4.0.1).

Every example of the resource types MediSentinel serves is sent with its exact bytes, by
update-as-create (PUT /<Type>/<id>) and by create (POST /<Type>), and read back: the server must
return what it was given, apart from the id it owns on create and meta.versionId /
meta.lastUpdated.  Decimals are compared with their precision (1.50 is not 1.5), numbers are not
allowed to change type, and timezone-bearing date-times and base64 values must come back as
byte-identical JSON string tokens.

The package is fetched with `npm pack` at test time into a cache directory and reused once
unpacked; the tests skip only when `npm` is absent and no unpacked copy is available.
"""

from __future__ import annotations

import copy
import decimal
import functools
import json
import re
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.fhir_package import CORE_EXAMPLE_TYPES, core_example_files, examples_package

RESOURCE_TYPES = CORE_EXAMPLE_TYPES

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def example_files() -> tuple[str, ...]:
    return core_example_files()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "example_name" not in metafunc.fixturenames:
        return
    package = examples_package()
    if package.skip_reason:
        params = [pytest.param(None, id="npm-missing", marks=pytest.mark.skip(package.skip_reason))]
    elif package.error:
        # Fail visibly (one failing test) instead of erroring the whole collection.
        params = [pytest.param(package.error, id="examples-unavailable")]
    else:
        params = list(example_files())
    metafunc.parametrize("example_name", params)


def load_example(example_name: str) -> bytes:
    package = examples_package()
    if package.error:
        pytest.fail(package.error)
    assert package.directory is not None
    return (package.directory / example_name).read_bytes()


# --------------------------------------------------------------------------- exact comparison


def parse_exact(raw: bytes | str) -> Any:
    """JSON with decimals kept exactly (precision included) and integers as int."""
    return json.loads(raw, parse_float=decimal.Decimal)


def without_server_owned(resource: dict[str, Any], *, drop_id: bool = False) -> dict[str, Any]:
    """Drop meta.versionId / meta.lastUpdated (and id on create); keep every other meta."""
    resource = copy.deepcopy(resource)
    if drop_id:
        resource.pop("id", None)
    meta = resource.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if not meta:
            del resource["meta"]
    return resource


def differences(sent: Any, got: Any, path: str = "$") -> list[str]:
    """Strict structural diff: same JSON types, same decimal precision, same list order."""
    if type(sent) is not type(got):
        return [
            f"{path}: sent {sent!r} ({type(sent).__name__}), got {got!r} ({type(got).__name__})"
        ]
    if isinstance(sent, dict):
        out = []
        for key in sent.keys() - got.keys():
            out.append(f"{path}.{key}: missing from response (sent {sent[key]!r})")
        for key in got.keys() - sent.keys():
            out.append(f"{path}.{key}: not sent, but returned {got[key]!r}")
        for key in sent.keys() & got.keys():
            out.extend(differences(sent[key], got[key], f"{path}.{key}"))
        return out
    if isinstance(sent, list):
        if len(sent) != len(got):
            return [f"{path}: sent {len(sent)} items, got {len(got)}: {got!r}"]
        out = []
        for index, (a, b) in enumerate(zip(sent, got, strict=True)):
            out.extend(differences(a, b, f"{path}[{index}]"))
        return out
    if isinstance(sent, decimal.Decimal):
        if sent.as_tuple() != got.as_tuple():
            return [f"{path}: sent decimal {sent}, got {got}"]
        return []
    if sent != got:
        return [f"{path}: sent {sent!r}, got {got!r}"]
    return []


def assert_same(sent: Any, got: Any, what: str) -> None:
    found = differences(sent, got)
    assert not found, f"{what} differs from what was sent:\n  " + "\n  ".join(sorted(found))


# Raw string tokens whose text must survive byte for byte.
STRING_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
ZONED_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$"
)
# base64Binary elements of the served types (Attachment.data/hash, Signature.data,
# Device.udiCarrier.carrierAIDC).
BASE64_KEYS = frozenset({"data", "hash", "carrierAIDC"})
KEY_SEPARATOR = re.compile(r"\s*:\s*")


def string_tokens(raw: str) -> list[tuple[str | None, str]]:
    """(key or None, raw token) for every JSON string value token in the text."""
    tokens: list[tuple[str | None, str]] = []
    previous: re.Match[str] | None = None
    for match in STRING_TOKEN.finditer(raw):
        key = None
        if previous is not None and KEY_SEPARATOR.fullmatch(raw, previous.end(), match.start()):
            key = json.loads(previous.group())
        tokens.append((key, match.group()))
        previous = match
    return tokens


def byte_exact_tokens(raw: str) -> set[str]:
    """Raw tokens of zoned date-times and base64 values in a JSON text (not meta.lastUpdated)."""
    wanted = set()
    for key, token in string_tokens(raw):
        if key == "lastUpdated":  # meta.lastUpdated is the server's
            continue
        value = json.loads(token)
        if ZONED_DATETIME.match(value) or key in BASE64_KEYS:
            wanted.add(token)
    return wanted


def assert_raw_tokens_kept(sent_raw: str, got_raw: str, what: str) -> None:
    returned = {token for _, token in string_tokens(got_raw)}
    missing = sorted(byte_exact_tokens(sent_raw) - returned)
    shown = [token if len(token) < 120 else token[:117] + '..."' for token in missing]
    assert not missing, f"{what}: string values not returned byte-identical: {shown}"


def check_round_trip(sent_raw: bytes, response: httpx.Response, what: str, drop_id: bool) -> None:
    sent = without_server_owned(parse_exact(sent_raw), drop_id=drop_id)
    got = without_server_owned(parse_exact(response.content), drop_id=drop_id)
    assert_same(sent, got, what)
    assert_raw_tokens_kept(sent_raw.decode("utf-8"), response.text, what)


# --------------------------------------------------------------------------- tests


def test_examples_were_found() -> None:
    """Guards against an empty selection (a wrong package would silently test nothing)."""
    package = examples_package()
    if package.skip_reason:
        pytest.skip(package.skip_reason)
    if package.error:
        pytest.fail(package.error)
    names = example_files()
    assert {name.split("-", 1)[0] for name in names} == set(RESOURCE_TYPES)
    assert len(names) > 100


def test_update_as_create_round_trips(client: httpx.Client, example_name: str) -> None:
    raw = load_example(example_name)
    resource = json.loads(raw)
    rtype, rid = resource["resourceType"], resource["id"]

    put = client.put(f"/{rtype}/{rid}", content=raw, headers=FHIR_JSON)
    assert put.status_code in (200, 201), f"PUT {rtype}/{rid}: {put.status_code} {put.text}"
    if put.content:
        check_round_trip(raw, put, f"PUT {rtype}/{rid} response body", drop_id=False)

    read = client.get(f"/{rtype}/{rid}")
    assert read.status_code == 200, f"GET {rtype}/{rid}: {read.status_code} {read.text}"
    assert read.json()["id"] == rid
    check_round_trip(raw, read, f"GET {rtype}/{rid}", drop_id=False)


def test_create_round_trips(client: httpx.Client, example_name: str) -> None:
    raw = load_example(example_name)
    rtype = json.loads(raw)["resourceType"]

    created = client.post(f"/{rtype}", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, f"POST {rtype}: {created.status_code} {created.text}"
    location = created.headers["location"]
    new_id = location.split(f"/{rtype}/", 1)[1].split("/", 1)[0]
    if created.content:
        assert created.json()["id"] == new_id
        check_round_trip(raw, created, f"POST {rtype} response body", drop_id=True)

    read = client.get(f"/{rtype}/{new_id}")
    assert read.status_code == 200, f"GET {rtype}/{new_id}: {read.status_code} {read.text}"
    assert read.json()["id"] == new_id
    check_round_trip(raw, read, f"GET {rtype}/{new_id} (created)", drop_id=True)


# A number token (not inside a string) whose mantissa has trailing zeros: 1.0, 1.50, 1.000E-245.
TRAILING_ZERO_DECIMAL = re.compile(r"(?<![\w.\"])-?\d+\.\d*0(?:[eE][+-]?\d+)?(?=\s*[,}\]])")


def trailing_zero_literals(raw: str) -> list[str]:
    """Trailing-zero decimal literals outside string tokens."""
    outside_strings = STRING_TOKEN.sub('""', raw)
    return TRAILING_ZERO_DECIMAL.findall(outside_strings)


def number_literals(raw: str) -> list[str]:
    outside_strings = STRING_TOKEN.sub('""', raw)
    return [literal.lower() for literal in re.findall(r"-?\d[\d.eE+-]*", outside_strings)]


@functools.cache
def observation_with_trailing_zero_decimals() -> str:
    """The Observation example with the most trailing-zero decimals (Observation-decimal)."""
    directory = examples_package().directory
    assert directory is not None
    best = max(
        (name for name in example_files() if name.startswith("Observation-")),
        key=lambda name: (
            len(trailing_zero_literals((directory / name).read_text(encoding="utf-8"))),
            name,
        ),
    )
    return best


def test_decimal_trailing_zeros_keep_exact_literal(client: httpx.Client) -> None:
    package = examples_package()
    if package.skip_reason:
        pytest.skip(package.skip_reason)
    if package.error:
        pytest.fail(package.error)
    name = observation_with_trailing_zero_decimals()
    raw = load_example(name).decode("utf-8")
    literals = trailing_zero_literals(raw)
    assert literals, f"no trailing-zero decimal found in the Observation examples ({name})"

    created = client.post("/Observation", content=raw.encode("utf-8"), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    new_id = created.headers["location"].split("/Observation/", 1)[1].split("/", 1)[0]
    read = client.get(f"/Observation/{new_id}")
    assert read.status_code == 200, read.text

    for response, what in ((created, "create response"), (read, "read")):
        returned = number_literals(response.text)
        for literal in literals:
            assert returned.count(literal.lower()) >= number_literals(raw).count(literal.lower()), (
                f"{name}: decimal literal {literal} not kept in the {what}; "
                f"numbers returned: {sorted(set(returned))}"
            )
        # Same sequence of number literals overall (order of keys may differ, so compare sorted).
        assert sorted(returned) == sorted(number_literals(raw)), f"{name}: {what} numbers differ"


XML_TYPE = "application/fhir+xml"


def test_xml_round_trips(client: httpx.Client, example_name: str) -> None:
    """JSON in, XML out, that XML in, JSON out: the same resource (R4 xml.html / json.html
    carry the same content: primitive extensions and ids, the narrative, decimals' precision)."""
    raw = load_example(example_name)
    resource = json.loads(raw)
    rtype, rid = resource["resourceType"], resource["id"]
    put = client.put(f"/{rtype}/{rid}", content=raw, headers=FHIR_JSON)
    assert put.status_code in (200, 201), f"PUT {rtype}/{rid}: {put.status_code} {put.text}"

    as_xml = client.get(f"/{rtype}/{rid}", params={"_format": "xml"})
    assert as_xml.status_code == 200, as_xml.text
    assert as_xml.headers["content-type"].startswith(XML_TYPE)
    created = client.post(f"/{rtype}", content=as_xml.content, headers={"Content-Type": XML_TYPE})
    assert created.status_code == 201, f"POST {rtype} as XML: {created.status_code} {created.text}"
    new_id = created.headers["location"].split(f"/{rtype}/", 1)[1].split("/", 1)[0]

    read = client.get(f"/{rtype}/{new_id}")
    assert read.status_code == 200, read.text
    sent = _canonical_divs(without_server_owned(parse_exact(raw), drop_id=True))
    got = _canonical_divs(without_server_owned(parse_exact(read.content), drop_id=True))
    assert_same(sent, got, f"{example_name} through XML")
    assert_raw_tokens_kept(raw.decode("utf-8"), read.text, f"{example_name} through XML")


def _canonical_divs(value: Any) -> Any:
    """Narratives as canonical XML (C14N): XML keeps the XHTML, not how it was spelled
    (`&quot;` and `"` are the same text, and the parser does not say which one was sent)."""
    if isinstance(value, dict):
        return {
            key: etree.tostring(etree.fromstring(item), method="c14n")
            if key == "div" and isinstance(item, str)
            else _canonical_divs(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_canonical_divs(item) for item in value]
    return value
