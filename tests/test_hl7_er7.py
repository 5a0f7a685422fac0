"""ER7 tokenizer: own fixtures field by field, the shared corpus, and a mutation fuzz test.

The corpus (``../shared/hl7v2``) is read in place; its tests skip when it is absent. Expected
segment counts are computed here by a deliberately simple, independent method (counting
segment-ID lines, plus the glued ``| OBX|`` pattern) and checked against MANIFEST.md's table.
"""

from __future__ import annotations

import importlib
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hl7_adapters import structures
from hl7_adapters.ack import build_ack
from hl7_adapters.dates import to_fhir_date, to_fhir_datetime
from hl7_adapters.er7 import Hl7ParseError, Message, parse_batch, parse_message, parse_messages
from hl7_adapters.escapes import DEFAULT_DELIMITERS, Delimiters, escape, unescape
from hl7_adapters.validation import check_segment_count
from hl7_adapters.values import parse_path

FIXTURES = Path(__file__).parent / "hl7_fixtures"
CORPUS = Path(  # MEDISENTINEL_HL7_CORPUS: the corpus for a checkout elsewhere (a worktree)
    os.environ.get("MEDISENTINEL_HL7_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "hl7v2"
)
BOM = b"\xef\xbb\xbf"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.hl7")) if CORPUS.is_dir() else []


needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"shared HL7 v2 corpus not found at {CORPUS} (../shared absent)"
)


# --- own fixtures, field by field ---


def test_core_header_helpers() -> None:
    msg = parse_message(fixture("adt_a01_core.hl7"))
    assert [s.id for s in msg] == ["MSH", "EVN", "PID", "NK1", "PV1", "AL1", "ZPI"]
    assert msg.control_id == "CTRL0001"
    assert (msg.message_code, msg.trigger_event, msg.declared_structure) == (
        "ADT",
        "A01",
        "ADT_A01",
    )
    assert msg.structure == "ADT_A01"
    assert msg.version == "2.5.1"
    app = msg.sending_application
    assert (app.namespace_id, app.universal_id, app.universal_id_type) == (
        "REG",
        "1.2.840.114350",
        "ISO",
    )
    assert str(app) == "REG^1.2.840.114350^ISO"
    assert msg.sending_facility.namespace_id == "GENHOSP"
    assert msg.receiving_application.namespace_id == "MEDISENTINEL"
    assert msg.receiving_facility.namespace_id == "HUB"
    assert msg.timestamp == "20240131154501+0100"
    assert msg.timestamp_fhir == "2024-01-31T15:45:01+01:00"
    assert (msg.processing_id, msg.accept_ack_type, msg.application_ack_type) == ("P", "AL", "NE")
    assert msg.enhanced_ack_mode
    assert (msg.charset, msg.codec) == ("8859/1", "latin-1")
    assert msg.warnings == []
    assert msg.raw == fixture("adt_a01_core.hl7")


def test_msh_numbering_follows_the_standard() -> None:
    msg = parse_message(fixture("adt_a01_core.hl7"))
    msh = msg.msh
    assert msh.raw(1) == "|" and msg.get("MSH-1") == "|"
    assert msh.raw(2) == "^~\\&" and msg.get("MSH-2") == "^~\\&"
    assert msg.get("MSH-3") == "REG" and msg.get("MSH-3.2") == "1.2.840.114350"
    assert msg.get("MSH-9.2") == "A01" and msg.get("MSH-10") == "CTRL0001"
    assert msh.field_count == 19  # the trailing '|' makes an empty MSH-19
    assert msh.text.startswith("MSH|^~\\&|REG^")


def test_repetitions_components_subcomponents() -> None:
    msg = parse_message(fixture("adt_a01_core.hl7"))
    pid = msg.segment("PID")
    assert pid is not None
    ids = pid.field(3)
    assert len(ids) == 4
    assert [r.get(1) for r in ids] == ["12345", "987654321", "", "X99"]
    assert ids[2].is_empty() and not ids[2].is_null()
    assert ids[0].subcomponents(4) == ["GENHOSP", "1.2.3.4", "ISO"]
    assert ids[0].get(4) == "GENHOSP" and ids[0].get(4, 3) == "ISO"
    assert msg.get("PID-3[2].4.2") == "2.16.840.1.113883.4.1"
    assert msg.get("PID-3[2].5") == "SS" and msg.get("PID-3[4].5") == "PI"
    assert pid.get("3[1].5") == "MR"
    assert msg.get("PID-11[2].1") == "PO Box 9" and msg.get("PID-11[2].7") == "M"
    assert msg.get("PV1-3.2") == "101" and msg.get("PV1-7.3") == "Alice"
    assert msg.get("NK1-3.2") == "Spouse"


