"""POST /hl7/v2 on the running server: a backend token, the ER7 body, the ACK back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from app.auth import clients
from audit.tables import audit_event
from hl7_adapters.er7 import parse_messages
from hl7_adapters.tables import hl7_message
from tests.conftest import TEST_CLIENT, LiveServer
from tests.smart_helpers import register_client
from tests.test_hl7_ingest import err_fields, hl7_audit_events, msa, rows_for, search, unique_id
from tests.test_hl7_mllp_server import a01, oru

ER7 = "x-application/hl7-v2+er7"


@pytest.fixture
def server_root(base_url: str) -> str:
    return base_url.removesuffix("/fhir")


@pytest.fixture
def hl7(server_root: str, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_root, headers=auth_headers, timeout=30) as http:
        yield http


@pytest.fixture
def engine(live_server: LiveServer) -> Engine:
    return live_server.app.state.engine  # type: ignore[no-any-return]


def post(http: httpx.Client, body: bytes, content_type: str = ER7) -> httpx.Response:
    return http.post("/hl7/v2", content=body, headers={"Content-Type": content_type})


def test_the_ack_comes_back_and_the_resources_are_there(
    hl7: httpx.Client, client: httpx.Client, engine: Engine
) -> None:
    with engine.connect() as conn:
        registered = clients.get_client_by_name(conn, TEST_CLIENT)
    assert registered is not None
    suite_client = registered.client_id
    for content_type in (ER7, "application/hl7-v2", "text/plain; charset=utf-8"):
        mrn, control = unique_id("P"), unique_id()
        answer = post(hl7, a01(control, mrn, visit=unique_id("V")), content_type)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(ER7)
        assert msa(answer.content) == ("AA", control)
        [found] = search(client, "Patient", identifier=mrn)
        assert found["name"][0]["family"] == "Doe"
        [row] = rows_for(engine, control)
        assert row.channel == "http" and row.status == "accepted" and row.ack == answer.content
        [event] = hl7_audit_events(engine, row.id)
        assert event["agent"][0]["who"]["identifier"]["value"] == suite_client  # the token's


def test_without_a_valid_token_it_is_401_and_audited(server_root: str, engine: Engine) -> None:
    control = unique_id()
    body = a01(control, unique_id("P"))
    with httpx.Client(base_url=server_root, timeout=30) as anonymous:
        refused = post(anonymous, body)
        assert refused.status_code == 401
        assert "Bearer" in refused.headers["www-authenticate"]
        forged = anonymous.post(
            "/hl7/v2", content=body, headers={"Content-Type": ER7, "Authorization": "Bearer x.y.z"}
        )
        assert forged.status_code == 401
    assert rows_for(engine, control) == []  # nothing was read, let alone stored
    with engine.connect() as conn:
        recent = conn.execute(
            select(audit_event.c.content).order_by(audit_event.c.recorded.desc()).limit(5)
        ).scalars()
        refusals = [
            c for c in recent if b"POST /hl7/v2" in bytes(c) and b'"outcome":"4"' in bytes(c)
        ]
    assert len(refusals) >= 2


def test_other_content_types_and_oversize_bodies_are_refused(
    hl7: httpx.Client, live_server: LiveServer
) -> None:
    assert post(hl7, a01(unique_id(), unique_id("P")), "application/json").status_code == 415


def truncated_rows(engine: Engine, marker: bytes) -> list[Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(hl7_message).where(hl7_message.c.status == "truncated"))
        return [r for r in rows if marker in bytes(r.raw)]


@pytest.mark.parametrize(("msh15", "code"), [("", "AR"), ("AL", "CR")])
def test_an_oversize_message_is_rejected_104_and_its_head_kept(
    hl7: httpx.Client,
    client: httpx.Client,
    live_server: LiveServer,
    engine: Engine,
    msh15: str,
    code: str,
) -> None:
    """As over MLLP: not processed, AR (CR in enhanced mode) with ERR 104 at MSH^1, and the
    head kept as a `truncated` row with the size; it was a bare 413 and nothing was kept."""
    limit = live_server.settings.mllp_max_message_bytes
    control, mrn = unique_id(), unique_id("P")
    big = a01(control, mrn, msh15=msh15).replace(b"Ada", b"Ada" + b"x" * limit, 1)
    answer = post(hl7, big)
    assert answer.status_code == 200
    assert msa(answer.content) == (code, control)
    assert err_fields(answer.content) == [("MSH^1", "104", "E")]
    [row] = rows_for(engine, control)
    assert (row.status, row.channel, row.message_code) == ("truncated", "http", "ADT")
    assert bytes(row.raw) == big[: 64 * 1024] and str(len(big)) in row.error
    assert row.ack == answer.content
    assert search(client, "Patient", identifier=mrn) == []


def test_an_oversize_body_without_an_msh_is_413_and_its_head_kept(
    hl7: httpx.Client, live_server: LiveServer, engine: Engine
) -> None:
    limit = live_server.settings.mllp_max_message_bytes
    marker = unique_id("NOTHL7").encode()
    answer = post(hl7, marker + b"x" * limit)
    assert answer.status_code == 413
    [row] = truncated_rows(engine, marker)
    assert bytes(row.raw) == (marker + b"x" * limit)[: 64 * 1024]
    assert str(len(marker) + limit) in row.error


def test_the_tokens_scopes_are_enforced_on_what_the_message_writes(
    live_server: LiveServer, server_root: str, client: httpx.Client, engine: Engine
) -> None:
    auth = live_server.app.state.auth
    scope = "system/Patient.cru"  # no Observation, DiagnosticReport or Provenance
    narrow = register_client(auth, "backend", scope, jwks={"keys": []})
    token = auth.local_token(narrow.name, scope)["access_token"]
    mrn, control = unique_id("P"), unique_id()
    with httpx.Client(
        base_url=server_root, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        answer = post(http, oru(control, mrn, unique_id("O")))
    assert answer.status_code == 200
    assert msa(answer.content)[0] == "AR"
    assert [code for _, code, _ in err_fields(answer.content)] == ["207"]
    assert b"not allowed" in answer.content
    assert search(client, "Patient", identifier=mrn) == []  # not even the Patient: one txn
    assert rows_for(engine, control)[0].status == "rejected"


def test_http_always_answers_even_when_no_acknowledgment_is_asked_for(hl7: httpx.Client) -> None:
    control = unique_id()
    answer = post(hl7, a01(control, unique_id("P"), msh15="NE", msh16="NE"))
    assert answer.status_code == 200 and msa(answer.content) == ("CA", control)


def test_enhanced_mode_over_http_answers_the_commit_and_the_application_ack(
    hl7: httpx.Client,
) -> None:
    """MSH-15/16 AL/AL: the body holds the CA, then the AA (it held the CA only)."""
    control = unique_id()
    answer = post(hl7, a01(control, unique_id("P"), msh15="AL", msh16="AL"))
    acks = parse_messages(answer.content)
    assert answer.status_code == 200
    assert [(a.get("MSA-1"), a.get("MSA-2")) for a in acks] == [("CA", control), ("AA", control)]


def test_a_batch_over_http_gets_a_batch_of_acks(hl7: httpx.Client) -> None:
    first, second = unique_id(), unique_id()
    body = (
        b"BHS|^~\\&|ADTSYS|HOSP|MEDI|MEDI|20240101||||B1\r"
        + a01(first, unique_id("P")) + a01(second, unique_id("P")) + b"BTS|2\r"
    )  # fmt: skip
    answer = post(hl7, body)
    assert answer.status_code == 200
    lines = answer.content.split(b"\r")
    assert lines[0].startswith(b"BHS|^~\\&|MEDI|MEDI|ADTSYS|HOSP|") and lines[0].endswith(b"|B1")
    assert [line for line in lines if line.startswith(b"MSA")] == [
        f"MSA|AA|{first}".encode(),
        f"MSA|AA|{second}".encode(),
    ]
    assert lines[-2:] == [b"BTS|2", b""]
