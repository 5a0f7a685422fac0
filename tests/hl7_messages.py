"""ER7 ADT messages for the HL7 tests, built from field numbers (the MSH, EVN and PID every
such test starts with, and the segments it is about), and one patient's ADT conversation
with the running server (AdtPatient)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.test_hl7_http import post
from tests.test_hl7_ingest import msa, search, unique_id
from tests.test_hl7_live_mapping import visit_fields

JSON = dict[str, Any]


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
    occurred: str = "",
) -> bytes:
    """An ADT^`trigger` sent at `when` (UTC) about the patient `mrn`: MSH, EVN (EVN-6
    `occurred`), a PID (Jane Doe, or `pid`'s fields with PID-3 the mrn), then `segments`."""
    fields = pid if pid is not None else {1: "1", 5: "Doe^Jane", 7: "19800101", 8: "F"}
    evn = {1: trigger, 2: f"{when}+0000", **({6: occurred} if occurred else {})}
    lines = [
        f"MSH|^~\\&|ADT|HOSP|MS|MS|{when}+0000||ADT^{trigger}|{control or unique_id()}|P|2.5",
        segment("EVN", evn),
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


@dataclass
class AdtPatient:
    """One new patient (PID-3 `mrn`) whose visits (the first: `visit`) a test drives
    through POST /hl7/v2."""

    hl7: httpx.Client
    client: httpx.Client
    mrn: str = field(default_factory=lambda: unique_id("P"))
    visit: str = field(default_factory=lambda: unique_id("V"))

    def fields(self, **extra: str) -> dict[int, str]:
        """PV1 fields naming `visit` (tests.test_hl7_live_mapping.visit_fields)."""
        return visit_fields(self.visit, **extra)

    def encounter(self, visit: str | None = None) -> JSON:
        """The Encounter of `visit` (default: the first)."""
        [found] = search(self.client, "Encounter", identifier=visit or self.visit)
        return found

    def post(self, trigger: str, when: str, pv1: dict[int, str], *segments: str) -> httpx.Response:
        """ADT^`trigger` with these PV1 fields (after `segments`), not checked."""
        body = adt_message(trigger, when, self.mrn, *segments, segment("PV1", pv1))
        return post(self.hl7, body)

    def send(self, trigger: str, when: str, pv1: dict[int, str], occurred: str = "") -> str:
        """ADT^`trigger`, asserted AA; returns its control id."""
        control = unique_id()
        pv1_segment = segment("PV1", pv1)
        accepted(self.hl7, adt_message(trigger, when, self.mrn, pv1_segment, control=control,
                                       occurred=occurred))  # fmt: skip
        return control

    def encounters(self) -> list[JSON]:
        [patient] = search(self.client, "Patient", identifier=self.mrn)
        return search(self.client, "Encounter", subject=f"Patient/{patient['id']}")


@pytest.fixture
def patient(hl7: httpx.Client, client: httpx.Client) -> AdtPatient:
    """A new patient for the test (the hl7 fixture: tests.test_hl7_http)."""
    return AdtPatient(hl7, client)
