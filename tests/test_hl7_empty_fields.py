"""HL7 v2 "empty means no change" inside FHIR elements built from several fields.

An empty field leaves what is stored; ``""`` deletes it; a value replaces it (HL7 v2 chapter
2, docs/hl7v2.md "Applying"). Encounter.period (PV1-44/45), .hospitalization (PV1-5, 13, 14,
16, 36-38), .location (PV1-3/6/11/42/43) and .participant (PV1-7/8/9/17/52, PV2-13) are built
from several fields each, so an update merges them field by field: a discharge without PV1-44
keeps the admit time. Checked through the real mapper, the door and the running server.
"""

from __future__ import annotations

import httpx

from tests.test_hl7_http import hl7, post, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import msa, search, unique_id
from tests.test_hl7_live_mapping import adt, visit_fields

__all__ = ["hl7", "server_root"]

ADMITTED = "20240301100000+0000"
DISCHARGED = "20240302100000+0000"


def send(http: httpx.Client, trigger: str, mrn: str, when: str, fields: dict[int, str]) -> None:
    answer = post(http, adt(trigger, unique_id(), mrn, when, fields))
    assert msa(answer.content)[0] == "AA", answer.text


def encounter(client: httpx.Client, visit: str) -> dict:  # type: ignore[type-arg]
    [found] = search(client, "Encounter", identifier=visit)
    return found


def test_a_discharge_without_admit_time_keeps_the_stored_one(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    mrn, visit = unique_id("P"), unique_id("V")
    send(hl7, "A01", mrn, "20240301100000", visit_fields(visit, f44=ADMITTED))
    send(hl7, "A03", mrn, "20240302100000", visit_fields(visit, f45=DISCHARGED))
    assert encounter(client, visit)["period"] == {
        "start": "2024-03-01T10:00:00+00:00",
        "end": "2024-03-02T10:00:00+00:00",
    }
    # "" deletes: the admit time goes, the discharge time stays
    send(hl7, "A03", mrn, "20240302110000", visit_fields(visit, f44='""', f45=DISCHARGED))
    assert encounter(client, visit)["period"] == {"end": "2024-03-02T10:00:00+00:00"}
