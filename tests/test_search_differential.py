"""Differential fuzz of search: the SQL the engine runs against the in-memory judge.

Search criteria are planned once (criteria.plan) and then answered two ways: as SQL over the
index tables (sql.py, engine.py) and in Python on one resource's index rows (in_memory.py,
which conditional references in a transaction use). Random but valid Patients,
Observations, Encounters and RiskAssessments are stored through the service, random
criteria of every kind the judge takes are searched (string, token, date, number,
quantity, reference, uri, composite; modifiers; several values OR-ed, several parameters
ANDed; now and then a system search of several types by the parameters they share, or a
search in one Patient's compartment, judged with the compartment's references), and
for each search the resources the database finds must be exactly those `matches_all` is
True for (a search it answers None is skipped). A bug in either side shows as a
disagreement. Some searches are read in small pages (sorted or not), following the next
cursors: each resource on one page only, and in the sort's order (from the index rows).

What it found so far (docs/search.md): prefixes ending in U+10FFFF or U+D7FF (a 500),
SQLite's case-blind LIKE taking `…/FHIR/Patient/1` for one of ours, and a number sort
whose next page was refused when a page ended on a resource without the number.

Seeded and reproducible. By default a few seeds run in a few seconds; for more:
  MEDISENTINEL_DIFFFUZZ_SEEDS=1-200 (or 3,7,11)   seeds, one test each
  MEDISENTINEL_DIFFFUZZ_QUERIES=300               searches per seed
  MEDISENTINEL_DIFFFUZZ_RESOURCES=12              resources per type and seed
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.auth.compartment import patient_compartment
from app.context import RequestContext
from app.db import create_db_engine
from app.errors import InvalidRequest
from app.fhir.hooks import Pipeline
from app.fhir.search import SearchParams
from app.fhir.search.criteria import plan
from app.fhir.search.engine import SORT_COLUMN
from app.fhir.search.in_memory import matches_all
from app.fhir.search.indexer import Rows, index_rows
from app.fhir.search.params import lookup
from app.fhir.service import FhirService
from app.fhir.tables import INDEX_TABLES, search_reference
from tests import search_fuzz_data as data
from tests.seeds import seeds_from_env

BASE = "http://difffuzz.test/fhir"
CTX = RequestContext.system(BASE)
TAG_SYSTEM = "http://difffuzz.test/run"


def _seeds() -> list[int]:
    return seeds_from_env("MEDISENTINEL_DIFFFUZZ_SEEDS", "1,2,3")


QUERIES = int(os.environ.get("MEDISENTINEL_DIFFFUZZ_QUERIES", "150"))
RESOURCES = int(os.environ.get("MEDISENTINEL_DIFFFUZZ_RESOURCES", "10"))


# Named apart from the many `service` parameters of the joins fuzz, which imports it.
@pytest.fixture(scope="module", name="service")
def search_service(database_url: str) -> Iterator[FhirService]:
    db = create_db_engine(database_url, pool_size=2)
    yield FhirService(db, Pipeline())
    db.dispose()


@dataclass
class World:
    """One seed's stored resources: by type, each id's body and the rows it is indexed by."""

    tag: str  # the `_tag` search value that confines a search to this world
    bodies: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    rows: dict[str, dict[str, Rows]] = field(default_factory=dict)

    def ids(self, rtype: str) -> list[str]:
        return list(self.bodies.get(rtype, {}))


def build_world(service: FhirService, rng: random.Random) -> World:
    code = uuid.uuid4().hex
    world = World(f"{TAG_SYSTEM}|{code}")
    tag = {"system": TAG_SYSTEM, "code": code}
    makers: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("Patient", lambda: data.patient(rng, BASE, tag, ORGS)),
        ("Observation", lambda: data.observation(rng, BASE, tag, world.ids("Patient"))),
        ("Encounter", lambda: data.encounter(rng, BASE, tag, world.ids("Patient"))),
        ("RiskAssessment", lambda: data.risk(rng, BASE, tag, world.ids("Patient"))),
    ]
    for rtype, make in makers:  # Patients first: the others refer to them
        with service.unit_of_work(CTX, write=True) as uow:
            for _ in range(RESOURCES):
                body = make()
                rid = service.create(uow, rtype, body).version.id
                world.bodies.setdefault(rtype, {})[rid] = body
                world.rows.setdefault(rtype, {})[rid] = index_rows(rtype, rid, {**body, "id": rid})
    return world


# ------------------------------------------------------------------ random criteria

Value = Callable[[random.Random, str, World], str]  # (rng, modifier, world) -> one value


@dataclass(frozen=True)
class Param:
    name: str
    modifiers: tuple[str, ...]  # "" for none; one is drawn per criterion
    value: Value


def strings(pool: list[str]) -> Value:
    return lambda rng, modifier, _w: data.string_value(rng, modifier, pool)


def tokens(systems: list[str | None], codes: list[str], texts: list[str] | None = None) -> Value:
    def value(rng: random.Random, modifier: str, _w: World) -> str:
        if modifier == "text":
            return data.escaped(data.text_variant(rng, rng.choice(texts or data.CODE_TEXTS)))
        if modifier == "of-type":
            code = rng.choice(["MR", "SS", "XX"])
            return f"{data.V2_0203}|{code}|{data.escaped(rng.choice(codes))}"
        return data.token_value(rng, systems, codes)

    return value


def dates(rng: random.Random, _modifier: str, _w: World) -> str:
    return data.date_value(rng)


def numbers(pool: list[str]) -> Value:
    return lambda rng, _m, _w: data.number_value(rng, pool)


def quantities(units: list[tuple[str | None, str | None, str | None]]) -> Value:
    return lambda rng, _m, _w: data.quantity_value(rng, units)


def references(target: str, fallback: list[str]) -> Value:
    """Every form a reference is searched by; ids of the world's resources where it has
    them (its Patients), else of `fallback`."""

    def value(rng: random.Random, modifier: str, world: World) -> str:
        rid = rng.choice(world.ids(target) or fallback)
        if modifier == "identifier":
            ident = data.escaped(rng.choice(data.IDENTIFIER_VALUES))
            system = rng.choice([data.IDENTIFIER_SYSTEMS[0], "", "http://elsewhere.org"])
            return rng.choice([ident, f"{system}|{ident}"])
        if modifier:  # :Type
            return rng.choice([rid, f"{target}/{rid}", f"{rid}/_history/1"])
        return rng.choice([
            rid, f"{target}/{rid}", f"{BASE}/{target}/{rid}", f"{data.OTHER_SERVER}/{target}/{rid}",
            f"{target}/{rid}/_history/2", "Group/g1", f"{BASE}/{target}/{rid}/_history/1",
        ])  # fmt: skip

    return value


def uris(rng: random.Random, modifier: str, _w: World) -> str:
    uri = rng.choice([*data.PROFILES, data.PROFILE, f"{data.PROFILE}/", f"{data.PROFILE}/a/"])
    return data.escaped(uri)


def composite(first: Value, second: Value) -> Value:
    return lambda rng, _m, w: f"{first(rng, '', w)}${second(rng, '', w)}"


def ids(rng: random.Random, _modifier: str, world: World) -> str:
    return rng.choice([*(i for ids in world.bodies.values() for i in ids), "nope"])


STRING = ("", "", "exact", "contains")
TOKEN = ("", "", "not", "text")
IDENT = ("", "", "not", "text", "of-type")
CONCEPT = tokens(data.CODE_SYSTEMS, data.CODES)
IDENTIFIER = tokens(data.IDENTIFIER_SYSTEMS, data.IDENTIFIER_VALUES, ["Medical", "social"])
STATUS = tokens([None], ["final", "amended", "finished", "planned"])
SUBJECT = references("Patient", ["p1"])
SUBJECT_MODIFIERS = ("", "", "", "Patient", "identifier")
QUANTITY = quantities(data.UNITS)
ORGS = ["o1", "o2"]
COMMON = [Param("_profile", ("", "below", "above"), uris), Param("_id", ("", "not"), ids)]

PARAMS: dict[str, list[Param]] = {
    "Patient": [
        *(Param(name, STRING, strings(data.TEXTS))
          for name in ("family", "given", "name", "address-city")),
        Param("identifier", IDENT, IDENTIFIER),
        Param("telecom", TOKEN, tokens(["phone", "email", None], ["555-1234", "a@b.org"])),
        Param("phone", ("", "not"), tokens([None], ["555-1234", "a@b.org"])),
        Param("gender", ("", "not"), tokens([data.GENDER, None], ["male", "female", "other"])),
        Param("active", ("", "not"), lambda rng, _m, _w: rng.choice(["true", "false"])),
        Param("birthdate", ("",), dates), Param("death-date", ("",), dates),
        Param("organization", ("", "Organization", "identifier"), references("Organization", ORGS)),
        Param("general-practitioner", ("",), references("Practitioner", ["a"])),
        *COMMON,
    ],
    "Observation": [
        *(Param(name, TOKEN, CONCEPT)
          for name in ("code", "category", "value-concept", "combo-code", "component-code")),
        Param("status", ("", "not"), STATUS), Param("identifier", IDENT, IDENTIFIER),
        Param("subject", SUBJECT_MODIFIERS, SUBJECT), Param("patient", SUBJECT_MODIFIERS, SUBJECT),
        Param("date", ("",), dates), Param("value-date", ("",), dates),
        *(Param(name, ("",), QUANTITY)
          for name in ("value-quantity", "component-value-quantity", "combo-value-quantity")),
        Param("value-string", STRING, strings(data.TEXTS)),
        *(Param(name, ("",), composite(CONCEPT, QUANTITY))
          for name in ("code-value-quantity", "component-code-value-quantity",
                       "combo-code-value-quantity")),
        *(Param(name, ("",), composite(CONCEPT, CONCEPT))
          for name in ("code-value-concept", "component-code-value-concept")),
        Param("code-value-date", ("",), composite(CONCEPT, dates)),
        Param("code-value-string", ("",), composite(CONCEPT, strings(data.TEXTS))),
        *COMMON,
    ],
    "Encounter": [
        Param("status", ("", "not"), STATUS),
        Param("class", ("", "not"), tokens([data.ACT_CODE, None], ["AMB", "IMP", "EMER"])),
        Param("type", TOKEN, CONCEPT), Param("identifier", IDENT, IDENTIFIER),
        Param("subject", SUBJECT_MODIFIERS, SUBJECT), Param("patient", SUBJECT_MODIFIERS, SUBJECT),
        Param("date", ("",), dates), Param("length", ("",), quantities(data.DURATIONS)),
        Param("participant", ("", "Practitioner"), references("Practitioner", ["a", "b"])),
        *COMMON,
    ],
    "RiskAssessment": [
        Param("probability", ("",), numbers(data.SEARCH_PROBABILITIES)),
        Param("risk", TOKEN, CONCEPT), Param("identifier", IDENT, IDENTIFIER),
        Param("subject", SUBJECT_MODIFIERS, SUBJECT), *COMMON,
    ],
}  # fmt: skip


def criterion(rng: random.Random, param: Param, world: World) -> str:
    """`name[:modifier]=value[,value...]`: a few values OR-ed, or :missing."""
    if rng.random() < 0.08 and param.name != "_id":
        return f"{param.name}:missing={rng.choice(['true', 'false'])}"
    modifier = rng.choice(param.modifiers)
    count = rng.choice([1, 1, 1, 2, 3])
    values = ",".join(param.value(rng, modifier, world) for _ in range(count))
    return f"{param.name}{':' + modifier if modifier else ''}={values}"


def query(rng: random.Random, rtype: str, world: World) -> str:
    """One to three criteria, ANDed (the same parameter twice now and then)."""
    chosen = [rng.choice(PARAMS[rtype]) for _ in range(rng.choice([1, 1, 2, 2, 3]))]
    return "&".join(criterion(rng, param, world) for param in chosen)


# ------------------------------------------------------------------ comparing


@dataclass
class Tally:
    compared: int = 0
    refused: int = 0
    not_judged: int = 0
    nonempty: int = 0
    disagreements: list[str] = field(default_factory=list)


Found = set[tuple[str, str]]  # (type, id)


def judged(world: World, rtypes: list[str], q: str) -> Found | None:
    """What matches_all takes for the query; None if it cannot judge one of them. Raises
    InvalidRequest for a query the planner refuses."""
    params = SearchParams.parse_query(q, rtypes[0], strict=True)  # as the router does
    plans = [plan(c, BASE) for c in params.criteria]
    found = set()
    for rtype in rtypes:
        for rid, rows in world.rows[rtype].items():
            answer = matches_all(plans, rid, rows)
            if answer is None:
                return None
            if answer:
                found.add((rtype, rid))
    return found


SORTS = {
    "Patient": ["family", "-birthdate", "given,-_id", "death-date", "-_lastUpdated"],
    "Observation": ["date", "-date", "value-quantity", "code,-date", "status"],
    "Encounter": ["-date", "length", "class"],
    "RiskAssessment": ["probability", "-probability"],
    "system": ["_id", "-_lastUpdated", "-_id"],
}


def searched(
    service: FhirService,
    world: World,
    rtypes: list[str],
    q: str,
    shaping: str = "_count=1000",
    compartment: str | None = None,
) -> Found:
    """What the search finds, page by page (keyset paging, engine.py): no page larger than
    asked for, no resource on two pages. Several types: a system search (`_type`)."""
    count = int(shaping.split("_count=")[1].split("&")[0])
    found: list[tuple[str, str]] = []
    page = ""
    for _ in range(sum(len(world.bodies[t]) for t in rtypes) + 2):
        full = f"{q}&_tag={world.tag}&{shaping}{page}"
        with service.unit_of_work(CTX, write=False) as uow:
            params = SearchParams.parse_query(full, rtypes[0], strict=True)
            if compartment is not None:  # GET /Patient/<id>/<type>?...
                confined = ("Patient", compartment)
                result = service.search(uow, rtypes[0], params, compartment=confined)
            elif len(rtypes) == 1:
                result = service.search(uow, rtypes[0], params)
            else:
                result = service.search(uow, None, params, types=rtypes)
        assert len(result.versions) <= count
        found += [(v.resource_type, v.id) for v in result.versions]
        if result.next_page is None:
            assert len(found) == len(set(found)), (shaping, found)
            check_order(world, found, shaping)
            return set(found)
        page = f"&_page={result.next_page}"
    raise AssertionError(f"{rtypes}?{q}&{shaping}: paging does not end")


def sort_value(world: World, rtype: str, rid: str, key: str) -> Any:
    """What a resource sorts by on `key` (engine._sort_key): the least of its values
    ascending, the greatest descending (a date's start, or its end); None without one."""
    name, descending = key.lstrip("-"), key.startswith("-")
    if name == "_id":
        return rid
    kind = lookup(rtype, name)[0]
    column = ("high" if descending else "low") if kind == "date" else SORT_COLUMN[kind]
    rows = world.rows[rtype][rid].get(INDEX_TABLES[kind], ())
    found = [r[column] for r in rows if r["param"] == name and r.get(column) is not None]
    return (max(found) if descending else min(found)) if found else None


def check_order(world: World, found: list[tuple[str, str]], shaping: str) -> None:
    """Each resource after the one before it in the sort's order; without a value last."""
    keys = shaping.partition("_sort=")[2].split("&")[0].split(",") if "_sort=" in shaping else []
    if not keys or "-_lastUpdated" in keys:  # _lastUpdated is no index row
        return
    for before, after in zip(found, found[1:], strict=False):
        for key in keys:
            a, b = (sort_value(world, *f, key) for f in (before, after))
            if a == b:
                continue
            assert a is not None, (shaping, before, after, key)  # a missing value is last
            if b is not None:
                assert (a < b) != key.startswith("-"), (shaping, before, a, after, b)
            break


def shaping(rng: random.Random, rtypes: list[str]) -> str:
    """Mostly one page; now and then small pages, sorted or not."""
    if rng.random() < 0.7:
        return "_count=1000"
    sorts = SORTS[rtypes[0] if len(rtypes) == 1 else "system"]
    sort = f"&_sort={rng.choice(sorts)}" if rng.random() < 0.7 else ""
    return f"_count={rng.choice([1, 2, 3])}{sort}"


def in_compartment(rtype: str, rid: str, rows: Rows, patient: str) -> bool:
    """In Patient/<patient>'s compartment (R4 CompartmentDefinition, compartments.py): the
    Patient itself, or a resource whose compartment parameters refer to it (relative, or
    absolute under our base)."""
    params = patient_compartment().get(rtype, ())
    return (rtype, rid) == ("Patient", patient) or any(
        row["param"] in params
        and (row.get("target_type"), row.get("target_id")) == ("Patient", patient)
        and (row.get("url") is None or row["url"].startswith(f"{BASE}/"))
        for row in rows.get(search_reference, ())
    )


def compare(
    service: FhirService,
    world: World,
    rtypes: list[str],
    q: str,
    tally: Tally,
    shape: str,
    compartment: str | None = None,
) -> None:
    try:
        expected = judged(world, rtypes, q)
        if expected is not None and compartment is not None:
            rows = world.rows[rtypes[0]]
            expected = {f for f in expected if in_compartment(*f, rows[f[1]], compartment)}
    except InvalidRequest:
        tally.refused += 1
        with pytest.raises(InvalidRequest):  # the search refuses it as well
            searched(service, world, rtypes, q)
        return
    if expected is None:
        tally.not_judged += 1
        return
    found = searched(service, world, rtypes, q, shape, compartment)
    tally.compared += 1
    tally.nonempty += bool(found)
    if found != expected:
        detail = "".join(
            f"\n    {side} {rtype}/{rid}: {world.bodies[rtype][rid]}"
            for side, ids in (("SQL only", found - expected), ("in memory only", expected - found))
            for rtype, rid in sorted(ids)
        )
        where = f"Patient/{compartment}/" if compartment else ""
        tally.disagreements.append(f"{where}{','.join(rtypes)}?{q}&{shape}{detail}")


def system_query(rng: random.Random, world: World) -> tuple[list[str], str]:
    """A search of several types (`_type=A,B`) by parameters they share."""
    rtypes = rng.sample(sorted(PARAMS), rng.randint(2, len(PARAMS)))
    chosen = [rng.choice(COMMON) for _ in range(rng.choice([1, 1, 2]))]
    return rtypes, "&".join(criterion(rng, param, world) for param in chosen)


@pytest.mark.parametrize("seed", _seeds())
def test_sql_and_in_memory_judge_agree(service: FhirService, seed: int) -> None:
    rng = random.Random(seed)
    world = build_world(service, rng)
    tally = Tally()
    for _ in range(QUERIES):
        compartment = None
        if rng.random() < 0.1:
            rtypes, q = system_query(rng, world)
        else:
            rtypes = [rng.choice(list(PARAMS))]
            q = query(rng, rtypes[0], world)
            if rng.random() < 0.15:  # a compartment search, confined to one of our Patients
                compartment = rng.choice(world.ids("Patient"))
        compare(service, world, rtypes, q, tally, shaping(rng, rtypes), compartment)
    shown = "\n".join(tally.disagreements[:10])
    assert not tally.disagreements, f"seed {seed}: {len(tally.disagreements)} disagree\n{shown}"
    # not vacuous: most searches are judged, and some find something
    assert tally.compared > QUERIES // 2, tally
    assert tally.nonempty > QUERIES // 10, tally
