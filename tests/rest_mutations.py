"""Random mutations of FHIR requests for the REST fuzz test (tests/test_rest_fuzz.py).

A case is one HTTP request built from a valid seed (a resource, a Bundle, a JSON Patch, a
search) with one to three random changes: a JSON value replaced by another kind, a key
dropped or added, the body's bytes damaged, a header or query value garbled. Everything is
drawn from one `random.Random`, so a failing case is reproduced from its seed and number.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

JSON = "application/fhir+json"

# Values a mutation may put anywhere: each kind of JSON value, FHIR-shaped strings that are
# nearly right, and text that has broken parsers before (control characters, lone surrogates
# escaped, huge numbers, deep nesting).
_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1e308,
    -0.0,
    10**40,
    "",
    " ",
    "\u0000",
    "\x07bell",
    "\ud800",
    "\uffff",  # no XML character: a JSON write holding one could not be read as XML
    "é" * 3,
    "x" * 5000,
    "2024-13-45",
    "2024-02-30T25:61:00Z",
    "2024",
    "2024-01-01T10:00:00+14:01",
    "1e400",
    "Patient/",
    "Patient/../x",
    "urn:uuid:not-a-uuid",
    "#",
    "http://",
    [],
    [None],
    [[[]]],
    {},
    {"resourceType": "Patient"},
    {"extension": [{"url": "x"}]},
    {"reference": "Patient/does-not-exist"},
    {"value": "NaN", "unit": "mg"},
]

_QUERY_JUNK = [
    "",
    "|",
    "||",
    "$",
    ",",
    ",,",
    "\\",
    "\\,",
    ":",
    ".",
    "%",
    "%zz",
    "ge",
    "gt2024-99",
    "eb",
    "ap1e999",
    "5.4|http://unitsofmeasure.org|mg",
    "http://loinc.org|",
    "|8867-4",
    "Patient/",
    "Patient/x/_history/y",
    "é" * 3,
    "x" * 3000,
    "\u0000",
    "\u0001",
    "\ufffe",
    "-1",
    "0",
    "99999999999999999999",
    "NaN",
    "true",
    "²",  # str.isdigit() says yes, int() says no
    "٣",  # an Arabic-Indic three: int() takes it
    "1" * 5000,  # past int()'s 4,300 digits
]

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.3", "value": "fuzz-1"}],
    "name": [{"family": "Fuzz", "given": ["Ann", "B."]}],
    "telecom": [{"system": "phone", "value": "555-0100"}],
    "gender": "female",
    "birthDate": "1970-01-01",
    "address": [{"city": "Springfield", "postalCode": "12345"}],
    "extension": [
        {"url": "http://example.org/fuzz", "valueString": "x"},
        {"url": "http://example.org/fuzz-q", "valueQuantity": {"value": 1.50, "unit": "kg"}},
    ],
    "_birthDate": {"extension": [{"url": "http://example.org/t", "valueTime": "10:00:00"}]},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "HR"},
    "subject": {"reference": "Patient/PATIENT"},
    "effectivePeriod": {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T13:00:00+02:00"},
    "valueQuantity": {
        "value": 72.0,
        "unit": "/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
    "referenceRange": [{"low": {"value": 60}, "high": {"value": 100}}],
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {
                "value": 120,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }
    ],
}

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": "Patient/PATIENT"},
    "period": {"start": "2024-01-01"},
    "location": [{"location": {"display": "Ward 1"}}],
}

SEARCHES: dict[str, list[tuple[str, str]]] = {
    "Patient": [
        ("name", "fuzz"),
        ("family:exact", "Fuzz"),
        ("birthdate", "ge1960-01-01"),
        ("gender", "female"),
        ("identifier", "urn:oid:1.2.3|fuzz-1"),
        ("_id", "PATIENT"),
        ("_lastUpdated", "gt2000-01-01"),
        ("address-city:contains", "spring"),
        ("_has:Observation:subject:code", "8867-4"),
        ("_revinclude", "Observation:subject"),
        ("_sort", "-birthdate,name"),
        ("_count", "5"),
        ("_summary", "count"),
        ("_elements", "name,gender"),
        ("telecom:missing", "false"),
    ],
    "Observation": [
        ("subject", "Patient/PATIENT"),
        ("code", "http://loinc.org|8867-4"),
        ("date", "ge2024-01-01T00:00:00Z"),
        ("value-quantity", "gt60|http://unitsofmeasure.org|/min"),
        ("component-code-value-quantity", "http://loinc.org|8480-6$gt100"),
        ("subject:Patient.name", "fuzz"),
        ("subject.identifier", "urn:oid:1.2.3|fuzz-1"),
        ("code:text", "HR"),
        ("category:not", "laboratory"),
        ("_include", "Observation:subject"),
        ("_include:iterate", "Patient:general-practitioner"),
        ("_sort", "-date"),
        ("_count", "10"),
        ("status", "final,amended"),
        ("_total", "accurate"),
    ],
}

_HEADER_JUNK = {
    "If-Match": ['W/"1"', '"1"', "W/", "*", 'W/"-1"', 'W/"99999999999999999999"', 'W/"²"', ""],
    "If-None-Match": ['W/"1"', "*", "garbage"],
    "If-None-Exist": ["identifier=urn:oid:1.2.3|fuzz-1", "", "&&", "_id=%zz", "foo=bar", "x"],
    "Prefer": ["return=minimal", "return=OperationOutcome", "return=", "handling=strict", "x=y;z"],
    "Content-Type": [
        JSON,
        "application/json",
        "application/fhir+json; charset=latin-1",
        "text/plain",
        "application/json-patch+json",
        "application/fhir+xml",
        "",
        "multipart/form-data; boundary=x",
    ],
    "Accept": [JSON, "application/fhir+xml", "text/html", "*/*", "application/x-nope", ""],
    "If-Modified-Since": ["Sat, 01 Jan 2000 00:00:00 GMT", "yesterday", ""],
}


@dataclass
class Case:
    method: str
    path: str  # below the FHIR base, with its query string
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    wants_xml: bool = False  # the client asked for XML: every answer must be FHIR XML

    def describe(self) -> str:
        shown = (self.body or b"")[:600]
        return f"{self.method} {self.path[:300]} headers={self.headers} body={shown!r}"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON tree (the root excluded), as key/index tuples."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(item, (*prefix, index)))
    return found


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        tree = tree[step]
    return tree


def mutate_json(document: Any, rng: random.Random) -> Any:
    """One to three structural changes of a deep copy of `document`."""
    tree = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(tree)
        if not paths:
            return rng.choice(_ODD_VALUES)
        path = rng.choice(paths)
        parent, last = _parent(tree, path), path[-1]
        op = rng.randrange(6)
        if op == 0:  # another value, maybe another kind
            parent[last] = copy.deepcopy(rng.choice(_ODD_VALUES))
        elif op == 1:  # gone
            del parent[last]
        elif op == 2 and isinstance(parent, dict):  # a key FHIR does not know, or a near miss
            name = rng.choice(["unknownElement", f"{last}X", "_" + str(last), "resourceType", "id"])
            parent[name] = copy.deepcopy(rng.choice(_ODD_VALUES))
        elif op == 3:  # a single value where a list belongs and the other way round
            item = parent[last]
            parent[last] = item[0] if isinstance(item, list) and item else [item]
        elif op == 4:  # copied under itself: depth, repetition
            parent[last] = [copy.deepcopy(parent[last])] * rng.randint(2, 4)
        else:  # deep nesting
            nested: Any = parent[last]
            for _ in range(rng.choice([5, 60, 200])):
                nested = {"extension": [{"url": "http://x", "valueString": "y"}], "n": nested}
            parent[last] = nested
    return tree


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(out) + 1)
        op = rng.randrange(7)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            del out[pos:]
        elif op == 2:
            out[pos:pos] = rng.choice([b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b'"', b"{", b"]"])
        elif op == 3:
            out[pos:pos] = out[pos : pos + rng.randint(1, 80)]
        elif op == 4:
            del out[pos : pos + rng.randint(1, 20)]
        elif op == 5:
            out[pos:pos] = b'"value": 1' + b"0" * rng.choice([3, 400, 5000])
        else:  # nesting far deeper than any resource: a recursive parser's limit
            out[pos:pos] = b"[" * 20000
    return bytes(out)


def _dump(document: Any) -> bytes:
    # ensure_ascii: a lone surrogate cannot be UTF-8 text, but as a JSON escape it can be sent.
    return json.dumps(document, ensure_ascii=True).encode()


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe=':._-$')}={quote(v, safe='')}" for k, v in pairs)


class CaseMaker:
    """Builds cases against the resources `patient_id` names (created by the test)."""

    def __init__(self, rng: random.Random, patient_id: str, observation_id: str) -> None:
        self.rng = rng
        self.patient_id = patient_id
        self.observation_id = observation_id

    def _seed_resource(self) -> dict[str, Any]:
        seed = copy.deepcopy(self.rng.choice([PATIENT, OBSERVATION, ENCOUNTER]))
        text = json.dumps(seed).replace("PATIENT", self.patient_id)
        document: dict[str, Any] = json.loads(text)
        return document

    def case(self) -> Case:
        maker = self.rng.choice(
            [
                self.create,
                self.update,
                self.patch,
                self.bundle,
                self.search,
                self.validate,
                self.damaged_bytes,
                self.headers,
                self.odd_path,
            ]
        )
        return maker()

    def create(self) -> Case:
        body = mutate_json(self._seed_resource(), self.rng)
        rtype = body.get("resourceType") if isinstance(body, dict) else None
        path = rtype if isinstance(rtype, str) and rtype.isalpha() else "Patient"
        return Case("POST", path, {"Content-Type": JSON}, _dump(body))

    def update(self) -> Case:
        body = mutate_json(self._seed_resource(), self.rng)
        rtype = body.get("resourceType") if isinstance(body, dict) else None
        rtype = rtype if isinstance(rtype, str) and rtype.isalpha() else "Patient"
        rid = self.rng.choice([f"fuzz-{self.rng.randrange(10**6)}", self.patient_id, "a" * 64])
        if isinstance(body, dict) and self.rng.random() < 0.7:
            body["id"] = rid
        return Case("PUT", f"{rtype}/{rid}", {"Content-Type": JSON}, _dump(body))

    def patch(self) -> Case:
        operations: list[Any] = [
            {"op": "replace", "path": "/gender", "value": "male"},
            {"op": "add", "path": "/name/0/given/-", "value": "C"},
            {"op": "test", "path": "/birthDate", "value": "1970-01-01"},
            {"op": "move", "from": "/telecom/0", "path": "/telecom/1"},
            {"op": "remove", "path": "/address"},
        ]
        body = mutate_json(operations, self.rng)
        return Case(
            "PATCH",
            f"Patient/{self.patient_id}",
            {"Content-Type": "application/json-patch+json"},
            _dump(body),
        )

    def bundle_document(self) -> dict[str, Any]:
        """A valid batch or transaction: two creates linked by urn:uuid, a read, an update."""
        entries = []
        for i, resource in enumerate([PATIENT, OBSERVATION]):
            document = json.loads(json.dumps(resource).replace("Patient/PATIENT", "urn:uuid:p-0"))
            entries.append(
                {
                    "fullUrl": "urn:uuid:p-0" if i == 0 else f"urn:uuid:o-{i}",
                    "resource": document,
                    "request": {"method": "POST", "url": resource["resourceType"]},
                }
            )
        entries.append({"request": {"method": "GET", "url": f"Patient/{self.patient_id}"}})
        entries.append(
            {
                "resource": {**PATIENT, "id": self.patient_id},
                "request": {"method": "PUT", "url": f"Patient/{self.patient_id}"},
            }
        )
        kind = self.rng.choice(["transaction", "batch"])
        return {"resourceType": "Bundle", "type": kind, "entry": entries}

    def bundle(self) -> Case:
        body = _dump(mutate_json(self.bundle_document(), self.rng))
        return Case("POST", "", {"Content-Type": JSON}, body)

    def search(self) -> Case:
        rtype = self.rng.choice(list(SEARCHES))
        pairs = [
            (name, value.replace("PATIENT", self.patient_id))
            for name, value in self.rng.sample(SEARCHES[rtype], self.rng.randint(1, 4))
        ]
        for _ in range(self.rng.randint(1, 3)):
            i = self.rng.randrange(len(pairs))
            name, value = pairs[i]
            op = self.rng.randrange(5)
            if op == 0:
                value = self.rng.choice(_QUERY_JUNK)
            elif op == 1:
                value = value + self.rng.choice(_QUERY_JUNK)
            elif op == 2:
                name = name + self.rng.choice([":", ":exact", ":missing", ":not", ":foo", ".x"])
            elif op == 3:
                name = self.rng.choice(["", "_", "__", "x" * 300, "_has", "_has:", "subject."])
            else:
                pairs.append((name, value))
            pairs[i] = (name, value)
        method = self.rng.choice(["GET", "GET", "POST"])
        if method == "POST":
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            return Case("POST", f"{rtype}/_search", form, _query(pairs).encode())
        return Case("GET", f"{rtype}?{_query(pairs)}")

    def validate_document(self) -> Any:
        """A resource to $validate, bare or as the `resource` of a Parameters."""
        body: Any = self._seed_resource()
        if self.rng.random() < 0.5:
            body = {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": body}],
            }
            body["parameter"].append({"name": "mode", "valueCode": "create"})
        return body

    def validate_path(self) -> str:
        return f"{self.rng.choice(['Patient', 'Observation', 'Encounter'])}/$validate"

    def validate(self) -> Case:
        document, path = self.validate_document(), self.validate_path()
        return Case("POST", path, {"Content-Type": JSON}, _dump(mutate_json(document, self.rng)))

    def damaged_bytes(self) -> Case:
        data = mutate_bytes(_dump(self._seed_resource()), self.rng)
        method, path = self.rng.choice(
            [("POST", "Patient"), ("PUT", f"Patient/{self.patient_id}"), ("POST", "")]
        )
        return Case(method, path, {"Content-Type": JSON}, data)

    def headers(self) -> Case:
        chosen = self.rng.sample(list(_HEADER_JUNK), self.rng.randint(1, 3))
        headers = {name: self.rng.choice(_HEADER_JUNK[name]) for name in chosen}
        headers.setdefault("Content-Type", JSON)
        method, path, body = self.rng.choice(
            [
                ("POST", "Patient", _dump(self._seed_resource())),
                ("PUT", f"Patient/{self.patient_id}", _dump({**PATIENT, "id": self.patient_id})),
                ("GET", f"Patient/{self.patient_id}", None),
                ("GET", f"Observation/{self.observation_id}/_history/1", None),
                ("DELETE", "Observation?code=http://loinc.org|none-such", None),
                ("GET", "Patient?name=fuzz", None),
            ]
        )
        return Case(method, path, headers, body)

    def odd_path(self) -> Case:
        path = self.rng.choice(
            [
                "Patient/../Observation",
                "Patient/%00",
                "Patient/%01",
                "Patient/%EF%BF%BF",
                "Patient/" + "a" * 500,
                "Patient//x",
                f"Patient/{self.patient_id}/_history/x",
                f"Patient/{self.patient_id}/_history/-1",
                f"Patient/{self.patient_id}/_history/99999999999999999999",
                f"Patient/{self.patient_id}/$everything?_count=-5",
                f"Patient/{self.patient_id}/$everything?start=garbage",
                "Patient/$nope",
                "$validate",
                "_history?_since=notadate",
                "_history?_count=abc",
                "?_type=Patient,Nope",
                "?_type=",
                "metadata?mode=x",
                "Observation/_history?_at=2024",
                "NotAType/1",
                "patient/1",
                "Patient/1/_history/1/extra",
            ]
        )
        return Case(
            self.rng.choice(["GET", "DELETE", "POST", "PUT"]), path, {"Content-Type": JSON}, b"{}"
        )


# --------------------------------------------------------------------------- sending, checking


def make_targets(http: httpx.Client) -> tuple[str, str]:
    """A Patient and an Observation the cases name (updates, patches, searches, reads)."""
    headers = {"Content-Type": JSON}
    made = http.post("/Patient", content=json.dumps(PATIENT), headers=headers)
    assert made.status_code == 201, made.text
    patient_id = made.json()["id"]
    observation = json.loads(json.dumps(OBSERVATION).replace("PATIENT", patient_id))
    made = http.post("/Observation", content=json.dumps(observation), headers=headers)
    assert made.status_code == 201, made.text
    return patient_id, made.json()["id"]


def send(http: httpx.Client, case: Case) -> httpx.Response:
    path = "/" + case.path if case.path else ""
    headers = {name: value.encode() for name, value in case.headers.items()}  # UTF-8 bytes
    return http.request(case.method, path, headers=headers, content=case.body)


def answer_problem(response: httpx.Response) -> str | None:
    """What is wrong with this answer, or None."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:800]}"
    if response.status_code < 400 or response.status_code == 406:
        # 406: the client accepts no format we write, so the OperationOutcome may be sent in
        # JSON anyway or not at all; its status is the answer.
        return None
    if "xml" in response.headers.get("content-type", ""):  # the client asked for XML
        if b"<OperationOutcome" in response.content and b"<issue>" in response.content:
            return None
        return f"status {response.status_code}: {response.text[:300]!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"status {response.status_code} without a JSON body: {response.text[:300]!r}"
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return f"status {response.status_code} answered with {str(body)[:300]}"
    if not body.get("issue"):
        return f"status {response.status_code}: an OperationOutcome without issues"
    return None
