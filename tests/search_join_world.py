"""The stored world of tests/test_search_joins_differential.py: random resources of six
types that refer to each other in every form a client writes (relative, absolute under our
base, versioned, another server's, dangling, to resources updated or deleted since), stored
through the service with every version kept here, and their references resolved in Python
(what the fuzz's oracle follows, independently of the indexer)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.context import RequestContext
from app.fhir.search.indexer import Rows, index_rows
from app.fhir.service import FhirService
from tests import search_fuzz_data as data
from tests.test_search_differential import World

BASE = "http://joinfuzz.test/fhir"
CTX = RequestContext.system(BASE)
TAG_SYSTEM = "http://joinfuzz.test/run"

NAMES = ["Zoë", "Müller", "Smith", "Li", "Anne Marie"]
IDENTS = ["A1", "B2", "C3"]
CODES = ["8480-6", "8462-4", "29463-7"]
Key = tuple[str, str]  # (type, id)
Ident = tuple[str, str, int]  # (type, id, version)


# ------------------------------------------------------------------ the stored world


@dataclass
class Joined:
    """One seed's resources: every version's body (None: a deletion), the current one."""

    tag: str
    versions: dict[Key, dict[int, dict[str, Any] | None]] = field(default_factory=dict)
    rows: dict[Key, Rows] = field(default_factory=dict)  # of the current versions

    def current(self, key: Key) -> int | None:
        """The current version number; None if deleted or never stored."""
        found = self.versions.get(key)
        if not found:
            return None
        last = max(found)
        return last if found[last] is not None else None

    def live(self, rtype: str) -> list[str]:
        return [k[1] for k in self.versions if k[0] == rtype and self.current(k) is not None]

    def ids(self, rtype: str) -> list[str]:
        return [k[1] for k in self.versions if k[0] == rtype]

    def body(self, key: Key) -> dict[str, Any]:
        version = self.current(key)
        assert version is not None
        found = self.versions[key][version]
        assert found is not None
        return found

    def as_world(self) -> World:
        """The shape tests/test_search_differential.check_order reads sort values from."""
        world = World(self.tag)
        for (rtype, rid), rows in self.rows.items():
            world.rows.setdefault(rtype, {})[rid] = rows
            world.bodies.setdefault(rtype, {})[rid] = self.body((rtype, rid))
        return world


def ref(rng: random.Random, world: Joined, rtype: str) -> dict[str, str]:
    """A reference to one of the world's `rtype` resources, in one of the forms a client
    writes; now and then dangling or to another server."""
    ids = world.ids(rtype)
    rid = rng.choice(ids) if ids else "nope"
    form = rng.random()
    if form < 0.45 or not ids:
        text = f"{rtype}/{rid}"
    elif form < 0.6:
        text = f"{BASE}/{rtype}/{rid}"
    elif form < 0.75:
        text = f"{rtype}/{rid}/_history/{rng.choice([1, 1, 2, 3])}"
    elif form < 0.8:
        text = f"{BASE}/{rtype}/{rid}/_history/1"
    elif form < 0.9:
        text = f"{rtype}/nope-{rng.randint(1, 3)}"
    else:
        text = f"{data.OTHER_SERVER}/{rtype}/{rid}"
    return {"reference": text}


def some(rng: random.Random, chance: float, make: Any) -> Any:
    return make() if rng.random() < chance else None


def name(rng: random.Random) -> list[dict[str, Any]]:
    return [{"family": rng.choice(NAMES)} for _ in range(rng.randint(0, 2))]


def ident(rng: random.Random) -> list[dict[str, str]]:
    system = data.IDENTIFIER_SYSTEMS[0]
    return [{"system": system, "value": rng.choice(IDENTS)} for _ in range(rng.randint(0, 2))]


def code(rng: random.Random) -> dict[str, Any]:
    return {"coding": [{"system": data.LOINC, "code": rng.choice(CODES)}]}


SUBJECTS = ["Patient"] * 4 + ["Group"]  # Group: never stored here, so always dangling


def make(rng: random.Random, world: Joined, rtype: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A random `rtype` body referring to what the world holds so far."""
    body: dict[str, Any] = {"resourceType": rtype, "meta": meta}
    if rtype == "Organization":
        body |= {"name": rng.choice(NAMES), "identifier": ident(rng),
                 "partOf": some(rng, 0.6, lambda: ref(rng, world, "Organization"))}  # fmt: skip
    elif rtype == "Practitioner":
        body |= {"name": name(rng), "identifier": ident(rng)}
    elif rtype == "Patient":
        gp = [ref(rng, world, rng.choice(["Practitioner", "Organization"]))
              for _ in range(rng.randint(0, 2))]  # fmt: skip
        body |= {
            "name": name(rng), "identifier": ident(rng), "generalPractitioner": gp,
            "gender": some(rng, 0.8, lambda: rng.choice(["male", "female"])),
            "birthDate": some(rng, 0.8, lambda: data.date(rng, "date")),
            "managingOrganization": some(rng, 0.7, lambda: ref(rng, world, "Organization")),
        }  # fmt: skip
    elif rtype == "Encounter":
        body |= {
            "status": rng.choice(["planned", "finished"]),
            "class": {"system": data.ACT_CODE, "code": rng.choice(["AMB", "IMP"])},
            "subject": some(rng, 0.9, lambda: ref(rng, world, rng.choice(SUBJECTS))),
            "participant": [{"individual": ref(rng, world, "Practitioner")}
                            for _ in range(rng.randint(0, 2))],
            "serviceProvider": some(rng, 0.5, lambda: ref(rng, world, "Organization")),
            "period": some(rng, 0.7, lambda: data.period(rng)),
        }  # fmt: skip
    elif rtype == "Observation":
        performers = ["Practitioner", "Organization", "Patient"]
        body |= {
            "status": rng.choice(["final", "amended"]), "code": code(rng),
            "subject": some(rng, 0.9, lambda: ref(rng, world, rng.choice(SUBJECTS))),
            "encounter": some(rng, 0.6, lambda: ref(rng, world, "Encounter")),
            "performer": [ref(rng, world, rng.choice(performers))
                          for _ in range(rng.randint(0, 2))],
            "effectiveDateTime": some(rng, 0.8, lambda: data.date(rng)),
        }  # fmt: skip
    else:  # DiagnosticReport
        body |= {
            "status": rng.choice(["final", "preliminary"]), "code": code(rng),
            "subject": some(rng, 0.8, lambda: ref(rng, world, "Patient")),
            "result": [ref(rng, world, "Observation") for _ in range(rng.randint(0, 3))],
        }  # fmt: skip
    return data.pruned(body)


