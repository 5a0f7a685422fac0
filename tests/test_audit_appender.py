"""PostgreSQL: audit records go through their process's partition appender (partitions the
process holds, hashes computed in Python): each unit of work's (a read's or a write's) with
its own statement onto a partition of the pool it holds until that ends; events outside the
door (refusals, sign-ins) in batches onto the read partition.

What must hold: units and events outside the door land on different partitions; concurrent
writes hold different partitions; a write that rolls back leaves its partition's chain as it
was; two appenders never share a partition; an appender that lost its connection or its
partition starts over from what the database holds; and after all of it the whole trail
still verifies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text

from app.context import RequestContext
from app.db import libpq_dsn
from audit.appender import PartitionAppender
from audit.async_commit import AsyncGroupCommit
from audit.chain import AuditRecord
from audit.events import SUCCESS, Actor, Entities, EventKind
from audit.verify import verify_on
from tests.conftest import LiveServer
from tests.smart_helpers import create_resource


@pytest.fixture
def engine(live_server: LiveServer, is_postgres: bool) -> Engine:
    if not is_postgres:
        pytest.skip("the partition appender is PostgreSQL's (SQLite has one writer anyway)")
    engine: Engine = live_server.app.state.engine
    return engine


@pytest.fixture
def appenders(database_url: str) -> Iterator[list[PartitionAppender]]:
    made: list[PartitionAppender] = []
    yield made
    for appender in made:
        appender.close()


def new_appender(database_url: str, appenders: list[PartitionAppender]) -> PartitionAppender:
    appender = PartitionAppender(database_url)
    appenders.append(appender)
    return appender


def records(live_server: LiveServer, n: int, note: str) -> list[AuditRecord]:
    trail = live_server.app.state.audit
    kind = EventKind.rest("read")
    return [
        trail.build(kind, Actor(client_id="appender-test"), SUCCESS, Entities(description=note))
        for _ in range(n)
    ]


def partition_of(engine: Engine, record_id: str) -> tuple[int, bool]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT e.partition_id, p.dedicated FROM audit_event e "
                 "JOIN audit_partition p USING (partition_id) WHERE e.id = :id"),
            {"id": record_id},
        ).one()  # fmt: skip
    return int(row.partition_id), bool(row.dedicated)


def assert_trail_verifies(engine: Engine, live_server: LiveServer) -> None:
    with engine.connect() as conn:
        report = verify_on(conn, live_server.app.state.auth.keys)
    assert report.findings == [], report.findings


def test_reads_and_writes_chain_on_write_partitions_and_refusals_on_the_read_partition(
    engine: Engine, live_server: LiveServer, auth_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers) as http:
        pid = create_resource(http, {"resourceType": "Patient"})
        assert http.get(f"Patient/{pid}").status_code == 200
    with httpx.Client(base_url=live_server.base_url) as anonymous:
        assert anonymous.get(f"Patient/{pid}?refused=yes").status_code == 401
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT e.content, e.partition_id, p.dedicated FROM audit_event e "
                 "JOIN audit_partition p USING (partition_id) "
                 "WHERE convert_from(e.content, 'UTF8') LIKE :pattern"),
            {"pattern": f"%Patient/{pid}%"},
        ).all()  # fmt: skip
    assert len(rows) == 3 and all(r.dedicated for r in rows)
    refused = [r.partition_id for r in rows if b"refused=yes" in bytes(r.content)]
    chained_in_unit = [r.partition_id for r in rows if b"refused=yes" not in bytes(r.content)]
    # The refusal happened outside any unit of work: it went through the group commit.
    assert refused == [live_server.app.state.audit.appender.partition_id]
    # The create and the read each chained their record in their own statement, on a
    # partition of the pool (the same one, taken again: they did not overlap).
    assert len(chained_in_unit) == 2 and refused[0] not in chained_in_unit
    assert_trail_verifies(engine, live_server)


def test_concurrent_writes_hold_different_partitions_and_a_rollback_leaves_no_trace(
    engine: Engine, live_server: LiveServer, database_url: str, appenders: list[PartitionAppender]
) -> None:
    appender = new_appender(database_url, appenders)
    service = live_server.app.state.service
    ctx = RequestContext.system()
    first_batch, second_batch = records(live_server, 2, "w1"), records(live_server, 1, "w2")
    with service.unit_of_work(ctx, write=True) as first:
        appender.append_in(first, first_batch)
        with service.unit_of_work(ctx, write=True) as second:
            appender.append_in(second, second_batch)  # while the first still holds its own
    first_partition = partition_of(engine, first_batch[0].id)[0]
    assert partition_of(engine, second_batch[0].id)[0] != first_partition

    rolled_back = records(live_server, 1, "rolled back")
    with pytest.raises(RuntimeError), service.unit_of_work(ctx, write=True) as failing:
        appender.append_in(failing, rolled_back)
        raise RuntimeError("the write fails after its record was linked")
    after = records(live_server, 1, "after")
    with service.unit_of_work(ctx, write=True) as uow:
        appender.append_in(uow, after)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM audit_event WHERE id = :id"), {"id": rolled_back[0].id}
        ).scalar()
    assert found == 0
    assert partition_of(engine, after[0].id)[1] is True
    assert_trail_verifies(engine, live_server)


def test_two_appenders_hold_different_partitions_and_chain_in_order(
    engine: Engine, live_server: LiveServer, database_url: str, appenders: list[PartitionAppender]
) -> None:
    first, second = new_appender(database_url, appenders), new_appender(database_url, appenders)
    batch_a, batch_b = records(live_server, 3, "a"), records(live_server, 2, "b")
    first.append(batch_a)
    second.append(batch_b)
    first.append(records(live_server, 1, "a2"))
    assert first.partition_id != second.partition_id
    assert partition_of(engine, batch_a[0].id) == (first.partition_id, True)
    assert partition_of(engine, batch_b[0].id) == (second.partition_id, True)
    with engine.connect() as conn:
        pseqs = conn.execute(
            text("SELECT pseq FROM audit_event WHERE partition_id = :p ORDER BY pseq"),
            {"p": first.partition_id},
        ).scalars().all()  # fmt: skip
    assert pseqs == list(range(1, len(pseqs) + 1))  # gap-free
    assert_trail_verifies(engine, live_server)


def test_an_appender_whose_connection_dies_starts_over(
    engine: Engine, live_server: LiveServer, database_url: str, appenders: list[PartitionAppender]
) -> None:
    appender = new_appender(database_url, appenders)
    appender.append(records(live_server, 2, "before"))
    with engine.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'medisentinel audit appender' "
                 "AND pid <> pg_backend_pid() AND backend_start = ("
                 "  SELECT max(backend_start) FROM pg_stat_activity "
                 "  WHERE application_name = 'medisentinel audit appender')")
        )  # fmt: skip
        conn.commit()
    with pytest.raises(psycopg.OperationalError):
        appender.append(records(live_server, 1, "lost"))  # refused: the read would be refused
    after = records(live_server, 2, "after")
    appender.append(after)  # reconnected, head reloaded from the database
    assert partition_of(engine, after[0].id)[1] is True
    assert_trail_verifies(engine, live_server)


def test_an_appender_that_lost_its_partition_is_refused_then_moves_on(
    engine: Engine, live_server: LiveServer, database_url: str, appenders: list[PartitionAppender]
) -> None:
    """Ownership is an advisory lock; the chain's safety is (partition, pseq) being unique.
    If the lock is lost while the connection lives, another appender may take the partition:
    the stale one's next append collides and is refused, and it then holds another one."""
    stale = new_appender(database_url, appenders)
    stale.append(records(live_server, 1, "stale-1"))
    taken = stale.partition_id
    assert stale._conn is not None
    stale._conn.execute("SELECT pg_advisory_unlock_all()")
    stale._conn.commit()
    # A new appender takes the lowest free dedicated partition; make sure that is ours by
    # holding every other free one for the length of the test.
    blockers = []
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as probe:
        free = [
            pid
            for (pid,) in probe.execute(
                "SELECT partition_id FROM audit_partition WHERE dedicated AND partition_id <> %s",
                (taken,),
            ).fetchall()
        ]
    for pid in free:
        blocker = psycopg.connect(libpq_dsn(database_url), autocommit=True)
        if blocker.execute("SELECT pg_try_advisory_lock(%s, %s)", (0x4D534150, pid)).fetchone()[0]:  # type: ignore[index]
            blockers.append(blocker)
        else:
            blocker.close()
    try:
        thief = new_appender(database_url, appenders)
        thief.append(records(live_server, 2, "thief"))
        assert thief.partition_id == taken
        with pytest.raises(psycopg.errors.UniqueViolation):
            stale.append(records(live_server, 1, "stale-2"))
        moved = records(live_server, 1, "stale-3")
        stale.append(moved)
    finally:
        for blocker in blockers:
            blocker.close()
    assert stale.partition_id != taken
    assert partition_of(engine, moved[0].id) == (stale.partition_id, True)
    assert_trail_verifies(engine, live_server)


