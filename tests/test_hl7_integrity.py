"""Real ER7 through the real mapping and applier: what must never be filed wrongly or
silently (the patient a result or visit belongs to, merges, required header fields,
warnings of the parser), answered with the right ACK code and ERR location."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from hl7_adapters.checks import processing_ids
from hl7_adapters.feeds import feed_identity
from hl7_adapters.ingest import ContextFor, Hl7Ingest
from hl7_adapters.tables import hl7_message
from tests.conftest import LiveServer
from tests.test_hl7_ingest import err_fields, msa, rows_for, search, unique_id

AUTHORITY = "HOSP&1.2.3&ISO"
SYSTEM = "urn:oid:1.2.3"
Send = Callable[[bytes], bytes]


def er7(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode()


def msh(kind: str, control: str, when: str = "20240601100000+0000", sender: str = "XAPP") -> str:
    return f"MSH|^~\\&|{sender}|SFAC|RAPP|RFAC|{when}||{kind}|{control}|P|2.5.1"


def pid(mrn: str, family: str = "Doe") -> str:
    return f"PID|1||{mrn}^^^{AUTHORITY}^MR||{family}^Jo||19700101|F"


def pv1(visit: str = "", klass: str = "I", admit: str = "") -> str:
    number = f"{visit}^^^{AUTHORITY}^VN" if visit else ""
    return "PV1|1|" + klass + "|" + "|" * 16 + number + "|" * 25 + admit


def admission(control: str, mrn: str, visit: str = "", **kw: str) -> bytes:
    return er7(
        msh("ADT^A01^ADT_A01", control, kw.get("when", "20240601100000+0000")),
        f"EVN|A01|{kw.get('when', '20240601100000+0000')}",
        pid(mrn, kw.get("family", "Doe")),
        pv1(visit, kw.get("klass", "I"), kw.get("admit", "")),
    )


def result(control: str, mrn: str, order: str, visit: str = "") -> bytes:
    segments = [msh("ORU^R01^ORU_R01", control, "20240601110000+0000", "XLAB"), pid(mrn, "Roe")]
    if visit:
        segments.append(pv1(visit))
    segments += [
        f"OBR|1||{order}^XLAB|2345-7^Glucose^LN|||20240601103000+0000" + "|" * 18 + "F",
        "OBX|1|NM|2345-7^Glucose^LN||99|mg/dL|||||F",
    ]
    return er7(*segments)


def merge(control: str, survivor: str, retired: str, family: str = "Doe") -> bytes:
    return er7(
        msh("ADT^A40^ADT_A39", control, "20240601120000+0000"),
        "EVN|A40|20240601120000+0000",
        pid(survivor, family),
        f"MRG|{retired}^^^{AUTHORITY}^MR",
    )


def identity(live_server: LiveServer) -> ContextFor:
    return feed_identity("hl7-test", address="127.0.0.1", base_url=live_server.base_url)


@pytest.fixture
def send(live_server: LiveServer) -> Send:
    app = live_server.app
    ingest = Hl7Ingest(app.state.service, app.state.audit)
    feed = identity(live_server)

    def send(raw: bytes) -> bytes:
        return ingest.handle(raw, channel="mllp", peer="127.0.0.1:1", ctx=feed)

    return send


@pytest.fixture
def engine(live_server: LiveServer) -> Engine:
    return live_server.app.state.engine  # type: ignore[no-any-return]


def patients(client: httpx.Client, mrn: str) -> list[dict[str, Any]]:
    return search(client, "Patient", identifier=f"{SYSTEM}|{mrn}")


def texts(ack: bytes) -> str:
    return ack.decode("utf-8", "replace")


# ---------------------------------------------------------------- a visit of another patient


def test_a_result_naming_another_patients_visit_is_AE_and_files_nothing(
    send: Send, client: httpx.Client, engine: Engine
) -> None:
    first, second, visit, order = unique_id("A"), unique_id("B"), unique_id("V"), unique_id("F")
    assert msa(send(admission(unique_id(), first, visit)))[0] == "AA"
    control = unique_id()
    ack = send(result(control, second, order, visit))
    assert msa(ack) == ("AE", control)
    assert err_fields(ack) == [("PV1^1^19", "205", "E")]
    assert visit in texts(ack) and "Patient/" not in texts(ack) and "Encounter/" not in texts(ack)
    assert search(client, "DiagnosticReport", identifier=order) == []
    assert patients(client, second) == []  # not even the result's patient: one transaction
    [row] = rows_for(engine, control)
    assert row.status == "error"
    # the same visit for its own patient is fine
    assert msa(send(result(unique_id(), first, order, visit)))[0] == "AA"
    [report] = search(client, "DiagnosticReport", identifier=order)
    [encounter] = search(client, "Encounter", identifier=f"{SYSTEM}|{visit}")
    assert report["encounter"]["reference"] == f"Encounter/{encounter['id']}"


def test_an_update_moving_a_visit_to_another_patient_points_at_PV1_19(send: Send) -> None:
    visit = unique_id("V")
    assert msa(send(admission(unique_id(), unique_id("A"), visit)))[0] == "AA"
    update = admission(unique_id(), unique_id("B"), visit).replace(b"A01^ADT_A01", b"A08^ADT_A01")
    ack = send(update)
    assert msa(ack)[0] == "AE"
    assert err_fields(ack) == [("PV1^1^19", "205", "E")]
    assert "Encounter/" not in texts(ack)


# ---------------------------------------------------------------- merges


def test_merging_a_patient_into_itself_is_AE_and_writes_nothing(
    send: Send, client: httpx.Client
) -> None:
    mrn = unique_id("SELF")
    assert msa(send(admission(unique_id(), mrn)))[0] == "AA"
    [before] = patients(client, mrn)
    ack = send(merge(unique_id(), mrn, mrn, family="Other"))
    assert msa(ack)[0] == "AE"
    assert err_fields(ack) == [("MRG^1^1", "205", "E")]
    [after] = patients(client, mrn)
    assert after == before
    unknown = unique_id("SELF")  # neither known: still nothing created
    assert msa(send(merge(unique_id(), unknown, unknown)))[0] == "AE"
    assert patients(client, unknown) == []


def test_a_reversed_merge_is_AE_and_leaves_the_survivor_alone(
    send: Send, client: httpx.Client
) -> None:
    old, new = unique_id("OLD"), unique_id("NEW")
    send(admission(unique_id(), old, family="Old"))
    send(admission(unique_id(), new, family="New"))
    assert msa(send(merge(unique_id(), new, old, family="New")))[0] == "AA"
    [kept] = patients(client, new)
    [retired] = patients(client, old)
    ack = send(merge(unique_id(), old, new, family="Old"))
    assert msa(ack)[0] == "AE"
    assert err_fields(ack) == [("MRG^1^1", "205", "E")]
    assert patients(client, new) == [kept]  # no placeholder carrying NEW, name kept
    assert patients(client, old) == [retired]


def test_merging_into_a_retired_patient_merges_into_its_survivor_with_a_warning(
    send: Send, client: httpx.Client
) -> None:
    old, new, third = unique_id("OLD"), unique_id("NEW"), unique_id("THIRD")
    for mrn in (old, new, third):
        send(admission(unique_id(), mrn))
    send(merge(unique_id(), new, old))
    ack = send(merge(unique_id(), old, third))
    assert msa(ack)[0] == "AA"
    assert ("PID^1^3", "0", "W") in err_fields(ack)
    [kept] = patients(client, new)
    [gone] = patients(client, third)
    assert gone["active"] is False
    assert gone["link"] == [
        {"other": {"reference": f"Patient/{kept['id']}"}, "type": "replaced-by"}
    ]


def test_merging_an_unknown_patient_creates_the_placeholder_with_a_warning(
    send: Send, client: httpx.Client
) -> None:
    survivor, retired = unique_id("SURV"), unique_id("GONE")
    ack = send(merge(unique_id(), survivor, retired))
    assert msa(ack)[0] == "AA"
    assert err_fields(ack) == [("MRG^1^1", "204", "W")]
    [kept] = patients(client, survivor)
    [placeholder] = patients(client, retired)
    assert placeholder["active"] is False
    assert placeholder["link"][0]["other"]["reference"] == f"Patient/{kept['id']}"


# ---------------------------------------------------------------- header checks, warnings


def latest_row_with(engine: Engine, marker: bytes) -> Any:
    with engine.connect() as conn:
        rows = conn.execute(select(hl7_message).order_by(hl7_message.c.received.desc()).limit(20))
        return next(r for r in rows if marker in bytes(r.raw))


def test_a_message_without_a_control_id_is_AR_101_and_kept_as_rejected(
    send: Send, client: httpx.Client, engine: Engine
) -> None:
    mrn = unique_id("NOID")
    ack = send(admission("", mrn))
    assert msa(ack) == ("AR", "")
    assert err_fields(ack) == [("MSH^1^10", "101", "E")]
    assert patients(client, mrn) == []
    row = latest_row_with(engine, mrn.encode())
    assert row.status == "rejected" and "MSH-10" in row.error
    assert msa(send(admission("", mrn)))[0] == "AR"  # not taken for a re-send of anything


def test_a_result_message_without_results_is_AE_100(send: Send, client: httpx.Client) -> None:
    mrn = unique_id("NORES")
    ack = send(er7(msh("ORU^R01^ORU_R01", unique_id()), pid(mrn), pv1()))
    assert msa(ack)[0] == "AE"
    assert err_fields(ack) == [("OBR", "100", "E")]
    assert patients(client, mrn) == []


def test_two_patients_in_one_admission_is_AE_100(send: Send, client: httpx.Client) -> None:
    first, second = unique_id("ONE"), unique_id("TWO")
    raw = admission(unique_id(), first) + pid(second).encode() + b"\r"
    ack = send(raw)
    assert msa(ack)[0] == "AE"
    assert err_fields(ack) == [("PID^2", "100", "E")]
    assert patients(client, first) == [] and patients(client, second) == []


def header(control: str, charset: str = "", when: str = "20240601100000+0000") -> str:
    return msh("ADT^A01^ADT_A01", control, when) + ("|" * 7 + charset if charset else "")


def sample(case: str, control: str, body: str) -> bytes:
    """The message with the problem `case` names (its body: EVN, PID, PV1)."""
    plain = header(control)
    if case == "utf8-declared-latin1-sent":
        return (header(control, "UNICODE UTF-8") + "\r" + body).encode("latin-1")
    if case == "ascii-declared-utf8-sent":
        return (header(control, "ASCII") + "\r" + body).encode()
    if case == "latin1-declared-utf8-sent":
        return (header(control, "8859/1") + "\r" + body).encode()
    if case == "junk-before-msh":
        return b"xyz junk\r" + (plain + "\r" + body).encode()
    if case == "msh2-three-characters":
        return (plain.replace("^~\\&", "^~\\", 1) + "\r" + body).encode()
    if case == "wrong-structure":
        return (plain.replace("ADT_A01", "ORU_R01") + "\r" + body).encode()
    when = "notadate" if case == "msh7-not-a-date" else ""
    return (header(control, when=when) + "\r" + body).encode()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("utf8-declared-latin1-sent", ("MSH^1^18", "102", "W")),
        ("ascii-declared-utf8-sent", ("MSH^1^18", "102", "W")),
        ("latin1-declared-utf8-sent", ("MSH^1^18", "102", "W")),
        ("junk-before-msh", ("", "100", "W")),
        ("msh2-three-characters", ("MSH^1^2", "102", "W")),
        ("wrong-structure", ("MSH^1^9", "103", "W")),
        ("msh7-not-a-date", ("MSH^1^7", "102", "W")),
        ("msh7-empty", ("MSH^1^7", "101", "W")),
    ],
)
def test_what_the_parser_repaired_is_warned_in_the_ack_and_kept(
    send: Send, client: httpx.Client, engine: Engine, case: str, expected: tuple[str, str, str]
) -> None:
    mrn, control = unique_id("PW"), unique_id()
    body = "\r".join(["EVN|A01", pid(mrn, "Müller"), pv1()]) + "\r"
    raw = sample(case, control, body)
    ack = send(raw)
    assert msa(ack) == ("AA", control)
    assert expected in err_fields(ack)
    assert patients(client, mrn)
    [row] = rows_for(engine, control)
    assert row.status == "accepted" and "warnings:" in row.error


def test_training_and_debugging_messages_are_AR_202_unless_taken(
    live_server: LiveServer, send: Send, client: httpx.Client
) -> None:
    for processing in ("T", "D"):
        mrn = unique_id("TRAIN")
        raw = admission(unique_id(), mrn).replace(b"|P|2.5.1", f"|{processing}|2.5.1".encode())
        ack = send(raw)
        assert msa(ack)[0] == "AR"
        assert err_fields(ack) == [("MSH^1^11", "202", "E")]
        assert patients(client, mrn) == []
    app = live_server.app
    training = Hl7Ingest(app.state.service, app.state.audit, processing_ids=processing_ids("P,T"))
    mrn = unique_id("TRAIN")
    raw = admission(unique_id(), mrn).replace(b"|P|2.5.1", b"|T|2.5.1")
    ack = training.handle(raw, channel="http", peer=None, ctx=identity(live_server))
    assert msa(ack)[0] == "AA"
    assert patients(client, mrn)


# ---------------------------------------------------------------- duplicates


def test_a_resend_differing_only_in_line_ends_is_a_duplicate(
    send: Send, client: httpx.Client, engine: Engine
) -> None:
    mrn, control, visit = unique_id("DUP"), unique_id(), unique_id("V")
    raw = admission(control, mrn, visit)
    first = send(raw)
    assert msa(first)[0] == "AA"
    for variant in (raw.replace(b"\r", b"\r\n"), raw + b"\n", raw.replace(b"\r", b" \n")):
        assert send(variant) == first  # the original ACK, nothing applied again
    rows = rows_for(engine, control)
    assert [r.status for r in rows] == ["accepted", "duplicate", "duplicate", "duplicate"]
    assert rows[1].raw == raw.replace(b"\r", b"\r\n")  # kept as received
    [patient] = patients(client, mrn)
    assert patient["meta"]["versionId"] == "1"


def test_an_admission_without_visit_number_resent_finds_its_encounter(
    send: Send, client: httpx.Client
) -> None:
    mrn = unique_id("NOVN")
    admit = "202406010930+0000"
    for when in ("20240601100000+0000", "20240601100500+0000"):  # re-stamped, new MSH-10
        assert msa(send(admission(unique_id(), mrn, when=when, admit=admit)))[0] == "AA"
    [patient] = patients(client, mrn)
    [encounter] = search(client, "Encounter", subject=f"Patient/{patient['id']}")
    assert encounter["period"]["start"].startswith("2024-06-01T09:30")
    # without an admit time, re-sent with a new MSH-10: found by its event time (EVN-2)
    other = unique_id("NOVN")
    for _ in range(2):
        assert msa(send(admission(unique_id(), other)))[0] == "AA"
    [again] = patients(client, other)
    assert len(search(client, "Encounter", subject=f"Patient/{again['id']}")) == 1
    # another admission of the same patient (another admit time) is another visit
    send(admission(unique_id(), mrn, admit="202406051200+0000"))
    assert len(search(client, "Encounter", subject=f"Patient/{patient['id']}")) == 2


def test_an_older_update_is_warned_about_by_the_identifier_sent(
    send: Send, client: httpx.Client
) -> None:
    mrn = unique_id("LATE")
    send(admission(unique_id(), mrn, when="20240601100000+0000", family="Newer"))
    ack = send(admission(unique_id(), mrn, when="20240501100000+0000", family="Older"))
    assert msa(ack)[0] == "AA"
    assert ("PID^1^3", "0", "W") in err_fields(ack)
    assert mrn in texts(ack) and "Patient/" not in texts(ack)
    assert patients(client, mrn)[0]["name"][0]["family"] == "Newer"


# ---------------------------------------------------------------- merge chains


def links(found: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["type"], e["other"]["reference"]) for e in found.get("link", [])]


def test_a_chain_of_merges_points_every_retired_patient_at_the_final_survivor(
    send: Send, client: httpx.Client
) -> None:
    """B into A, A into C, C into D: every retired record is replaced-by D and only D
    replaces them (A kept a stale "replaces B" and B pointed at A); old identifiers land
    on D."""
    b, a, c, d = (unique_id(p) for p in "BACD")
    for mrn in (b, a, c, d):
        assert msa(send(admission(unique_id(), mrn)))[0] == "AA"
    for survivor, retired in ((a, b), (c, a), (d, c)):
        assert msa(send(merge(unique_id(), survivor, retired)))[0] == "AA"
    [final] = patients(client, d)
    ref = f"Patient/{final['id']}"
    for mrn in (b, a, c):
        [gone] = patients(client, mrn)
        assert gone["active"] is False
        assert links(gone) == [("replaced-by", ref)], mrn
    ids = {mrn: patients(client, mrn)[0]["id"] for mrn in (b, a, c)}
    assert sorted(links(final)) == sorted(("replaces", f"Patient/{ids[m]}") for m in (c, a, b))
    order = unique_id("O")
    assert msa(send(result(unique_id(), b, order)))[0] == "AA"
    [report] = search(client, "DiagnosticReport", identifier=order)
    assert report["subject"] == {"reference": ref}


def test_a_patient_merged_again_into_another_survivor_is_AE_and_changes_nothing(
    send: Send, client: httpx.Client, engine: Engine
) -> None:
    """B into A, then B into C: HL7 v2 says a merged identifier is never referenced again,
    so the second A40 contradicts the first: AE, ERR 205 at MRG^1^1 naming A's identifier,
    and nothing changes (B stays replaced-by A, its results stay under A, C untouched).
    The first merge sent again (new MSH-10) changes nothing either; merging A into C then
    is the way to say they are one person, and takes B along."""
    b, a, c = (unique_id(p) for p in "BAC")
    for mrn in (b, a, c):
        send(admission(unique_id(), mrn))
    order_b = unique_id("O")
    assert msa(send(result(unique_id(), b, order_b)))[0] == "AA"
    assert msa(send(merge(unique_id(), a, b)))[0] == "AA"
    before = {mrn: patients(client, mrn) for mrn in (a, b, c)}
    assert msa(send(merge(unique_id(), a, b)))[0] == "AA"  # re-sent with a new MSH-10
    assert {mrn: patients(client, mrn) for mrn in (a, b, c)} == before
    control = unique_id()
    ack = send(merge(control, c, b))
    assert msa(ack) == ("AE", control)
    assert err_fields(ack) == [("MRG^1^1", "205", "E")]
    assert f"already merged into another patient {a} ({SYSTEM})" in texts(ack)
    assert "Patient/" not in texts(ack)
    assert [r.status for r in rows_for(engine, control)] == ["error"]
    assert {mrn: patients(client, mrn) for mrn in (a, b, c)} == before
    [a_now], [b_now] = before[a], before[b]
    assert links(b_now) == [("replaced-by", f"Patient/{a_now['id']}")]
    [report] = search(client, "DiagnosticReport", identifier=order_b)
    assert report["subject"] == {"reference": f"Patient/{a_now['id']}"}
    # A into C: B's results (moved to A) and B itself follow to C
    assert msa(send(merge(unique_id(), c, a)))[0] == "AA"
    [c_now] = patients(client, c)
    [report] = search(client, "DiagnosticReport", identifier=order_b)
    assert report["subject"] == {"reference": f"Patient/{c_now['id']}"}
    assert links(patients(client, b)[0]) == [("replaced-by", f"Patient/{c_now['id']}")]
