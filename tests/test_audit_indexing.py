"""The searchable copy of the audit trail is built after the fact (audit/indexing.py).

A request writes only its chain record; copies follow in background rounds, and a search of
AuditEvent catches up first. These tests run on a database of their own, served by an app
whose background rounds never start, so what each step copies is exactly what it says."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from app.context import RequestContext
from app.db import run_migrations
from app.fhir.search import SearchParams
from app.fhir.service import FhirService
from app.fhir.tables import resource
from app.main import create_app
from app.settings import Settings
from audit import chain, copies, indexing
from audit.events import SUCCESS, Actor, Entities, EventKind, Outcome
from audit.tables import audit_event, audit_indexed, audit_partition
from audit.verify import verify_on
from tests.conftest import TEST_MASTER_KEY


@pytest.fixture(scope="module")
def own_database(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not database_url.startswith("postgresql"):
        url = f"sqlite:///{tmp_path_factory.mktemp('indexing') / 'trail.db'}"
        run_migrations(url)
        yield url
        return
    name = f"indexing_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    run_migrations(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def app(own_database: str) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=own_database, master_key=TEST_MASTER_KEY))
    yield app
    app.state.audit.group_commit.close()
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def service(app: FastAPI) -> FhirService:
    return app.state.service  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def nothing_pending(service: FhirService) -> None:
    """Each test starts with every earlier record searchable (searches leave records too)."""
    indexing.catch_up_now(service.engine)


def system() -> RequestContext:
    return RequestContext.system(base_url="http://test/fhir")


def create_patient(service: FhirService) -> str:
    with service.unit_of_work(system(), write=True) as uow:
        return service.create(uow, "Patient", {"resourceType": "Patient"}).version.id


def read_patient(service: FhirService, pid: str) -> None:
    with service.unit_of_work(system(), write=False) as uow:
        service.read(uow, "Patient", pid)


def counts(service: FhirService) -> tuple[int, int]:
    """(chain records, searchable AuditEvent copies)."""
    with service.engine.connect() as conn:
        chained = conn.execute(select(func.count()).select_from(audit_event)).scalar_one()
        copies = conn.execute(
            select(func.count()).where(resource.c.resource_type == "AuditEvent")
        ).scalar_one()
    return int(chained), int(copies)


def search_trail(service: FhirService, query: str) -> list[str]:
    with service.unit_of_work(system(), write=False) as uow:
        found = service.search(uow, "AuditEvent", SearchParams.parse_query(query, "AuditEvent"))
    return [v.id for v in found.versions]


def test_a_read_writes_its_chain_record_only(service: FhirService) -> None:
    pid = create_patient(service)
    indexing.catch_up_now(service.engine)  # the create's record
    before = counts(service)
    read_patient(service, pid)
    chained, copies = counts(service)
    assert (chained, copies) == (before[0] + 1, before[1])
    assert indexing.backlog(service.engine) == 1


def test_searching_the_trail_sees_every_record_committed_before_it(service: FhirService) -> None:
    pid = create_patient(service)
    for _ in range(3):
        read_patient(service, pid)
    assert indexing.backlog(service.engine) >= 4
    found = search_trail(service, f"entity=Patient/{pid}&_count=50")
    assert len(found) == 4  # the create and three reads
    assert indexing.backlog(service.engine) == 1  # caught up; only the search's own record


def test_a_revinclude_of_the_trail_sees_every_record_committed_before_it(
    service: FhirService,
) -> None:
    """Another type's search that returns AuditEvents (_revinclude) catches up first too."""
    pid = create_patient(service)
    for _ in range(3):
        read_patient(service, pid)
    query = f"_id={pid}&_revinclude=AuditEvent:entity"
    with service.unit_of_work(system(), write=False) as uow:
        found = service.search(uow, "Patient", SearchParams.parse_query(query, "Patient"))
    assert [v.id for v in found.versions] == [pid]
    assert sum(v.resource_type == "AuditEvent" for v in found.included) == 4


