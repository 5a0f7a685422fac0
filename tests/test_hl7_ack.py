"""ACK building: original and enhanced mode, MSH swap, ERR layout per version, broken input.

Every ACK is read back with the tokenizer, so the assertions are about what a receiver sees.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hl7_adapters.ack import (
    ERROR_CODES,
    AckError,
    Outcome,
    ack_codes,
    build_ack,
    build_nak,
    build_unreadable_ack,
    new_control_id,
    split_first,
)
from hl7_adapters.er7 import Message, parse_message, parse_messages

FIXTURES = Path(__file__).parent / "hl7_fixtures"


def load(name: str) -> Message:
    return parse_message((FIXTURES / name).read_bytes())


def header(msh15: str = "", msh16: str = "", version: str = "2.5.1") -> Message:
    return parse_message(
        f"MSH|^~\\&|SND|SFAC|RCV|RFAC|20240101||ADT^A08^ADT_A01|IN-1|P|{version}|||{msh15}|{msh16}"
        "\rEVN|A08\rPID|1||1\r".encode()
    )


def read_ack(data: bytes | None) -> Message:
    assert data is not None
    return parse_message(data)


def test_original_mode_accept() -> None:
    msg = load("adt_a08_lf.hl7")
    ack = read_ack(build_ack(msg, "accept"))
    assert [s.id for s in ack] == ["MSH", "MSA"]
    assert ack.get("MSH-3") == "HUB" and ack.get("MSH-4") == "HUB"
    assert ack.get("MSH-5") == "REG" and ack.get("MSH-6") == "GENHOSP"
    assert ack.get("MSH-9") == "ACK" and ack.get("MSH-9.2") == "A08"
    assert ack.msh.raw(9) == "ACK^A08"  # v2.3 has no MSH-9.3
    assert ack.control_id and ack.control_id != msg.control_id
    assert ack.processing_id == "T" and ack.version == "2.3"
    assert ack.get("MSA-1") == "AA" and ack.get("MSA-2") == "CTRL0002"
    assert ack.get("MSH-15") == "" and ack.get("MSH-16") == ""
    assert ack.timestamp_fhir is not None
    assert ack.raw.endswith(b"\r") and b"\n" not in ack.raw


def test_msh_swaps_full_hierarchic_designators_and_keeps_the_rest() -> None:
    msg = load("adt_a01_core.hl7")
    ack = read_ack(build_ack(msg, "accept", control_id="ACK-1", timestamp="20240131154502"))
    assert ack.msh.raw(5) == "REG^1.2.840.114350^ISO" and ack.msh.raw(6) == "GENHOSP"
    assert ack.msh.raw(3) == "MEDISENTINEL" and ack.msh.raw(4) == "HUB"
    assert ack.msh.raw(9) == "ACK^A01^ACK" and ack.structure == "ACK"
    assert (ack.control_id, ack.timestamp) == ("ACK-1", "20240131154502")
    assert ack.version == "2.5.1" and ack.charset == "8859/1" and ack.codec == "latin-1"


@pytest.mark.parametrize(
    ("errors", "outcome", "code"),
    [
        ([AckError(101, "PID-3 is required", segment="PID", sequence=1, field=3)], "error", "AE"),
        ([AckError(200, "ZZZ messages are not supported")], "reject", "AR"),
        (
            [AckError(203, "version 2.9 is not supported", segment="MSH", sequence=1, field=12)],
            "reject",
            "AR",
        ),
    ],
)
def test_errors_v25_layout(errors: list[AckError], outcome: str, code: str) -> None:
    msg = header()
    ack = read_ack(build_ack(msg, outcome, errors))  # type: ignore[arg-type]
    err = ack.segment("ERR")
    assert err is not None and ack.get("MSA-1") == code and ack.get("MSA-2") == "IN-1"
    first = errors[0]
    assert err.raw(1) == ""  # ERR-1 is withdrawn from v2.5 on
    assert err.get("2.1") == first.segment
    assert err.get("2.2") == ("" if first.sequence is None else str(first.sequence))
    assert err.get("2.3") == ("" if first.field is None else str(first.field))
    assert err.get("3.1") == str(first.code) and err.get("3.3") == "HL70357"
    assert err.get("3.2") == ERROR_CODES[first.code]
    assert err.get("4") == "E" and err.get("8") == first.text
    assert ack.get("MSA-3") == first.text  # MSA-3 still read by receivers before v2.7


def test_several_errors_with_full_location_and_escaping() -> None:
    errors = [
        AckError(102, "PID-7 'x|y^z' is not a date", segment="PID", sequence=1, field=7),
        AckError(
            103, "bad code", "W", segment="OBX", sequence=2, field=3, repetition=1, component=1
        ),
        AckError(207, "Ünïcode\nline two", "I"),
    ]
    ack = read_ack(build_ack(header(version="2.8"), "error", errors))
    errs = ack.segments("ERR")
    assert len(errs) == 3
    assert errs[0].get("8") == "PID-7 'x|y^z' is not a date"
    assert errs[1].raw(2) == "OBX^2^3^1^1" and errs[1].get("4") == "W"
    assert errs[2].get("8") == "Ünïcode\nline two" and errs[2].get("4") == "I"
    assert ack.get("MSA-3") == ""  # withdrawn in v2.7+
    assert ack.codec == "utf-8"  # no MSH-18 and non-ASCII text: sent as UTF-8


def test_errors_before_v25_use_err1() -> None:
    msg = load("adt_a08_lf.hl7")  # v2.3
    errors = [AckError(101, "PID-3 & co missing", segment="PID", sequence=1, field=3)]
    ack = read_ack(build_ack(msg, "error", errors))
    err = ack.segment("ERR")
    assert err is not None and err.field_count == 1
    assert err.get("1.1") == "PID" and err.get("1.2") == "1" and err.get("1.3") == "3"
    rep = err.repetition(1)
    assert rep is not None and rep.subcomponents(4) == ["101", "PID-3 & co missing", "HL70357"]
    assert ack.get("MSA-1") == "AE" and ack.get("MSA-3") == "PID-3 & co missing"


UNSUPPORTED = AckError(200, "message type 'ZZZ' is not supported", "E", "MSH", 1, 9)
NOT_ALLOWED = AckError(207, "not allowed: system/Patient.c")
BAD_FIELD = AckError(102, "PID-7 is not a date", "E", "PID", 1, 7)


@pytest.mark.parametrize(
    ("msh15", "msh16", "outcome", "errors", "stored", "expected"),
    [
        ("", "", "accept", [], True, ["AA"]),  # original mode: one application ACK
        ("", "", "error", [BAD_FIELD], True, ["AE"]),
        ("", "", "reject", [UNSUPPORTED], True, ["AR"]),
        ("AL", "", "accept", [], True, ["CA"]),  # MSH-16 empty: no application ACK
        # committed to safe storage (the error queue): CA, whatever processing found
        ("AL", "NE", "error", [BAD_FIELD], True, ["CA"]),
        ("AL", "AL", "error", [BAD_FIELD], True, ["CA", "AE"]),
        ("AL", "AL", "accept", [], True, ["CA", "AA"]),
        ("AL", "AL", "reject", [UNSUPPORTED], True, ["CR"]),  # refused for its header
        ("AL", "AL", "reject", [NOT_ALLOWED], True, ["CA", "AR"]),  # refused by the application
        ("AL", "AL", "error", [BAD_FIELD], False, ["CE"]),  # could not be stored at all
        ("ER", "AL", "accept", [], True, ["AA"]),  # no commit ACK on success
        ("ER", "AL", "error", [BAD_FIELD], True, ["AE"]),
        ("ER", "AL", "error", [BAD_FIELD], False, ["CE"]),
        ("ER", "AL", "reject", [UNSUPPORTED], True, ["CR"]),
        ("SU", "AL", "error", [BAD_FIELD], True, ["CA", "AE"]),
        ("SU", "NE", "error", [BAD_FIELD], True, ["CA"]),
        ("SU", "AL", "error", [BAD_FIELD], False, ["AE"]),  # no CE asked for: the AE
        ("NE", "AL", "accept", [], True, ["AA"]),  # IHE PCD-01 style
        ("NE", "ER", "accept", [], True, []),
        ("NE", "ER", "error", [BAD_FIELD], True, ["AE"]),
        # not committed, and the sender hears of it no other way: the application reject
        ("NE", "ER", "reject", [UNSUPPORTED], True, ["AR"]),
        ("NE", "AL", "reject", [UNSUPPORTED], True, ["AR"]),
        ("NE", "NE", "accept", [], True, []),
        ("NE", "NE", "error", [BAD_FIELD], True, []),
        ("", "AL", "accept", [], True, ["CA", "AA"]),  # MSH-15 empty counts as AL
        ("XX", "", "error", [BAD_FIELD], True, ["CA"]),  # unknown condition: acknowledge
    ],
)
def test_enhanced_mode_rules(
    msh15: str,
    msh16: str,
    outcome: Outcome,
    errors: list[AckError],
    stored: bool,
    expected: list[str],
) -> None:
    """HL7 v2 chapter 2, enhanced mode: the accept (commit) ACK says whether the message is in
    safe storage (CA), refused for its header (CR) or could not be stored (CE), as MSH-15
    asks; the application ACK (AA/AE/AR) follows for a committed message, as MSH-16 asks. It
    used to be one reply whose CE told of content errors and no application ACK after it."""
    msg = header(msh15, msh16)
    assert ack_codes(msg, outcome, errors, stored=stored) == expected
    built = build_ack(msg, outcome, errors, stored=stored)
    if not expected:
        assert built is None
        # forced (HTTP): the one commit ACK, carrying what processing found
        forced = parse_messages(build_ack(msg, outcome, errors, stored=stored, force=True) or b"")
        assert len(forced) == 1 and forced[0].get("MSA-1") in ("CA", "CE", "CR")
        assert (forced[0].segment("ERR") is not None) == bool(errors)
        return
    acks = parse_messages(built or b"")
    assert [a.get("MSA-1") for a in acks] == expected
    assert all(a.get("MSA-2") == "IN-1" for a in acks)
    enhanced = bool(msh15 or msh16)
    for ack in acks:
        assert (ack.get("MSH-15"), ack.get("MSH-16")) == (("NE", "NE") if enhanced else ("", ""))
        has_err = ack.segment("ERR") is not None
        # a CA followed by the application ACK carries no ERR: the findings go in the latter
        assert has_err == (bool(errors) and not (ack.get("MSA-1") == "CA" and len(acks) > 1))
    assert len({a.get("MSH-10") for a in acks}) == len(acks)  # each ACK its own control id
    first, rest = split_first(built or b"")
    assert parse_messages(first)[0].get("MSA-1") == expected[0]
    assert [m.get("MSA-1") for m in parse_messages(rest)] if rest else [] == expected[1:]


def test_ack_keeps_the_message_delimiters() -> None:
    five = read_ack(build_ack(load("oru_r01_5char.hl7"), "accept"))
    assert five.msh.raw(2) == "^~\\&#" and five.get("MSA-2") == "CTRL0006"
    custom_raw = build_ack(load("custom_delims.hl7"), "error", [AckError(207, "a!b@c")])
    assert custom_raw is not None and custom_raw.startswith(b"MSH!@#$%!HUB!HUB!APP!FAC!")
    custom = read_ack(custom_raw)
    assert custom.get("MSH-9") == "ACK" and custom.version == "2.4"
    assert custom.get("ERR-1.4.1") == "207" and custom.get("ERR-1.4.2") == "a!b@c"


def test_latin1_ack_text_is_encoded_in_the_message_charset() -> None:
    raw = build_ack(load("adt_a04_latin1.hl7"), "error", [AckError(103, "Code inconnu: é")])
    assert raw is not None and "é".encode("latin-1") in raw and "é".encode() not in raw
    assert read_ack(raw).get("ERR-8") == "Code inconnu: é"


def test_trigger_from_evn_and_empty_trigger() -> None:
    msg = parse_message(b"MSH|^~\\&|A|B|C|D|2024||ADT|7|P|2.5\rEVN|A04\r")
    assert read_ack(build_ack(msg)).msh.raw(9) == "ACK^A04^ACK"
    bare = parse_message(b"MSH|^~\\&|A|B|C|D|2024||QRY|8|P|2.5\r")
    assert read_ack(build_ack(bare)).msh.raw(9) == "ACK"


def test_unreadable_input_gets_a_best_effort_reject() -> None:
    ack = read_ack(build_unreadable_ack((FIXTURES / "not_hl7.hl7").read_bytes()))
    assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == ""
    assert ack.get("ERR-3.1") == "100" and ack.get("ERR-2.1") == "MSH"
    assert ack.msh.raw(2) == "^~\\&" and ack.version == "2.5"
    broken = b"MSH|^^^^|SND|SFAC|RCV|RFAC|2024||ADT^A01|BROKEN-1|P|2.4|||AL\rPID|1\r"
    salvaged = read_ack(build_unreadable_ack(broken, "encoding characters unusable"))
    assert salvaged.get("MSA-1") == "CR"  # MSH-15 was valued: enhanced mode
    assert salvaged.get("MSA-2") == "BROKEN-1"
    assert salvaged.get("MSH-3") == "RCV" and salvaged.get("MSH-5") == "SND"
    assert salvaged.version == "2.4" and salvaged.get("ERR-1.4.1") == "102"  # v2.4 layout
    injected = read_ack(build_unreadable_ack(b"MSH#x#A#B#C#D#E#F#G|H^I#CTL|1\r"))
    assert injected.get("MSA-2") == "CTL|1" and injected.get("MSH-5") == "A"
    assert len(injected) == 3


def test_build_nak_for_valid_and_garbage_input() -> None:
    nak = read_ack(
        build_nak((FIXTURES / "adt_a01_core.hl7").read_bytes(), AckError(207, "db down"))
    )
    assert (
        nak.get("MSA-1") == "CE" and nak.get("ERR-3.1") == "207" and nak.get("ERR-8") == "db down"
    )
    ae = read_ack(build_nak((FIXTURES / "adt_a08_lf.hl7").read_bytes(), AckError(207, "x")))
    assert ae.get("MSA-1") == "AE"
    reject = read_ack(build_nak(b"\x00\x01garbage", AckError(207, "x")))
    assert reject.get("MSA-1") == "AR" and reject.get("ERR-3.1") == "100"
    nothing_wanted = load("adt_a40_two_pairs.hl7")  # NE/NE: a NAK is still forced
    assert build_ack(nothing_wanted, "error") is None
    assert read_ack(build_nak(nothing_wanted.raw, AckError())).get("MSA-1") == "CE"


def test_control_ids_are_unique_and_short() -> None:
    ids = {new_control_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"[0-9A-F]{20}", i) for i in ids)