def test_escape_sequences_are_resolved_on_access_and_raw_is_kept() -> None:
    msg = parse_message(fixture("adt_a01_core.hl7"))
    pid = msg.segment("PID")
    assert pid is not None
    assert msg.get("PID-5.1") == "O^Brien&Smith"  # \S\ and \T\
    assert "\\S\\" in pid.raw(5)
    assert msg.get("PID-11.1") == "12 Main St~Apt 4"  # \R\
    assert msg.get("AL1-5") == "Hives\\Rash | pathA"  # \E\, \F\ and \X41\
    assert msg.segment("AL1").raw(5) == "Hives\\E\\Rash \\F\\ path\\X41\\"  # type: ignore[union-attr]


def test_explicit_null_is_not_empty() -> None:
    msg = parse_message(fixture("adt_a01_core.hl7"))
    assert msg.is_null("PID-14") and msg.get("PID-14") == ""  # "" = delete
    assert msg.is_null("PID-13[2]") and not msg.is_null("PID-13[1]")
    assert msg.get("PID-13[1].1") == "(555)555-1234"
    assert not msg.is_null("PID-12") and msg.get("PID-12") == ""  # empty = no change
    assert not msg.is_null("PID-3[3]")
    assert msg.get("ZPI-2") == 'z "field"' and not msg.is_null("ZPI-2")
    lf = parse_message(fixture("adt_a08_lf.hl7"))
    assert lf.is_null("PID-11.2") and lf.get("PID-11.2") == ""
    assert not lf.is_null("PID-11.1") and lf.get("PID-11.3") == "Town"


def test_missing_fields_and_z_segments() -> None:
    msg = parse_message(fixture("adt_a01_core.hl7"))
    pid = msg.segment("PID")
    assert pid is not None
    assert msg.get("PID-99") == "" and msg.get("PID-99", "none") == "none"
    assert pid.field(200) == [] and pid.raw(200) == ""
    assert msg.get("PID-5.9") == "" and msg.get("PID-3[9].1") == ""
    assert msg.get("ZZZ-1") == "" and msg.segment("ZZZ") is None
    assert msg.get("ZPI-1") == "custom"
    assert msg.segment("PID", 2) is None


def test_lf_line_ends_and_missing_structure() -> None:
    msg = parse_message(fixture("adt_a08_lf.hl7"))
    assert [s.id for s in msg] == ["MSH", "EVN", "PID", "PV1"]
    assert msg.declared_structure == "" and msg.version == "2.3"
    assert msg.structure == "ADT_A01"  # A08 uses ADT_A01 (table 0354)
    assert msg.processing_id == "T" and not msg.enhanced_ack_mode
    assert msg.timestamp_fhir == "2004-01-01T12:00:00"
    assert to_fhir_date(msg.get("PID-7")) == "1962"
    pv1 = msg.segment("PV1")
    assert pv1 is not None and pv1.field_count == 51  # trailing empty fields are kept
    assert pv1.get("2") == "O" and pv1.field(51) == []


def test_bom_crlf_utf8_and_invalid_dates() -> None:
    data = fixture("oru_r01_utf8_bom_crlf.hl7")
    assert data.startswith(BOM) and b"\r\n" in data
    msg = parse_message(data)
    assert [s.id for s in msg] == ["MSH", "PID", "OBR", "OBX", "OBX"]
    assert msg.warnings == [] and msg.codec == "utf-8" and msg.charset == "UNICODE UTF-8"
    assert (msg.get("PID-5.1"), msg.get("PID-5.2")) == ("Müller", "Jürgen")
    assert (msg.get("PID-5[2].1"), msg.get("PID-5[2].2")) == ("山田", "太郎")
    assert msg.get("OBX[2]-5") == "Line one\nLine two\r\nLine three\n\nEndé"
    assert msg.timestamp_fhir == "2024-02-29T23:59:59.1234-05:00"
    assert to_fhir_date(msg.get("PID-7")) is None  # 19620352
    assert to_fhir_datetime(msg.get("OBX[1]-14")) is None  # 20240230
    assert to_fhir_datetime(msg.get("OBR-7")) == "2024-02-29T12:00:00"
    assert msg.raw.startswith(b"MSH")


