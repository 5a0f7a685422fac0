"""Periods from two HL7 timestamps of mixed precision (hl7_adapters/mapping/periods.py).

A day and a time on that day cannot be ordered by R4's per-1 (FHIRPath answers "unknown",
which the store refuses): the finer end is kept at the coarser one's precision, the value as
sent in its originalText extension, with a warning. Every Period the mapping builds from two
HL7 timestamps goes through it; `mapped` validates each planned resource (invariants too).
"""

from __future__ import annotations

from typing import Any

import pytest

from hl7_adapters.mapping.context import MapContext
from hl7_adapters.mapping.periods import ORIGINAL_TEXT, period, unordered
from tests.test_hl7_mapping_adt import mapped, of_type, only

DAY, MINUTE = "20261122", "202611221530-0500"


def kept(sent: str) -> dict[str, Any]:
    return {"extension": [{"url": ORIGINAL_TEXT, "valueString": sent}]}


# the pair the per-1 check could not order, as every mapped Period now has it
SAME_DAY = {"start": "2026-11-22", "end": "2026-11-22", "_end": kept(MINUTE)}


@pytest.mark.parametrize(
    ("a", "b", "answer"),
    [
        ("2026-11-22", "2026-11-22T15:30:00-05:00", True),
        ("2026-11-22T15:30:00-05:00", "2026-11-22", True),
        ("2026-11", "2026-11-22", True),
        ("2026", "2026-11-22T15:30:00-05:00", True),
        ("2026-11-21", "2026-11-22T15:30:00-05:00", False),  # other days: ordered
        ("2026-11-22", "2026-11-22", False),
        ("2026-11-22T08:00:00-05:00", "2026-11-22T15:30:00+01:00", False),  # both timed
    ],
)
def test_unordered_is_where_fhirpath_answers_unknown(a: str, b: str, answer: bool) -> None:
    assert unordered(a, b) is answer


def test_the_helper_keeps_each_end_as_sent_unless_unordered() -> None:
    from hl7_adapters.er7 import parse_message

    msg = parse_message(b"MSH|^~\\&|A|B|C|D|20261122+0000||ADT^A01|1|P|2.5\rPV1|1|I\r")
    ctx = MapContext(msg)
    at = ctx.at(msg.segment("PV1"))  # type: ignore[arg-type]
    assert period(at.sub(44), DAY, at.sub(45), MINUTE) == SAME_DAY
    assert period(at.sub(44), "20261121", at.sub(45), MINUTE) == {
        "start": "2026-11-21",
        "end": "2026-11-22T15:30:00-05:00",
    }
    assert period(at.sub(44), "", at.sub(45), MINUTE) == {"end": "2026-11-22T15:30:00-05:00"}
    assert period(at.sub(44), "2026", at.sub(45), "20261122", dates=True) == {
        "start": "2026",
        "end": "2026",
        "_end": kept("20261122"),
    }
    assert [(w.code, w.severity, w.field) for w in ctx.warnings] == [(0, "W", 45)] * 2


def test_lab_periods_of_mixed_precision() -> None:
    """OBR-7/8 (effectivePeriod), OBX-5 DR (valuePeriod), SPM-17 (collectedPeriod)."""
    result = mapped(
        "MSH|^~\\&|LAB|L|MS|HUB|20261122160000+0000||ORU^R01|P1|P|2.5.1\n"
        "PID|1||MRN9^^^HOSP^MR||Doe^Jo\n"
        f"OBR|1||ORD9^LAB|24331-1^Lipid^LN|||{DAY}|{MINUTE}||||||||||||||||||F\n"
        f"OBX|1|DR|8462-4^Interval^LN||{DAY}^{MINUTE}||||||F\n"
        f"SPM|1|^SP9&LAB||SER^Serum^HL70487|||||||||||||{DAY}^{MINUTE}\n"
    )
    assert only(result, "DiagnosticReport").resource["effectivePeriod"] == SAME_DAY
    assert only(result, "Observation").resource["valuePeriod"] == SAME_DAY
    collection = only(result, "Specimen").resource["collection"]
    assert collection["collectedPeriod"] == SAME_DAY
    located = {(w.segment, w.field, w.component) for w in result.warnings if w.code == 0}
    assert {("OBR", 8, None), ("OBX", 5, 2), ("SPM", 17, 2)} <= located


def test_registration_periods_of_mixed_precision() -> None:
    """CX.7/8, XPN.12/13, XAD.13/14, XTN.13/14 (their period) and NK1-8/9 (dates)."""
    pid = ["1"] + [""] * 12  # pid[n - 1] is PID-n
    pid[2] = f"MRN8^^^HOSP^MR^^{DAY}^{MINUTE}"
    pid[4] = f"Doe^Jo^^^^^L^^^^^{DAY}^{MINUTE}"
    pid[10] = f"1 Main St^^Town^^12345^^H^^^^^^{DAY}^{MINUTE}"
    pid[12] = f"^PRN^PH^^^555^1234567^^^^^^{DAY}^{MINUTE}"
    result = mapped(
        "MSH|^~\\&|ADT|H|MS|HUB|20261122160000+0000||ADT^A01|A1|P|2.5.1\n"
        "EVN|A01|20261122160000+0000\n"
        f"PID|{'|'.join(pid)}\n"
        "NK1|1|Roe^Al|SPO^Spouse^HL70063|||||2026|20261122\n"
        "PV1|1|I\n"
    )
    patient = only(result, "Patient").resource
    assert patient["identifier"][0]["period"] == SAME_DAY
    assert patient["name"][0]["period"] == SAME_DAY
    assert patient["address"][0]["period"] == SAME_DAY
    assert patient["telecom"][0]["period"] == SAME_DAY
    [person] = of_type(result, "RelatedPerson")
    assert person.resource["period"] == {"start": "2026", "end": "2026", "_end": kept("20261122")}