def test_concurrent_reads_through_the_endpoint_are_committed_in_batches_that_verify(
    engine: Engine, live_server: LiveServer, auth_headers: dict[str, str]
) -> None:
    """The FHIR endpoint's reads hand their records to the event loop's group commit
    (audit/async_commit.py): every read is recorded, on the partition that task holds."""
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers) as http:
        pid = create_resource(http, {"resourceType": "Patient"})

    async def read_many() -> list[int]:
        async with httpx.AsyncClient(base_url=live_server.base_url, headers=auth_headers) as http:
            answers = await asyncio.gather(*(http.get(f"Patient/{pid}") for _ in range(40)))
        return [a.status_code for a in answers]

    assert asyncio.run(read_many()) == [200] * 40
    with engine.connect() as conn:
        partitions = conn.execute(
            text("SELECT partition_id FROM audit_event "
                 "WHERE convert_from(content, 'UTF8') LIKE :read"),
            {"read": f'%"code":"read"%Patient/{pid}/_history/1%'},
        ).scalars().all()  # fmt: skip
    assert len(partitions) == 40
    assert set(partitions) == {live_server.app.state.audit.async_commit._head.partition_id}
    assert_trail_verifies(engine, live_server)


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_starts_over(
    engine: Engine, live_server: LiveServer, database_url: str, appenders: list[PartitionAppender]
) -> None:
    committer = AsyncGroupCommit(new_appender(database_url, appenders))
    first, lost, after = (
        records(live_server, n, note) for n, note in ((2, "1"), (3, "x"), (2, "2"))
    )

    async def scenario() -> list[BaseException | None]:
        await committer.append(first)
        assert committer._conn is not None
        backend = committer._conn.info.backend_pid
        with engine.connect() as conn:  # the batches' connection dies under them
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            conn.commit()
        outcomes = await asyncio.gather(
            *(committer.append([record]) for record in lost), return_exceptions=True
        )
        await committer.append(after)  # a new connection, the head reloaded
        await committer.close()
        return [o if isinstance(o, BaseException) else None for o in outcomes]

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, psycopg.OperationalError) for o in outcomes), outcomes
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT id FROM audit_event")).scalars())
    assert {r.id for r in first + after} <= stored
    assert not {r.id for r in lost} & stored
    assert_trail_verifies(engine, live_server)