def test_latin1_declared_in_msh18() -> None:
    msg = parse_message(fixture("adt_a04_latin1.hl7"))
    assert msg.codec == "latin-1"
    assert (msg.get("PID-5.1"), msg.get("PID-5.2")) == ("Lefèvre", "Hélène")
    assert msg.get("PID-11.1") == "Rue de l'Église 3" and msg.get("PID-11.3") == "Besançon"
    assert msg.structure == "ADT_A01" and msg.declared_structure == "ADT_A04"
    assert any("ADT_A04" in w for w in msg.warnings)


def test_bytes_not_matching_the_declared_charset_do_not_raise() -> None:
    msg = parse_message(fixture("adt_a01_bad_utf8.hl7"))
    assert msg.get("PID-5.1") == "Garçon"  # a Latin-1 byte inside UTF-8: decoded as Latin-1
    assert msg.get("PID-5.2") == "François"  # the valid UTF-8 around it is untouched
    assert any("Latin-1" in w for w in msg.warnings)


@pytest.mark.parametrize(
    ("msh18", "body", "value", "warned"),
    [
        (b"", "Zoë".encode(), "Zoë", True),  # undeclared UTF-8
        (b"", "Zoë".encode("latin-1"), "Zoë", True),  # undeclared Latin-1
        (b"ASCII", "Zoë".encode(), "Zoë", True),
        (b"ASCII", b"Zoe", "Zoe", False),
        (b"KLINGON", b"Zo\xeb", "Zoë", True),
        (b"UNICODE UTF-16", b"Zoe", "Zoe", True),
        (b"8859/15", b"\xa4uro", "€uro", False),
        (b"UNICODE UTF-8", "Zoë".encode(), "Zoë", False),
    ],
)
def test_charset_variants(msh18: bytes, body: bytes, value: str, warned: bool) -> None:
    data = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5||||||" + msh18 + b"\rPID|1||1||" + body + b"\r"
    msg = parse_message(data)
    assert msg.get("PID-5") == value
    assert bool(msg.warnings) is warned


def test_five_character_encoding_string() -> None:
    msg = parse_message(fixture("oru_r01_5char.hl7"))
    assert msg.delimiters.truncation == "#"
    assert msg.delimiters.encoding_characters == "^~\\&#"
    assert msg.get("MSH-2") == "^~\\&#"
    assert msg.get("PID-3.1") == "P#42" and msg.get("OBR-2") == "ORD#1"
    assert msg.get("OBX-5") == "Room #4 # cut"  # \P\ is the truncation character
    assert msg.warnings == []


def test_custom_delimiters() -> None:
    msg = parse_message(fixture("custom_delims.hl7"))
    assert msg.delimiters == Delimiters("!", "@", "#", "$", "%")
    assert msg.get("MSH-1") == "!" and msg.get("MSH-2") == "@#$%"
    assert msg.message_code == "ADT" and msg.structure == "ADT_A01"
    assert msg.get("PID-3[1].4.2") == "1.2" and msg.get("PID-3[2].1") == "A2"
    assert msg.get("PID-5.1") == "Bang!Name" and msg.get("PID-5.2") == "Given@Part"


def test_batch_is_split_into_messages() -> None:
    data = fixture("batch_fhs_bhs.hl7")
    batch = parse_batch(data)
    assert batch.is_batch
    assert [s.id for s in batch.header] == ["FHS", "BHS"]
    assert [s.id for s in batch.trailer] == ["BTS", "FTS"]
    assert batch.trailer[0].get("1") == "3" and batch.header[1].get("9") == "batch1"
    assert [m.control_id for m in batch.messages] == ["B1", "B2", "B3"]
    assert [len(m) for m in batch.messages] == [4, 4, 4]
    assert [m.structure for m in batch.messages] == ["ADT_A01", "ADT_A03", "ORU_R01"]
    assert batch.messages[2].get("OBX-5") == "72"
    for msg in batch.messages:
        assert msg.raw.startswith(b"MSH") and msg.raw.count(b"MSH") == 1
    assert b"".join(m.raw for m in batch.messages) in data
    assert parse_messages(data)[1].get("PID-5.1") == "Two"
    with pytest.raises(Hl7ParseError):
        parse_message(data)


