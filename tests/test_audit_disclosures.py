"""Accounting of disclosures (45 CFR 164.528) at GET /audit/disclosures/{patient_id}: a
patient's data read by a user (through a real SMART sign-in) and by a backend client, then
accounted for as JSON and CSV by a compliance officer and by a system/AuditEvent.rs client."""

from __future__ import annotations

import csv
import io
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.auth import clients
from app.auth.pkce import s256
from app.auth.server import AuthServer
from app.db import write_transaction
from app.fhir.instants import to_instant
from tests.conftest import LiveServer
from tests.helpers import observation, patient
from tests.smart_helpers import (
    CALLBACK,
    Browser,
    create_resource,
    query_of,
    register_client,
    register_user,
)
from tests.test_hl7_mllp_server import a01, oru

USER_SCOPE = "openid fhirUser user/*.rs"
OFFICER_SCOPE = "openid fhirUser user/AuditEvent.rs"


def user_token(live_server: LiveServer, role: str, fhir_user: str | None, scope: str) -> str:
    """An access token for a new user of `role`, through the real authorize/login/consent
    pages and the token endpoint (authorization code + PKCE, a public client)."""
    auth = live_server.app.state.auth
    root = live_server.settings.server_root
    app = register_client(auth, "public", scope)
    username = register_user(auth, role, fhir_user)
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    query = httpx.QueryParams(
        response_type="code", client_id=app.client_id, redirect_uri=CALLBACK, scope=scope,
        state=state, aud=live_server.base_url, code_challenge=s256(verifier),
        code_challenge_method="S256",
    )  # fmt: skip
    back = Browser(root).sign_in(f"{root}/auth/authorize?{query}", username)
    assert query_of(back)["state"] == state, back
    answer = httpx.post(
        f"{root}/auth/token",
        data={"grant_type": "authorization_code", "code": query_of(back)["code"],
              "redirect_uri": CALLBACK, "code_verifier": verifier, "client_id": app.client_id},
        timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def backend_token(auth: AuthServer, scope: str) -> tuple[str, str]:
    """(client_id, access token) of a new backend client registered for `scope`."""
    name = f"backend-{secrets.token_hex(5)}"
    with write_transaction(auth.engine) as conn:
        made = clients.create_client(conn, name, "backend", scope=scope, jwks={"keys": []})
    return made.record.client_id, str(auth.local_token(name, scope)["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


@dataclass(frozen=True)
class Story:
    patient: str
    other_patient: str
    observations: list[str]
    practitioner: str
    user_client: str
    username: str
    backend_client: str
    started: str
    middle: str  # after the user's reads, before the backend's
    ended: str


@pytest.fixture(scope="module")
def story(live_server: LiveServer, auth_headers: dict[str, str]) -> Story:
    auth = live_server.app.state.auth
    base = live_server.base_url
    with httpx.Client(base_url=base, headers=auth_headers, timeout=30) as admin:
        pid = create_resource(admin, patient())
        other = create_resource(admin, patient())
        obs = [
            create_resource(admin, observation(subject={"reference": f"Patient/{pid}"}))
            for _ in range(2)
        ]
        create_resource(admin, observation(subject={"reference": f"Patient/{other}"}))
        doctor = create_resource(
            admin, {"resourceType": "Practitioner", "name": [{"family": "Doc"}]}
        )
    started = to_instant(time.time_ns() // 1000)
    time.sleep(0.01)

    token = user_token(live_server, "practitioner", f"Practitioner/{doctor}", USER_SCOPE)
    grant = auth.authenticate(f"Bearer {token}")
    with httpx.Client(base_url=base, headers=bearer(token), timeout=30) as http:
        assert http.get(f"/Observation/{obs[0]}").status_code == 200
        assert http.get(f"/Patient/{pid}").status_code == 200
        found = http.get("/Observation", params={"subject": f"Patient/{pid}"})
        assert found.status_code == 200 and found.json().get("entry")
    time.sleep(0.01)
    middle = to_instant(time.time_ns() // 1000)
    time.sleep(0.01)

    backend_id, backend = backend_token(auth, "system/*.rs")
    with httpx.Client(base_url=base, headers=bearer(backend), timeout=30) as http:
        assert http.get(f"/Observation/{obs[1]}").status_code == 200
        # A read that fails discloses nothing.
        assert http.get("/Observation/does-not-exist").status_code == 404
    time.sleep(0.01)
    ended = to_instant(time.time_ns() // 1000)
    return Story(pid, other, obs, doctor, grant.client_id, grant.subject, backend_id,
                 started, middle, ended)  # fmt: skip


def accounting(
    live_server: LiveServer, patient_id: str, token: str | None, **params: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{live_server.settings.server_root}/audit/disclosures/{patient_id}"
    return httpx.get(url, params=params, headers=headers, timeout=30)


def test_json_accounting_for_a_compliance_officer(live_server: LiveServer, story: Story) -> None:
    officer = user_token(live_server, "compliance", None, OFFICER_SCOPE)
    response = accounting(live_server, story.patient, officer, format="json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["patient"] == f"Patient/{story.patient}"
    assert body["generated"] >= story.ended
    listed = body["disclosures"]
    dates = [d["date"] for d in listed]
    assert dates == sorted(dates)  # oldest first
    ours = [d for d in listed if story.started <= d["date"] <= story.ended]
    # The creations before `started` are not disclosures; our four accesses are, in order.
    assert [d["interaction"] for d in ours] == ["read", "read", "search-type", "read"]
    user_reads, backend_reads = ours[:3], ours[3:]
    for d in user_reads:
        assert d["recipient"] == {
            "client_id": story.user_client,
            "user": f"Practitioner/{story.practitioner}",
            "username": story.username,
        }
        assert d["purpose"] is None
        assert d["event"].startswith("AuditEvent/")
    assert user_reads[0]["what"] == [f"Observation/{story.observations[0]}/_history/1"]
    assert user_reads[0]["query"] == f"GET /fhir/Observation/{story.observations[0]}"
    assert user_reads[1]["what"] == [f"Patient/{story.patient}/_history/1"]
    assert user_reads[2]["what"] == [f"Observation?subject=Patient/{story.patient}"]
    assert user_reads[2]["query"].startswith("GET /fhir/Observation?subject=")
    assert backend_reads[0]["recipient"] == {
        "client_id": story.backend_client, "user": None, "username": None,
    }  # fmt: skip
    assert backend_reads[0]["what"] == [f"Observation/{story.observations[1]}/_history/1"]
    # Nothing about another patient, nothing that failed, no audit-trail reads.
    for d in listed:
        assert all(story.other_patient not in w for w in d["what"])
        assert "does-not-exist" not in (d["query"] or "")
        assert "/audit" not in (d["query"] or "") and "AuditEvent" not in " ".join(d["what"])

    # from/to bound the accounting (inclusive instants).
    late = accounting(live_server, story.patient, officer, to=story.ended, **{"from": story.middle})
    assert late.status_code == 200, late.text
    assert [d["recipient"]["client_id"] for d in late.json()["disclosures"]] == [
        story.backend_client
    ]
    assert late.json()["from"] == story.middle and late.json()["to"] == story.ended
    early = accounting(live_server, story.patient, officer, to=story.middle)
    early_clients = {d["recipient"]["client_id"] for d in early.json()["disclosures"]}
    assert story.user_client in early_clients and story.backend_client not in early_clients


def test_csv_accounting_for_a_system_client(
    live_server: LiveServer, story: Story, system_token: str
) -> None:
    response = accounting(
        live_server, story.patient, system_token, format="csv", **{"from": story.started}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert f"disclosures-{story.patient}.csv" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["date", "client_id", "user", "username", "what", "query", "purpose",
                       "interaction", "event"]  # fmt: skip
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    ours = [r for r in records if r["date"] <= story.ended]
    assert [(r["client_id"], r["interaction"]) for r in ours] == [
        (story.user_client, "read"),
        (story.user_client, "read"),
        (story.user_client, "search-type"),
        (story.backend_client, "read"),
    ]
    assert ours[0]["user"] == f"Practitioner/{story.practitioner}"
    assert ours[0]["username"] == story.username
    assert ours[0]["what"] == f"Observation/{story.observations[0]}/_history/1"
    assert ours[3]["user"] == "" and ours[3]["username"] == ""
    assert all(story.started <= r["date"] <= story.ended for r in ours)


def test_a_token_without_auditevent_scope_is_refused(live_server: LiveServer, story: Story) -> None:
    _client, backend = backend_token(live_server.app.state.auth, "system/*.rs")
    refused = accounting(live_server, story.patient, backend)
    assert refused.status_code == 403, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    # user/AuditEvent.rs held by someone who is not a compliance officer: refused too.
    doctor = user_token(
        live_server, "practitioner", f"Practitioner/{story.practitioner}", OFFICER_SCOPE
    )
    assert accounting(live_server, story.patient, doctor).status_code == 403
    # The refusals are themselves on the trail (seen with a system/AuditEvent.rs token).


def test_no_token_is_401(live_server: LiveServer, story: Story) -> None:
    response = accounting(live_server, story.patient, None)
    assert response.status_code == 401
    # RFC 6750 section 3.1: a request without credentials gets a challenge without an error
    # code, as the FHIR API answers it; a bad token gets invalid_token.
    assert response.headers["www-authenticate"] == 'Bearer realm="medisentinel"'
    garbage = accounting(live_server, story.patient, "not-a-token")
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]


def test_bad_parameters_are_400(live_server: LiveServer, story: Story, system_token: str) -> None:
    assert accounting(live_server, story.patient, system_token, format="xml").status_code == 400
    bad_date = accounting(live_server, story.patient, system_token, **{"from": "yesterday"})
    assert bad_date.status_code == 400
    assert "from" in bad_date.json()["issue"][0]["diagnostics"]
    # A range ending before it begins is a mistake, not "nothing was disclosed".
    reversed_range = {"from": "2026-02-01", "to": "2026-01-31T23:59:59Z"}
    backwards = accounting(live_server, story.patient, system_token, **reversed_range)
    assert backwards.status_code == 400, backwards.text
    assert "is after to" in backwards.json()["issue"][0]["diagnostics"]
    same_day = {"from": "2026-01-31", "to": "2026-01-31"}
    one_day = accounting(live_server, story.patient, system_token, **same_day)
    assert one_day.status_code == 200


def test_refusals_are_audited(
    live_server: LiveServer, story: Story, auth_headers: dict[str, Any]
) -> None:
    accounting(live_server, story.patient, None)
    found = httpx.get(
        f"{live_server.base_url}/AuditEvent",
        params={"outcome": "4", "_sort": "-date", "_count": "20"},
        headers=auth_headers,
        timeout=30,
    )
    assert found.status_code == 200
    lines = [
        e.get("description", "")
        for entry in found.json().get("entry", [])
        for e in entry["resource"].get("entity", [])
    ]
    assert f"GET /audit/disclosures/{story.patient}" in lines


def test_the_sign_in_pages_look_ups_are_not_disclosures_to_the_app(
    live_server: LiveServer, story: Story, system_token: str
) -> None:
    """The patient picker lists patients and the consent page names the one chosen, as the
    user signing in, before the app holds a token: the trail keeps those searches under the
    server's sign-in page (the app named in the description); the accounting leaves them out."""
    auth = live_server.app.state.auth
    root = live_server.settings.server_root
    scope = "openid fhirUser launch/patient patient/*.rs"
    app = register_client(auth, "public", scope)
    username = register_user(auth, "practitioner", f"Practitioner/{story.practitioner}")
    query = httpx.QueryParams(
        response_type="code", client_id=app.client_id, redirect_uri=CALLBACK, scope=scope,
        state="s", aud=live_server.base_url, code_challenge=s256("v" * 50),
        code_challenge_method="S256",
    )  # fmt: skip
    back = Browser(root).sign_in(f"{root}/auth/authorize?{query}", username, patient=story.patient)
    assert "code" in query_of(back), back

    listed = accounting(live_server, story.patient, system_token).json()["disclosures"]
    recipients = {d["recipient"]["client_id"] for d in listed}
    assert app.client_id not in recipients and "medisentinel-sign-in" not in recipients

    trail = httpx.get(
        f"{live_server.base_url}/AuditEvent",
        params={"patient": f"Patient/{story.patient}", "subtype": "search-type",
                "agent:identifier": "urn:medisentinel:client|medisentinel-sign-in"},
        headers=bearer(system_token), timeout=30,
    ).json()  # fmt: skip
    looked_up = [e["resource"] for e in trail.get("entry", [])]
    mentioning = [e for e in looked_up
                  if any(x.get("description", "").endswith(f"for client {app.client_id}")
                         for x in e.get("entity", []))]  # fmt: skip
    assert mentioning, looked_up
    user = [a for a in mentioning[0]["agent"] if a.get("altId")]
    assert user and user[0]["altId"] == username


def test_a_history_listing_is_accounted_as_the_listing(
    live_server: LiveServer, story: Story, auth_headers: dict[str, str], system_token: str
) -> None:
    """A type history, like a search, records its query, not each version: `what` is the
    listing the recipient was sent."""
    since = to_instant(time.time_ns() // 1000)
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers, timeout=30) as admin:
        create_resource(admin, observation(subject={"reference": f"Patient/{story.patient}"}))
    reader, token = backend_token(live_server.app.state.auth, "system/*.rs")
    with httpx.Client(base_url=live_server.base_url, headers=bearer(token), timeout=30) as http:
        assert http.get("/Observation/_history", params={"_since": since}).status_code == 200
    listed = accounting(live_server, story.patient, system_token).json()["disclosures"]
    [mine] = [d for d in listed if d["recipient"]["client_id"] == reader]
    assert mine["interaction"] == "history-type"
    assert mine["what"] == [f"Observation/_history?_since={since}"]
    assert mine["query"].startswith("GET /fhir/Observation/_history?_since=")


def test_an_hl7_feeds_look_ups_are_not_disclosures_to_its_sender(
    live_server: LiveServer, system_token: str
) -> None:
    """An ORU^R01 finds its patient (and visit, practitioner...) through the door before it
    writes: those searches concern the patient and are kept in the trail, but the sender got
    an ACK, not what was found. Before the fix they were listed as disclosures with an empty
    `what` (over MLLP) or `hl7/v2?identifier=...` (over HTTP)."""
    feed, token = backend_token(live_server.app.state.auth, "system/*.cruds")
    mrn = f"MRN{secrets.token_hex(4)}"
    root = live_server.settings.server_root
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "x-application/hl7-v2+er7"}
    for message in (a01(f"C{secrets.token_hex(4)}", mrn, visit=f"V{secrets.token_hex(4)}"),
                    oru(f"C{secrets.token_hex(4)}", mrn, f"O{secrets.token_hex(4)}")):  # fmt: skip
        ack = httpx.post(f"{root}/hl7/v2", content=message, headers=headers, timeout=30)
        assert ack.status_code == 200 and b"MSA|AA|" in ack.content, ack.text
    found = httpx.get(
        f"{live_server.base_url}/Patient", params={"identifier": mrn},
        headers=bearer(system_token), timeout=30,
    ).json()  # fmt: skip
    [pid] = [e["resource"]["id"] for e in found["entry"]]

    trail = httpx.get(
        f"{live_server.base_url}/AuditEvent",
        params={"patient": f"Patient/{pid}", "action": "R,E",
                "agent:identifier": f"urn:medisentinel:client|{feed}"},
        headers=bearer(system_token), timeout=30,
    ).json()  # fmt: skip
    looked_up = [e["resource"] for e in trail.get("entry", [])]
    descriptions = {x.get("description") for e in looked_up for x in e.get("entity", [])}
    prefix = "look-up while applying an HL7 v2 message; nothing returned to the sender "
    assert any(d and d.startswith(f"{prefix}(POST /hl7/v2 HL7 ORU^R01") for d in descriptions), (
        descriptions
    )

    listed = accounting(live_server, pid, system_token).json()["disclosures"]
    assert feed not in {d["recipient"]["client_id"] for d in listed}, listed
