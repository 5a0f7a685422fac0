"""ADT^A40 moves what was filed under the retired Patient to the survivor (hl7_adapters/
repoint.py): real ER7 through the real mapping, applier and door, on the live server's
database; the results read back over the FHIR API."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from hl7_adapters.er7 import parse_message
from hl7_adapters.feeds import feed_identity
from hl7_adapters.ingest import Hl7Ingest
from hl7_adapters.locks import lock_keys
from hl7_adapters.mapping import map_message
from hl7_adapters.repoint import MAX_MOVED, repointed
from tests.conftest import LiveServer
from tests.test_hl7_ingest import err_fields, msa, rows_for, search, unique_id
from tests.test_hl7_integrity import (
    AUTHORITY,
    Send,
    engine,
    er7,
    identity,
    merge,
    msh,
    patients,
    pid,
    result,
    send,
)

MOVED_TYPES = (
    "Encounter", "RelatedPerson", "AllergyIntolerance", "DiagnosticReport", "Observation",
)  # fmt: skip


def admission(control: str, mrn: str, visit: str) -> bytes:
    """An A01 with a visit, a next of kin and an allergy: an Encounter, a RelatedPerson and an
    AllergyIntolerance of the patient."""
    return er7(
        msh("ADT^A01^ADT_A01", control),
        "EVN|A01|20240601100000+0000",
        pid(mrn),
        "NK1|1|Doe^Sam|SPO^Spouse^HL70063",
        "PV1|1|I|" + "|" * 16 + f"{visit}^^^{AUTHORITY}^VN",
        "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives",
    )


def patient_id(client: httpx.Client, mrn: str) -> str:
    [found] = patients(client, mrn)
    return str(found["id"])


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    created = client.post(f"/{body['resourceType']}", json=body)
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def read(client: httpx.Client, rtype: str, rid: str) -> dict[str, Any]:
    found = client.get(f"/{rtype}/{rid}")
    assert found.status_code == 200, found.text
    return found.json()  # type: ignore[no-any-return]


def ids_for(client: httpx.Client, rtype: str, patient: str) -> set[str]:
    return {r["id"] for r in search(client, rtype, patient=patient, _count="100")}


def filed_under(client: httpx.Client, patient: str) -> dict[str, set[str]]:
    return {rtype: ids_for(client, rtype, patient) for rtype in MOVED_TYPES}


def message_provenance(client: httpx.Client, engine: Engine, control: str) -> dict[str, Any]:
    [row] = rows_for(engine, control)
    return read(client, "Provenance", row.provenance_id)


def test_a40_moves_every_referrer_of_the_retired_patient_to_the_survivor(
    send: Send, client: httpx.Client, engine: Engine, live_server: LiveServer
) -> None:
    old, new, visit, order = unique_id("O"), unique_id("N"), unique_id("V"), unique_id("F")
    first = unique_id()
    assert msa(send(admission(first, old, visit)))[0] == "AA"
    assert msa(send(result(unique_id(), old, order, visit)))[0] == "AA"
    assert msa(send(admission(unique_id(), new, unique_id("V"))))[0] == "AA"
    retired, survivor = patient_id(client, old), patient_id(client, new)
    before = filed_under(client, retired)
    assert all(len(before[t]) == 1 for t in MOVED_TYPES), before
    survivors_own = filed_under(client, survivor)
    base = live_server.base_url
    # Written over REST: an absolute reference under our base, a versioned one, another
    # server's Patient of the same id (not ours: stays), and a type the feed cannot write.
    absolute = create(client, {
        "resourceType": "Condition", "subject": {"reference": f"{base}/Patient/{retired}"},
        "code": {"text": "absolute"},
    })  # fmt: skip
    versioned = create(client, {
        "resourceType": "Observation", "status": "final", "code": {"text": "versioned"},
        "subject": {"reference": f"Patient/{retired}/_history/1"},
        "performer": [{"reference": f"http://other.example/fhir/Patient/{retired}"}],
    })  # fmt: skip
    flag = create(client, {
        "resourceType": "Flag", "status": "active", "code": {"text": "falls risk"},
        "subject": {"reference": f"Patient/{retired}"},
    })  # fmt: skip

    control = unique_id()
    ack = send(merge(control, new, old))
    assert msa(ack) == ("AA", control)
    # the Flag stays (the feed's grant has no Flag scope), and the AA says so
    assert err_fields(ack) == [("MRG^1^1", "207", "W")]
    assert "1 Flag resources still refer" in ack.decode()

    after = filed_under(client, survivor)
    before["Observation"].add(versioned["id"])
    for rtype in MOVED_TYPES:
        assert after[rtype] == survivors_own[rtype] | before[rtype], rtype
    assert filed_under(client, retired) == {t: set() for t in MOVED_TYPES}
    assert ids_for(client, "Condition", survivor) >= {absolute["id"]}
    assert ids_for(client, "Condition", retired) == set()
    assert ids_for(client, "Flag", retired) == {flag["id"]}

    # each moved resource is a new version; its history keeps where it was
    [moved_obs] = before["Observation"] - {versioned["id"]}
    obs = read(client, "Observation", moved_obs)
    assert obs["meta"]["versionId"] == "2"
    assert obs["subject"] == {"reference": f"Patient/{survivor}"}
    old_version = read(client, "Observation", f"{moved_obs}/_history/1")
    assert old_version["subject"] == {"reference": f"Patient/{retired}"}
    history = client.get(f"/Observation/{moved_obs}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    # ... audited as an update by the feed, like any
    audits = search(client, "AuditEvent", entity=f"Observation/{moved_obs}", _count="100")
    updates = [a for a in audits if a["action"] == "U"]
    assert [a["agent"][0]["name"] for a in updates] == ["hl7-test:XAPP"]
    entities = [e.get("what", {}).get("reference") for e in updates[0]["entity"]]
    assert f"Observation/{moved_obs}/_history/2" in entities
    assert f"Patient/{survivor}" in entities  # whose data it now is
    # the forms are kept: absolute stays absolute, versioned names the survivor's version
    assert read(client, "Condition", absolute["id"])["subject"] == {
        "reference": f"{base}/Patient/{survivor}"
    }
    survivor_now = read(client, "Patient", survivor)
    moved_versioned = read(client, "Observation", versioned["id"])
    assert moved_versioned["subject"] == {
        "reference": f"Patient/{survivor}/_history/{survivor_now['meta']['versionId']}"
    }
    assert moved_versioned["performer"] == versioned["performer"]  # another server's
    # the Patient links are the merge's own, not rewritten
    assert survivor_now["link"] == [
        {"other": {"reference": f"Patient/{retired}"}, "type": "replaces"}
    ]
    retired_now = read(client, "Patient", retired)
    assert retired_now["link"] == [
        {"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}
    ]

    # the message's Provenance lists every version it wrote, the moved ones included
    targets = {t["reference"] for t in message_provenance(client, engine, control)["target"]}
    moved = [f"{rtype}/{rid}/_history/2" for rtype in MOVED_TYPES for rid in before[rtype]]
    moved.append(f"Condition/{absolute['id']}/_history/2")
    assert set(moved) <= targets
    # earlier Provenance is history: it still names the retired Patient's version it wrote
    first_targets = message_provenance(client, engine, first)["target"]
    assert {"reference": f"Patient/{retired}/_history/1"} in first_targets


def test_a_resent_a40_moves_nothing_twice(send: Send, client: httpx.Client, engine: Engine) -> None:
    """The same A40 delivered again (MSH-10 duplicate) gets its first ACK and writes
    nothing; sent again with a new MSH-10 it is applied, finds nothing left to move and
    writes no version."""
    old, new, order = unique_id("O"), unique_id("N"), unique_id("F")
    assert msa(send(admission(unique_id(), old, unique_id("V"))))[0] == "AA"
    assert msa(send(result(unique_id(), old, order)))[0] == "AA"
    assert msa(send(admission(unique_id(), new, unique_id("V"))))[0] == "AA"
    retired, survivor = patient_id(client, old), patient_id(client, new)
    control = unique_id()
    raw = merge(control, new, old)
    ack = send(raw)
    assert msa(ack) == ("AA", control) and err_fields(ack) == []
    moved = filed_under(client, survivor)
    versions = {
        (rtype, rid): read(client, rtype, rid)["meta"]["versionId"]
        for rtype, ids in moved.items()
        for rid in ids
    }
    assert len(versions) == 2 * len(MOVED_TYPES) - 2  # the survivor has no result of its own

    assert send(raw) == ack  # the duplicate: its original ACK
    assert [r.status for r in rows_for(engine, control)] == ["accepted", "duplicate"]
    again = unique_id()
    assert msa(send(merge(again, new, old))) == ("AA", again)
    [row] = rows_for(engine, again)
    assert row.provenance_id is None  # nothing written, so nothing to attest
    for (rtype, rid), version in versions.items():
        assert read(client, rtype, rid)["meta"]["versionId"] == version, (rtype, rid)
    assert filed_under(client, survivor) == moved
    assert filed_under(client, retired) == {t: set() for t in MOVED_TYPES}


def test_a_chain_of_merges_leaves_everything_under_the_final_survivor(
    send: Send, client: httpx.Client
) -> None:
    """A into B, then B into C: A's and B's results end under C, none under A or B."""
    a, b, c = (unique_id(p) for p in "ABC")
    for mrn in (a, b, c):
        assert msa(send(admission(unique_id(), mrn, unique_id("V"))))[0] == "AA"
        assert msa(send(result(unique_id(), mrn, unique_id("F"))))[0] == "AA"
    ids = {mrn: patient_id(client, mrn) for mrn in (a, b, c)}
    results = {mrn: ids_for(client, "Observation", ids[mrn]) for mrn in (a, b, c)}
    assert msa(send(merge(unique_id(), b, a)))[0] == "AA"
    assert ids_for(client, "Observation", ids[b]) == results[a] | results[b]
    assert msa(send(merge(unique_id(), c, b)))[0] == "AA"
    everything = results[a] | results[b] | results[c]
    assert ids_for(client, "Observation", ids[c]) == everything
    for mrn in (a, b):
        assert filed_under(client, ids[mrn]) == {t: set() for t in MOVED_TYPES}, mrn
    assert all(len(found) == 3 for found in filed_under(client, ids[c]).values())
    # a result naming A now is filed under C directly
    order = unique_id("F")
    assert msa(send(result(unique_id(), a, order)))[0] == "AA"
    [report] = search(client, "DiagnosticReport", identifier=order)
    assert report["subject"] == {"reference": f"Patient/{ids[c]}"}


def test_a_message_naming_a_patient_merged_earlier_waits_for_the_merge(
    send: Send, client: httpx.Client, engine: Engine, live_server: LiveServer
) -> None:
    """B into A, then A into C while a result naming B is in flight (it holds B's key, as
    a message's first statement takes it, and has filed under A, B's survivor): the A40
    waits for it (it takes the keys of every identifier of the patients it retires and of
    those merged into them), then moves that result to C too. It used to run past it and
    leave the result under the retired A. PostgreSQL: SQLite has one writer at a time."""
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's (SQLite has one writer at a time)")
    b, a, c = (unique_id(p) for p in "BAC")
    for mrn in (b, a, c):
        assert msa(send(admission(unique_id(), mrn, unique_id("V"))))[0] == "AA"
    assert msa(send(merge(unique_id(), a, b)))[0] == "AA"
    ids = {mrn: patient_id(client, mrn) for mrn in (a, c)}
    naming_b = map_message(parse_message(result(unique_id(), b, unique_id("F"))))
    service = live_server.app.state.service
    observation = {
        "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": f"Patient/{ids[a]}"}, "valueQuantity": {"value": 61},
    }  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        with service.unit_of_work(identity(live_server)(None), write=True) as uow:
            lock_keys(uow, [f"Patient?{naming_b.patient_match}"])
            in_flight = service.create(uow, "Observation", observation).version.id
            merging = pool.submit(send, merge(unique_id(), c, a))
            time.sleep(0.5)
            assert not merging.done()  # waits for the message naming B
        assert msa(merging.result(timeout=20))[0] == "AA"
    moved = read(client, "Observation", in_flight)
    assert moved["subject"] == {"reference": f"Patient/{ids[c]}"}


def test_a_merge_moves_at_most_MAX_MOVED_and_a_reapply_moves_the_rest(
    send: Send, client: httpx.Client, engine: Engine, live_server: LiveServer
) -> None:
    """A patient with more referrers than one message moves: the A40 moves MAX_MOVED, says
    how many are left (ERR 0, W, at MRG-1), and re-applying the stored message (hl7
    reprocess --accepted) moves the rest."""
    old, new = unique_id("O"), unique_id("N")
    assert msa(send(admission(unique_id(), old, unique_id("V"))))[0] == "AA"
    assert msa(send(admission(unique_id(), new, unique_id("V"))))[0] == "AA"
    retired, survivor = patient_id(client, old), patient_id(client, new)
    extra = 3
    observation = {
        "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": f"Patient/{retired}"}, "valueQuantity": {"value": 60},
    }  # fmt: skip
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation, "request": {"method": "POST", "url": "Observation"}}]
        * (MAX_MOVED + extra),
    }
    posted = client.post("/", json=bundle)
    assert posted.status_code == 200, posted.text[:500]
    control = unique_id()
    ack = send(merge(control, new, old))
    assert msa(ack) == ("AA", control)
    left = extra + 3  # the admission's Encounter, RelatedPerson, AllergyIntolerance too
    assert err_fields(ack) == [("MRG^1^1", "0", "W")]
    assert f"{left} more resources still refer" in ack.decode()
    [row] = rows_for(engine, control)
    assert row.id in ack.decode()
    assert len(json.loads(row.produced)) == 2 + MAX_MOVED  # the two Patients, then the moved

    ingest = Hl7Ingest(live_server.app.state.service, live_server.app.state.audit)
    feed = feed_identity("hl7-reprocess", address=None, base_url=live_server.base_url)
    outcome = ingest.reprocess(row.id, feed, accepted=True)
    assert outcome["reapplied"] is True, outcome
    assert filed_under(client, retired) == {t: set() for t in MOVED_TYPES}
    assert len(ids_for_all(client, "Observation", survivor)) == MAX_MOVED + extra


def ids_for_all(client: httpx.Client, rtype: str, patient: str) -> set[str]:
    found = client.get(f"/{rtype}", params={"patient": patient, "_count": "1000"})
    assert found.status_code == 200
    ids = {e["resource"]["id"] for e in found.json().get("entry", [])}
    following = [link["url"] for link in found.json()["link"] if link["relation"] == "next"]
    while following:
        page = client.get(following[0]).json()
        ids |= {e["resource"]["id"] for e in page.get("entry", [])}
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
    return ids


def test_repointed_rewrites_every_reference_form_to_a_retired_patient_and_nothing_else() -> None:
    base = "https://ehr.example/fhir"
    body = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/old", "display": "Jo Doe"},
        "focus": [
            {"reference": f"{base}/Patient/old/_history/3"},
            {"reference": "https://elsewhere.example/fhir/Patient/old"},
            {"reference": "Patient/other"},
            {"reference": "#p"},
            {"identifier": {"system": "urn:mrn", "value": "old"}},
        ],
        "extension": [{"url": "urn:x", "valueReference": {"reference": "Patient/old2"}}],
        "contained": [
            {"resourceType": "Group", "member": [{"entity": {"reference": "Patient/old"}}]}
        ],
    }
    out = repointed(body, {"old", "old2"}, "new", 7, base)
    assert out["subject"] == {"reference": "Patient/new", "display": "Jo Doe"}
    assert [f.get("reference") for f in out["focus"]] == [
        f"{base}/Patient/new/_history/7",
        "https://elsewhere.example/fhir/Patient/old",
        "Patient/other",
        "#p",
        None,
    ]
    assert out["extension"][0]["valueReference"] == {"reference": "Patient/new"}
    assert out["contained"][0]["member"][0]["entity"] == {"reference": "Patient/new"}
    assert body["subject"]["reference"] == "Patient/old"  # a copy


__all__ = ["engine", "send"]  # the fixtures, shared with test_hl7_integrity