def test_batch_of_one_and_empty_batch() -> None:
    one = b"BHS|^~\\&|S\rMSH|^~\\&|S|F|||2024||ADT^A01|X|P|2.5\rPID|1\rBTS|1\r"
    msg = parse_message(one)
    assert msg.control_id == "X" and len(msg) == 2
    assert any("batch envelope" in w for w in msg.warnings)
    empty = parse_batch(b"BHS|^~\\&|S\rBTS|0\r")
    assert empty.messages == [] and empty.is_batch


def test_junk_before_msh_and_blank_lines() -> None:
    msg = parse_message(fixture("junk_before_msh.hl7"))
    assert [s.id for s in msg] == ["MSH", "EVN", "PID", "PV1"]
    assert msg.control_id == "CTRL0008" and msg.structure == "ADT_A02"
    assert msg.get("PV1-3.1") == "NEW"
    assert any("junk" in w for w in msg.warnings)


def test_glued_segments_are_split_only_on_standard_ids() -> None:
    msg = parse_message(fixture("glued_segments.hl7"))
    assert [s.id for s in msg] == ["MSH", "PID", "OBR", "OBX", "OBX", "OBX"]
    obr = msg.segment("OBR")
    assert obr is not None and obr.text == "OBR|1|A^B|C|37953^CT CHEST^L|"
    assert msg.get("OBX[1]-5") == "First line." and msg.get("OBX[1]-4") == "1"
    assert msg.get("OBX[2]-5") == "Second" and msg.get("OBX[2]-6") == " USA"  # not a segment
    assert msg.get("OBX[3]-6") == " PIDGIN"  # four letters: text, not a segment
    assert sum("glued" in w for w in msg.warnings) == 2
    text = parse_message(b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rNTE|1||see | OBX|2 below\r")
    assert [s.id for s in text] == ["MSH", "NTE"]  # too few fields after it to be a segment


def test_a_line_that_starts_no_segment_is_joined_back() -> None:
    data = b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rOBX|1|TX|||line one\nline two|\rNTE|1\r"
    msg = parse_message(data)
    assert [s.id for s in msg] == ["MSH", "OBX", "NTE"]
    assert msg.get("OBX-5") == "line one\nline two"
    assert msg.segment("OBX").raw(5) == "line one\\X0A\\line two"  # type: ignore[union-attr]
    assert any("joined" in w for w in msg.warnings)


def test_two_merge_pairs_and_structure_by_version() -> None:
    msg = parse_message(fixture("adt_a40_two_pairs.hl7"))
    assert [s.id for s in msg][2:] == ["PID", "MRG", "PID", "MRG"]
    assert [m.get("1.1") for m in msg.segments("MRG")] == ["OLD1", "OLD2"]
    assert msg.get("PID[2]-3.1") == "SURV2" and msg.get("MRG[2]-1.1") == "OLD2"
    assert msg.structure == "ADT_A39"


def test_trigger_from_evn_when_msh9_has_none() -> None:
    msg = parse_message(b"MSH|^~\\&|A|B|C|D|1990||ADT|1|P|2.1\rEVN|A04|1990\rPID|1\r")
    assert msg.trigger_event == "A04" and msg.structure == "ADT_A01"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n",
        b"PID|1||1\rPV1|1\r",
        b"MSH|^^^^|A|B\r",  # duplicated encoding characters
        b"MSH|^ \\&|A\r",  # whitespace as an encoding character
        b"MSH|^A\\&|X\r",  # alphanumeric encoding character
        b"MSH\x87^~\\&\x87A\x87B\r",  # non-ASCII field separator (found by the fuzz test)
        b"MSH|^~\\\xe9|A\r",  # non-ASCII encoding character
    ],
)
def test_unreadable_input_raises_the_documented_error(data: bytes) -> None:
    with pytest.raises(Hl7ParseError):
        parse_message(data)