def test_a_background_round_told_to_stop_ends_after_its_current_batch(
    service: FhirService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At shutdown (BackgroundCopier.stopping) a round stops between its transactions instead
    of copying the whole backlog first; what it copied is committed, the rest waits."""
    indexing.catch_up_now(service.engine)
    pid = create_patient(service)
    for _ in range(11):
        read_patient(service, pid)
    assert indexing.backlog(service.engine) == 12
    monkeypatch.setattr(indexing, "BATCH", 2)  # a round's transaction: 4 batches, 8 records
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # after the first transaction

    assert indexing.catch_up_all(service.engine, stop=stop) == 8
    assert indexing.backlog(service.engine) == 4
    assert indexing.catch_up_all(service.engine, stop=lambda: True) == 0
    assert indexing.catch_up_all(service.engine) == 4


def test_a_background_round_copies_the_backlog_once(service: FhirService) -> None:
    pid = create_patient(service)
    for _ in range(5):
        read_patient(service, pid)
    assert indexing.catch_up_all(service.engine) == 6
    assert indexing.catch_up_all(service.engine) == 0
    with service.engine.connect() as conn:
        copied_ids = (
            conn.execute(select(resource.c.id).where(resource.c.resource_type == "AuditEvent"))
            .scalars()
            .all()
        )
        chain_ids = conn.execute(select(audit_event.c.id)).scalars().all()
        heads = dict(
            conn.execute(select(audit_partition.c.partition_id, audit_partition.c.last_pseq)).all()
        )
        cursors = dict(
            conn.execute(select(audit_indexed.c.partition_id, audit_indexed.c.pseq)).all()
        )
    assert sorted(copied_ids) == sorted(chain_ids)  # every record copied, exactly once
    assert cursors == heads


def test_copiers_racing_writers_copy_each_record_exactly_once(
    service: FhirService, app: FastAPI
) -> None:
    pid = create_patient(service)
    errors: list[BaseException] = []
    writers_done = threading.Event()

    def write() -> None:
        try:
            for _ in range(15):
                read_patient(service, pid)  # group-committed reads ...
                create_patient(service)  # ... racing writes that chain in their own transaction
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def copy() -> None:
        try:
            while not writers_done.is_set():
                indexing.catch_up_all(service.engine)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=write) for _ in range(4)]
    copiers = [threading.Thread(target=copy) for _ in range(3)]
    for thread in writers + copiers:
        thread.start()
    for thread in writers:
        thread.join()
    writers_done.set()
    for thread in copiers:
        thread.join()
    assert errors == []
    indexing.catch_up_now(service.engine)
    with service.engine.connect() as conn:
        copied = (
            conn.execute(select(resource.c.id).where(resource.c.resource_type == "AuditEvent"))
            .scalars()
            .all()
        )
        chained = conn.execute(select(audit_event.c.id)).scalars().all()
    assert len(copied) == len(set(copied))
    assert sorted(copied) == sorted(chained)
    assert len(search_trail(service, f"entity=Patient/{pid}&_count=100")) == 61
    with service.engine.connect() as conn:
        report = verify_on(conn, app.state.auth.keys)
    assert report.ok, report.summary()  # every partition's chain links up, under contention


def test_a_busy_process_copies_only_what_has_waited_max_lag(service: FhirService) -> None:
    """BackgroundCopier: busy (a unit started just now) -> only records older than max_lag;
    idle -> everything."""
    copier = indexing.BackgroundCopier(service.engine, lambda: service.last_unit_started, 0.3)
    pid = create_patient(service)
    read_patient(service, pid)  # the process is busy: this unit started a moment ago
    assert copier.round() == 0
    assert indexing.backlog(service.engine) == 2
    time.sleep(0.35)
    read_patient(service, pid)  # still busy; the first two records have now waited 0.3 s
    assert copier.round() == 2
    assert indexing.backlog(service.engine) == 1
    time.sleep(indexing.BackgroundCopier.IDLE_SECONDS + 0.05)  # idle: no unit for a while
    assert copier.round() == 1
    assert indexing.backlog(service.engine) == 0


def test_a_lagging_round_stops_at_a_recent_record_rather_than_skip_it(
    service: FhirService, app: FastAPI
) -> None:
    """A partition's cursor means "copied up to this pseq": a round copying only old records
    must not copy one that follows a recent one (it would move the cursor past the recent
    one, which would then never be copied)."""
    trail = app.state.audit
    kind = EventKind.rest("read")
    recent = trail.build(kind, Actor(client_id="lag-test"), SUCCESS, Entities())
    old = replace(trail.build(kind, Actor(client_id="lag-test"), SUCCESS, Entities()),
                  recorded=recent.recorded - 3_600_000_000)  # fmt: skip
    trail.record([recent, old])  # one batch: pseq n is recent, n + 1 is an hour older
    cutoff = recent.recorded - 60_000_000
    assert indexing.catch_up_all(service.engine, before=cutoff) == 0
    assert indexing.catch_up_all(service.engine) == 2
    assert indexing.backlog(service.engine) == 0


def test_control_characters_from_a_caller_are_recorded_visibly(
    service: FhirService, app: FastAPI
) -> None:
    """A client_id, user name or request line is whatever the caller sent; FHIR strings may
    not hold control characters and PostgreSQL text refuses NUL, which made every later copy
    round fail (and with it every search of the trail). They are kept as visible escapes."""
    trail = app.state.audit
    actor = Actor(client_id="evil\x00client", username="bell\x07", address="1.2.3.4\x1f")
    entities = Entities(description="GET /fhir/Patient/\x00", resources=["Patient/\x01"])
    outcome = Outcome.for_status(400, "parameter '\x00' is not supported")
    record = trail.build(EventKind.rest("read"), actor, outcome, entities)
    assert not re.search(rb"(?<!\\)\\u00[01]", record.content)  # no control character
    assert b"evil\\\\u0000client" in record.content  # but its visible form
    trail.record([record])
    found = search_trail(service, "agent-name=evil")  # caught up: the copy went through
    assert record.id in found


def test_an_older_record_holding_a_nul_does_not_stop_the_copy(
    service: FhirService, app: FastAPI
) -> None:
    """Records chained before control characters were escaped may hold a NUL: their index
    rows take the visible form; the copy keeps the record's bytes, so verify still agrees."""
    trail = app.state.audit
    built = trail.build(EventKind.rest("read"), Actor(client_id="old-nul"), SUCCESS, Entities())
    event = dict(built.event)
    event["agent"] = [{**event["agent"][0], "name": "old\x00nul"}, *event["agent"][1:]]
    trail.record([chain.record(event, built.recorded)])
    assert indexing.catch_up_all(service.engine) >= 1
    assert built.id in search_trail(service, "agent-name=old")
    with service.engine.connect() as conn:  # verify's comparison of the copy with the chain
        assert not [line for line in copies.differences(conn, {}) if built.id in line]
