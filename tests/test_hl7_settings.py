"""Settings that shape what the feeds produce: MEDISENTINEL_HL7_DEFAULT_OFFSET."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from app.context import RequestContext
from app.fhir.search import SearchParams
from app.main import create_app
from app.settings import Settings
from hl7_adapters.feeds import feed_identity
from tests.conftest import TEST_MASTER_KEY, LiveServer


def oru_without_zones(mrn: str, control_id: str) -> bytes:
    segments = [
        f"MSH|^~\\&|LAB|GENLAB|MEDISENTINEL|HUB|20240105090000||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^GENHOSP&1.2.3.4&ISO^MR||Zone^Zelda||19700315|F",
        f"OBR|1||F-{control_id}|24331-1^Lipid panel^LN|||20240105083000",
        "OBX|1|NM|2093-3^Cholesterol^LN||182|mg/dL^mg/dL^UCUM|<200||||F|||20240105083000",
    ]
    return "\r".join(segments).encode() + b"\r"


def effective_times(live_server: LiveServer, mrn: str, offset: str | None) -> list[str]:
    settings = live_server.settings.model_copy(
        update={"hl7_default_offset": offset, "mllp_enabled": False}
    )
    app = create_app(settings)
    control_id = uuid.uuid4().hex[:12]
    identity = feed_identity("hl7-test", address=None, base_url=live_server.base_url)
    ack = app.state.hl7.ingest.handle(
        oru_without_zones(mrn, control_id), channel="http", peer=None, ctx=identity
    )
    assert b"MSA|AA|" + control_id.encode() in ack, ack
    service = app.state.service
    with service.unit_of_work(RequestContext.system(live_server.base_url), write=False) as uow:
        params = SearchParams.parse_query(
            f"subject.identifier=urn:oid:1.2.3.4|{mrn}", "Observation"
        )
        found = service.search(uow, "Observation", params)
    app.state.audit.group_commit.close()
    app.state.engine.dispose()
    return [json.loads(v.content or b"{}")["effectiveDateTime"] for v in found.versions]


def test_times_without_a_zone_take_the_configured_offset(live_server: LiveServer) -> None:
    mrn = uuid.uuid4().hex[:10]
    assert effective_times(live_server, mrn, "+02:00") == ["2024-01-05T08:30:00+02:00"]


def test_without_an_offset_such_times_are_kept_as_dates(live_server: LiveServer) -> None:
    mrn = uuid.uuid4().hex[:10]
    assert effective_times(live_server, mrn, None) == ["2024-01-05"]


def test_a_malformed_offset_is_refused_at_start() -> None:
    with pytest.raises(ValidationError):
        Settings(hl7_default_offset="CET", master_key=TEST_MASTER_KEY)