def test_short_msh2_is_completed_and_str_input_refused() -> None:
    msg = parse_message(b"MSH|^~|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||a&b\\F\\c\r")
    assert msg.delimiters.encoding_characters == "^~\\&"
    assert any("MSH-2" in w for w in msg.warnings)
    with pytest.raises(TypeError):
        parse_message("MSH|^~\\&|A")  # type: ignore[arg-type]


def test_paths() -> None:
    assert parse_path("PID-3.1") == ("PID", 1, 3, 1, 1, 1)
    assert parse_path("OBX[2]-5[3].4.2") == ("OBX", 2, 5, 3, 4, 2)
    assert parse_path("PID.3.1") == ("PID", 1, 3, 1, 1, 1)
    assert parse_path("3") == ("", 1, 3, 1, 1, 1)
    for bad in ("PID", "PID-0", "PID-3.0", "pid-3", "PID-x", ""):
        with pytest.raises(ValueError):
            parse_path(bad)


# --- dates, escapes, structures ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", "2024"),
        ("202402", "2024-02"),
        ("20240229", "2024-02-29"),
        ("2024022913", "2024-02-29T13:00:00"),
        ("202402291305", "2024-02-29T13:05:00"),
        ("20240229130559", "2024-02-29T13:05:59"),
        ("20240229130559.5+0100", "2024-02-29T13:05:59.5+01:00"),
        ("20150602100012.43+0100", "2015-06-02T10:00:12.43+01:00"),
        ("20240101-0000", "2024-01-01"),  # a date has no offset in FHIR
        (" 20240101 ", "2024-01-01"),
        ("20230229", None),
        ("196203520", None),
        ("1994050216163360", None),
        ("20241301", None),
        ("20240132", None),
        ("20240101250000", None),
        ("20240101126000", None),
        ("20240101+2500", None),
        ("0000", None),
        ("", None),
        ("abc", None),
        ('""', None),
    ],
)
def test_dtm_to_fhir(value: str, expected: str | None) -> None:
    assert to_fhir_datetime(value) == expected


def test_dtm_default_offset_and_date() -> None:
    assert to_fhir_datetime("202401011200", "+02:00") == "2024-01-01T12:00:00+02:00"
    assert to_fhir_datetime("20240101", "+02:00") == "2024-01-01"
    assert to_fhir_date("20240131154501+0100") == "2024-01-31"
    assert to_fhir_date("19620352") is None


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"),
        ("\\X41424344\\", "ABCD"),
        ("\\XC3A9\\", "é"),
        ("\\X0D0A\\", "\r\n"),
        ("\\H\\bold\\N\\", "bold"),
        ("x\\.br\\y\\.sp 3\\z\\.sk 2\\w\\.in 4\\", "x\ny\n\n\nz  w"),
        ("\\Zlocal\\rest", "\\Zlocal\\rest"),  # locally defined: kept
        ("C:\\dir\\F\\x", "C:\\dir|x"),  # unknown then a real sequence
        ("unterminated \\F", "unterminated \\F"),
        ("\\X4\\", "\\X4\\"),  # odd hex: kept
        ("\\XZZ\\", "\\XZZ\\"),
        ("\\\\", "\\\\"),
        ("\\P\\", "\\P\\"),  # no truncation character in a 4-character MSH-2
    ],
)
def test_unescape(raw: str, plain: str) -> None:
    assert unescape(raw, DEFAULT_DELIMITERS) == plain


def test_unescape_keeps_formatting_on_request_and_escape_round_trips() -> None:
    assert unescape("a\\.br\\b", DEFAULT_DELIMITERS, formatting=False) == "a\\.br\\b"
    assert unescape("a\\.sp 99999\\", DEFAULT_DELIMITERS).count("\n") == 100  # bounded
    five = Delimiters(truncation="#")
    rng = random.Random(7)
    alphabet = "ab|^~\\&#\r\n é"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for d in (DEFAULT_DELIMITERS, five):
            escaped = escape(text, d)
            assert not set(escaped) & {d.field, d.component, d.repetition, d.subcomponent, "\r"}
            assert unescape(escaped, d) == text