class CountingCommit(AsyncGroupCommit):
    """Records how many records each statement carried (the batches as written)."""

    def __init__(self, appender: PartitionAppender) -> None:
        super().__init__(appender)
        self.batches: list[int] = []

    async def _write(self, records: list[AuditRecord]) -> None:
        await super()._write(records)
        self.batches.append(len(records))


def test_a_batch_waits_for_reads_in_service_and_a_lone_read_does_not_wait(
    engine: Engine, live_server: LiveServer, database_url: str, appenders: list[PartitionAppender]
) -> None:
    committer = CountingCommit(new_appender(database_url, appenders))
    committer.FILL_SECONDS = 30.0  # any wait would show; none of the cases below may take it

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        await committer.append(records(live_server, 1, "warm"))  # connection and partition
        started = loop.time()
        await committer.append(records(live_server, 1, "alone"))  # nobody else in service
        alone = loop.time() - started

        # Three reads in service; their records arrive one by one: one statement for all.
        for _ in range(3):
            committer.expect()

        async def read(delay: float, note: str) -> None:
            await asyncio.sleep(delay)
            await committer.append(records(live_server, 1, note), expected=True)

        await asyncio.gather(read(0, "a"), read(0.05, "b"), read(0.1, "c"))

        # Two in service, one ends without records: the other's record is written at once.
        committer.expect()
        committer.expect()

        async def no_records() -> None:
            await asyncio.sleep(0.05)
            await committer.append([], expected=True)

        await asyncio.gather(read(0, "d"), no_records())
        await committer.close()
        return alone

    started = time.monotonic()
    alone = asyncio.run(scenario())
    assert alone < 5, alone
    assert time.monotonic() - started < 10  # the read left alone was not held for 30 s
    assert committer.batches == [1, 1, 3, 1]
    assert committer._in_service == 0
    assert_trail_verifies(engine, live_server)
