"""ER7 ADT messages for the HL7 tests, built from field numbers: the MSH, EVN and PID every
such test starts with, and the segments it is about."""

from __future__ import annotations

import httpx

from tests.test_hl7_http import post
from tests.test_hl7_ingest import msa, unique_id


def segment(name: str, values: dict[int, str]) -> str:
    """One segment: `values` by field number, the fields between them empty."""
    row = [""] * max(values, default=0)
    for number, value in values.items():
        row[number - 1] = value
    return "|".join([name, *row])


def adt_message(
    trigger: str,
    when: str,
    mrn: str,
    *segments: str,
    pid: dict[int, str] | None = None,
    control: str | None = None,
) -> bytes:
    """An ADT^`trigger` sent at `when` (UTC) about the patient `mrn`: MSH, EVN, a PID (Jane
    Doe, or `pid`'s fields with PID-3 the mrn), then `segments`."""
    fields = pid if pid is not None else {1: "1", 5: "Doe^Jane", 7: "19800101", 8: "F"}
    lines = [
        f"MSH|^~\\&|ADT|HOSP|MS|MS|{when}+0000||ADT^{trigger}|{control or unique_id()}|P|2.5",
        f"EVN|{trigger}|{when}+0000",
        segment("PID", {3: f"{mrn}^^^HOSP^MR", **fields}),
        *segments,
    ]
    return ("\r".join(lines) + "\r").encode()


def accepted(http: httpx.Client, body: bytes) -> httpx.Response:
    """Post one message and assert it was applied (AA)."""
    answer = post(http, body)
    assert answer.status_code == 200, answer.text
    assert msa(answer.content)[0] == "AA", answer.content
    return answer