REQUIRED_STRUCTURES = {
    ("ADT", "A01"): "ADT_A01",
    ("ADT", "A02"): "ADT_A02",
    ("ADT", "A03"): "ADT_A03",
    ("ADT", "A04"): "ADT_A01",
    ("ADT", "A05"): "ADT_A05",
    ("ADT", "A08"): "ADT_A01",
    ("ADT", "A11"): "ADT_A09",
    ("ADT", "A13"): "ADT_A01",
    ("ADT", "A28"): "ADT_A05",
    ("ADT", "A31"): "ADT_A05",
    ("ADT", "A40"): "ADT_A39",
    ("ORU", "R01"): "ORU_R01",
    ("ORM", "O01"): "ORM_O01",
    ("MDM", "T02"): "MDM_T02",
    ("VXU", "V04"): "VXU_V04",
    ("ACK", "A01"): "ACK",
    ("ACK", ""): "ACK",
}


def test_trigger_to_structure_table() -> None:
    for (mtype, trigger), structure in REQUIRED_STRUCTURES.items():
        assert structures.structure_for(mtype, trigger) == structure, (mtype, trigger)
        assert structures.structure_for(mtype.lower(), f" {trigger.lower()} ", "2.8") == structure
    assert structures.structure_for("ADT", "A28", "2.3.1") == "ADT_A01"  # no ADT_A05 before 2.4
    assert structures.structure_for("ADT", "A99") is None
    assert structures.events_of("ADT_A01") == ("A01", "A04", "A08", "A13")


def test_resolve_structure() -> None:
    assert structures.resolve_structure("ADT", "A04", "ADT_A04", "2.8")[0] == "ADT_A01"
    assert structures.resolve_structure("ADT", "A04", "ADT_A04", "2.8")[1]
    assert structures.resolve_structure("ADT", "A28", "ADT_A05", "2.3.1") == ("ADT_A05", None)
    assert structures.resolve_structure("ADT", "A28", "", "2.3.1") == ("ADT_A01", None)
    assert structures.resolve_structure("ERP", "Z99", "ERP_R09") == ("ERP_R09", None)
    assert structures.resolve_structure("ZZZ", "Z01", "") == (None, None)


def test_structures_exist_in_hl7apy_definitions() -> None:
    """Every structure the table gives for the required events is one hl7apy defines."""
    for version, module in (("2.5", "v2_5"), ("2.6", "v2_6"), ("2.3", "v2_3")):
        defined = importlib.import_module(f"hl7apy.{module}.messages").MESSAGES
        for mtype, trigger in REQUIRED_STRUCTURES:
            structure = structures.structure_for(mtype, trigger, version)
            assert structure in defined, (version, mtype, trigger, structure)


def test_segment_count_guard_on_fixtures() -> None:
    clean = check_segment_count(parse_message(fixture("adt_a40_two_pairs.hl7")))
    assert clean.ok and clean.hl7apy_count == 6 and clean.structure == "ADT_A39"
    five = check_segment_count(parse_message(fixture("oru_r01_5char.hl7")))
    assert five.ok  # hl7apy alone refuses a 5-character MSH-2 in v2.5.1
    z_seg = check_segment_count(parse_message(fixture("adt_a01_core.hl7")))
    assert not z_seg.ok and z_seg.missing == {"ZPI": 1}  # hl7apy drops the Z-segment silently


# --- the shared corpus ---


def _manifest() -> tuple[dict[str, int], dict[str, str], dict[str, int]]:
    """(segs per file, EOL/BOM per file, hl7apy 'lost' per file where a number is given)."""
    text = (CORPUS / "MANIFEST.md").read_text(encoding="utf-8")
    files_part, hl7apy_part = text.split("## hl7apy 1.3.5 results per file", 1)
    segs: dict[str, int] = {}
    eol: dict[str, str] = {}
    lost: dict[str, int] = {}
    for line in files_part.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if line.startswith("| `") and cells[-2].isdigit():
            segs[cells[1].strip("`")] = int(cells[-2])
            eol[cells[1].strip("`")] = cells[-3]
    for line in hl7apy_part.split("## Summary", 1)[0].splitlines():
        cells = [c.strip() for c in line.split("|")]
        if line.startswith("| `") and cells[5].strip("*").isdigit():
            lost[cells[1].strip("`")] = int(cells[5].strip("*"))
    return segs, eol, lost