TYPES = ["Organization", "Practitioner", "Patient", "Encounter", "Observation", "DiagnosticReport"]
COUNTS = {"Organization": 4, "Practitioner": 3, "Patient": 7, "Encounter": 6, "Observation": 12,
          "DiagnosticReport": 4}  # fmt: skip


def build(service: FhirService, rng: random.Random) -> Joined:
    code_ = uuid.uuid4().hex
    world = Joined(f"{TAG_SYSTEM}|{code_}")
    meta = {"tag": [{"system": TAG_SYSTEM, "code": code_}]}
    for rtype in TYPES:  # referred-to types first
        for _ in range(COUNTS[rtype]):
            with service.unit_of_work(CTX, write=True) as uow:
                body = make(rng, world, rtype, meta)
                rid = service.create(uow, rtype, body).version.id
            world.versions[(rtype, rid)] = {1: body}
    keys = list(world.versions)
    for key in rng.sample(keys, len(keys) // 4):  # new versions, referring anew
        body = {**make(rng, world, key[0], meta), "id": key[1]}
        with service.unit_of_work(CTX, write=True) as uow:
            version = service.update(uow, key[0], key[1], body).version.version_id
        world.versions[key][version] = body
    for key in rng.sample(keys, len(keys) // 10):  # deleted: references to them dangle
        with service.unit_of_work(CTX, write=True) as uow:
            deleted = service.delete(uow, *key)
        assert deleted is not None
        world.versions[key][deleted.version_id] = None
        if rng.random() < 0.3:  # written again after its deletion: a version after a gap
            body = {**make(rng, world, key[0], meta), "id": key[1]}
            with service.unit_of_work(CTX, write=True) as uow:
                version = service.update(uow, key[0], key[1], body).version.version_id
            world.versions[key][version] = body
    for key in world.versions:
        if world.current(key) is not None:
            world.rows[key] = index_rows(key[0], key[1], {**world.body(key), "id": key[1]})
    return world


# ------------------------------------------------------------------ references, in Python


def resolve(text: str) -> Ident | tuple[str, str, None] | None:
    """(type, id, version or None) a reference names on this server; None for another
    server's URL."""
    if text.startswith(("http:", "https:")):
        if not text.startswith(BASE + "/"):
            return None
        text = text[len(BASE) + 1 :]
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        return parts[0], parts[1], int(parts[3])
    return parts[0], parts[1], None


def references(rtype: str, body: dict[str, Any]) -> list[tuple[set[str], str]]:
    """(the search parameters it is indexed under, reference text) for each reference of
    the body (R4's reference parameters for these elements; `patient` and `practitioner`
    are theirs `where(resolve() is T)`)."""

    def typed(text: str) -> str:
        found = resolve(text)
        return found[0] if found else text.split("/")[-2]

    found: list[tuple[set[str], str]] = []

    def add(params: set[str], node: Any) -> None:
        if isinstance(node, dict) and "reference" in node:
            found.append((params, node["reference"]))

    if rtype == "Organization":
        add({"partof"}, body.get("partOf"))
    elif rtype == "Patient":
        add({"organization"}, body.get("managingOrganization"))
        for node in body.get("generalPractitioner", []):
            add({"general-practitioner"}, node)
    elif rtype in ("Encounter", "Observation", "DiagnosticReport"):
        subject = body.get("subject")
        if subject:
            patient = {"patient"} if typed(subject["reference"]) == "Patient" else set()
            add({"subject"} | patient, subject)
    if rtype == "Encounter":
        for part in body.get("participant", []):
            node = part["individual"]
            doctor = {"practitioner"} if typed(node["reference"]) == "Practitioner" else set()
            add({"participant"} | doctor, node)
        add({"service-provider"}, body.get("serviceProvider"))
    elif rtype == "Observation":
        add({"encounter"}, body.get("encounter"))
        for node in body.get("performer", []):
            add({"performer"}, node)
    elif rtype == "DiagnosticReport":
        for node in body.get("result", []):
            add({"result"}, node)
    return found


def targets(world: Joined, key: Key, param: str, body: dict[str, Any] | None = None) -> list[Any]:
    """What `param` ("*": any) of the resource (of `body`: that version) names, resolved."""
    body = body if body is not None else world.body(key)
    named = [
        resolve(text)
        for params, text in references(key[0], body)
        if param in params or param == "*"
    ]
    return [n for n in named if n is not None]