def _independent_count(data: bytes) -> tuple[int, int, int]:
    """(lines, messages, segments) by plain line counting, plus the glued '| OBX|' pattern."""
    lines = [ln for ln in re.split(rb"\r\n|\r|\n", data.removeprefix(BOM)) if ln.strip()]
    ids = [ln[:3] for ln in lines if re.match(rb"[A-Z][A-Z0-9]{2}\|", ln)]
    glued = sum(len(re.findall(rb"\| (?:OBX|OBR|NTE|PID|PV1)\|", ln)) for ln in lines)
    envelope = sum(i in (b"FHS", b"BHS", b"BTS", b"FTS") for i in ids)
    return len(lines), ids.count(b"MSH"), len(ids) - envelope + glued


@needs_corpus
def test_corpus_message_and_segment_counts() -> None:
    segs, eol, _ = _manifest()
    files = corpus_files()
    assert len(files) == 35 and set(segs) == {f.name for f in files}
    for path in files:
        data = path.read_bytes()
        lines, n_messages, n_segments = _independent_count(data)
        assert lines == segs[path.name], path.name  # MANIFEST's 'segs' column is lines
        assert data.startswith(BOM) == ("BOM" in eol[path.name]), path.name
        messages = parse_messages(data)
        assert len(messages) == n_messages, path.name
        assert sum(len(m) for m in messages) == n_segments, path.name
        for msg in messages:
            assert msg.msh.id == "MSH" and msg.control_id, path.name
            assert msg.structure, path.name


@needs_corpus
def test_corpus_known_facts() -> None:
    def one(name: str) -> Message:
        return parse_message((CORPUS / name).read_bytes())

    batch = parse_batch((CORPUS / "09_ADT_A04_batch.hl7").read_bytes())
    assert len(batch.messages) == 2 and [s.id for s in batch.header] == ["BHS"]
    assert {(m.message_code, m.trigger_event, m.structure, m.version) for m in batch.messages} == {
        ("ADT", "A04", "ADT_A01", "2.5")
    }
    for name in ("19_ORU_R01_lab.hl7", "27_ORM_O01.hl7"):
        assert one(name).delimiters.encoding_characters == "^~\\&#"
    assert one("19_ORU_R01_lab.hl7").version == "2.5.1"
    for name in ("22_ORU_R01_pcd01.hl7", "35_OLIS_ERP_Z99_quirk.hl7"):
        assert one(name).charset == "8859/1" and one(name).codec == "latin-1"
    wrong = {
        "07_ADT_A04.hl7": "ADT_A01",
        "08_ADT_A04.hl7": "ADT_A01",
        "10_ADT_A08.hl7": "ADT_A01",
        "11_ADT_A28.hl7": "ADT_A05",
        "12_ADT_A31.hl7": "ADT_A05",
        "13_ADT_A40.hl7": "ADT_A39",
        "14_ADT_A40.hl7": "ADT_A39",
    }
    for name, structure in wrong.items():
        assert one(name).structure == structure, name
    merge = one("14_ADT_A40.hl7")
    assert [s.id for s in merge].count("PID") == 2 and [s.id for s in merge].count("MRG") == 2
    assert one("18_ORU_R01_lab.hl7").get("PID-7") == "196203520"
    assert to_fhir_date(one("18_ORU_R01_lab.hl7").get("PID-7")) is None
    assert one("33_VXU_V04.hl7").timestamp_fhir is not None
    assert ".655" in (one("33_VXU_V04.hl7").timestamp_fhir or "")
    quirk = one("20_ORU_R01_rad_quirk.hl7")
    assert [s.id for s in quirk].count("OBX") == 5 and quirk.version == "2.2"
    assert quirk.segment("MSA") is not None
    olis = one("35_OLIS_ERP_Z99_quirk.hl7")
    assert olis.segment("ZNT") is not None and olis.sending_application.universal_id == "OLIS"
    assert olis.sending_application.namespace_id == ""
    mojibake = one("27_ORM_O01.hl7")
    assert "\ufffd" in mojibake.normalized_text() and mojibake.warnings
    report = one("30_MDM_T02.hl7")
    assert "\\.br\\" in report.normalized_text()
    assert any("\n" in s.get("5") for s in report.segments("OBX"))


@needs_corpus
def test_corpus_segment_count_guard_matches_manifest() -> None:
    _, _, lost = _manifest()
    assert lost["15_ORU_R01_lab.hl7"] == 9 and lost["35_OLIS_ERP_Z99_quirk.hl7"] == 3
    for path in corpus_files():
        for msg in parse_messages(path.read_bytes()):
            report = check_segment_count(msg)
            assert report.error is None, (path.name, report.error)
            dropped = sum(report.missing.values())
            assert report.hl7apy_count == report.tokenizer_count - dropped
            if path.name in lost:
                assert dropped == lost[path.name], (path.name, report.missing)
    assert check_segment_count(
        parse_message((CORPUS / "15_ORU_R01_lab.hl7").read_bytes())
    ).missing == {
        "PRT": 8,
        "TXA": 1,
    }


# --- mutation fuzz ---

_POOL = [
    b'""',
    b"",
    b"\\",
    b"\\X\\",
    b"\\XZZ\\",
    b"\\X0\\",
    b"\\.sp 99999999\\",
    b"^^^",
    b"~~",
    b"&&",
    b"\xe9\xff\xfe",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\r",
    b"\n",
    b"MSH|",
    b"| OBX|",
    b"A" * 300,
    b"20240230",
    b"UNICODE UTF-16",
    b"KLINGON",
    b"8859/1",
    b"NE",
    b"ER",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random byte or field mutations of an ER7 message."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[pos:pos] = rng.choice(_POOL)
        elif op == 2:
            del out[pos : pos + rng.randint(1, 40)]
        elif op == 3:
            out[pos:pos] = out[pos : pos + rng.randint(1, 60)]
        elif op == 4:
            del out[pos:]
        else:  # field-level: replace, drop or duplicate a field in some segment
            segments = bytes(out).split(b"\r")
            i = rng.randrange(len(segments))
            fields = segments[i].split(b"|")
            j = rng.randrange(len(fields))
            if op == 5:
                fields[j] = rng.choice(_POOL)
            elif op == 6:
                del fields[j]
            else:
                fields.insert(j, fields[j])
            segments[i] = b"|".join(fields)
            out = bytearray(b"\r".join(segments))
    return bytes(out)


def sample_inputs() -> list[bytes]:
    """Seeds for mutation: every fixture and every corpus file present."""
    paths = sorted(FIXTURES.glob("*.hl7")) + corpus_files()
    return [p.read_bytes() for p in paths]


def mutated_cases(count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    seeds = sample_inputs()
    for _ in range(count):
        yield mutate(rng.choice(seeds), rng)


def exercise(msg: Message) -> None:
    """Touch every accessor the mapper will use."""
    for name in (
        "control_id",
        "message_code",
        "trigger_event",
        "declared_structure",
        "version",
        "timestamp_fhir",
        "processing_id",
        "processing_mode",
        "accept_ack_type",
        "application_ack_type",
        "charset",
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "enhanced_ack_mode",
    ):
        getattr(msg, name)
    for segment in msg:
        for n in range(1, segment.field_count + 1):
            for rep in segment.field(n):
                rep.is_null()
                rep.is_empty()
                for c in range(1, len(rep.components()) + 2):
                    for s in range(1, 3):
                        value = rep.get(c, s)
                        to_fhir_datetime(value)
                    rep.subcomponents(c)
    msg.normalized_text()
    for outcome in ("accept", "error", "reject"):
        raw_ack = build_ack(msg, outcome, force=True)
        assert raw_ack is not None
        acks = parse_messages(raw_ack)  # the ACKs themselves must always be readable
        assert 1 <= len(acks) <= 2  # enhanced mode: a commit ACK and an application ACK
        for ack in acks:
            assert ack.get("MSA-1") in {"AA", "AE", "AR", "CA", "CE", "CR"}
            assert ack.get("MSA-2") == msg.msh.get("10")


def test_mutation_fuzz_tokenizer_raises_only_its_parse_error() -> None:
    parsed = refused = 0
    for data in mutated_cases(400, seed=20240131):
        try:
            messages = parse_messages(data)
        except Hl7ParseError:
            refused += 1
            continue
        parsed += 1
        for msg in messages:
            exercise(msg)
    assert parsed > 300  # most mutations stay readable; the rest must fail only as documented
