"""Resumed verification (what the compliance console does between whole walks): a walk that
starts where an earlier one ended checks only the records appended since, still catches a
change among them, and catches a rewrite of the part already walked through the records it
ended at. Tamper set-up as in test_audit_verify (a transaction rolled back afterwards)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import Connection, text

from audit.verify import verify_on
from audit.web import verification
from audit.web.verification import Verifier
from tests.conftest import LiveServer
from tests.smart_helpers import create_resource
from tests.test_audit_verify import a_partition, chain_ready, rechain_from, tamper

__all__ = ["chain_ready", "tamper"]  # fixtures used here


def a_few_reads(live_server: LiveServer, auth_headers: dict[str, str], count: int = 3) -> None:
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers) as http:
        pid = create_resource(http, {"resourceType": "Patient"})
        for _ in range(count):
            assert http.get(f"Patient/{pid}").status_code == 200


def appended_since(conn: Connection, heads: dict[int, tuple[int, bytes]]) -> int:
    rows = conn.execute(text("SELECT partition_id, pseq FROM audit_event")).all()
    return sum(1 for pid, pseq in rows if pseq > heads.get(pid, (0, b""))[0])


def test_a_resumed_walk_checks_only_what_was_appended(
    live_server: LiveServer, auth_headers: dict[str, str], chain_ready: None
) -> None:
    keys, engine = live_server.app.state.auth.keys, live_server.app.state.engine
    with engine.connect() as conn:
        whole = verify_on(conn, keys)
    assert whole.ok, whole.summary()
    a_few_reads(live_server, auth_headers)
    with engine.connect() as conn:
        resumed = verify_on(conn, keys, resume=whole.heads)
        expected = appended_since(conn, whole.heads)
    assert resumed.ok, resumed.summary()
    assert 4 <= resumed.records == expected < whole.records


def resume_point(conn: Connection, pid: int, pseq: int) -> dict[int, tuple[int, bytes]]:
    """Heads as if an earlier walk had ended at record `pseq` of partition `pid` (and at the
    newest record of every other partition)."""
    rows = conn.execute(
        text("SELECT partition_id, pseq, chain_hash FROM audit_event e WHERE pseq = "
             "(SELECT max(pseq) FROM audit_event WHERE partition_id = e.partition_id)")
    ).all()  # fmt: skip
    heads = {row.partition_id: (row.pseq, bytes(row.chain_hash)) for row in rows}
    digest = conn.execute(
        text("SELECT chain_hash FROM audit_event WHERE partition_id = :p AND pseq = :s"),
        {"p": pid, "s": pseq},
    ).scalar_one()
    heads[pid] = (pseq, bytes(digest))
    return heads


def test_a_resumed_walk_catches_an_edited_record_after_where_it_starts(
    tamper: Connection, live_server: LiveServer
) -> None:
    pid, middle = a_partition(tamper)
    resume = resume_point(tamper, pid, middle - 1)
    tamper.execute(
        text("UPDATE audit_event SET content = :c WHERE partition_id = :p AND pseq = :s"),
        {"c": b'{"resourceType":"AuditEvent","id":"forged"}', "p": pid, "s": middle},
    )
    report = verify_on(tamper, live_server.app.state.auth.keys, resume=resume)
    assert [(f.kind, f.pseq) for f in report.findings][:1] == [("modified", middle)]


def test_a_rewrite_of_the_walked_part_is_caught_where_the_last_walk_ended(
    tamper: Connection, live_server: LiveServer
) -> None:
    """Records before the resume point are not walked again, but a rewrite among them that
    re-hashed the chain onwards changes the record the last walk ended at."""
    pid, middle = a_partition(tamper)
    last = tamper.execute(
        text("SELECT max(pseq) FROM audit_event WHERE partition_id = :p"), {"p": pid}
    ).scalar_one()
    resume = resume_point(tamper, pid, last)
    rechain_from(tamper, pid, 1, b'"outcome":"0"', b'"outcome":"4"')
    report = verify_on(tamper, live_server.app.state.auth.keys, resume=resume)
    assert ("modified", pid, last) in {(f.kind, f.partition, f.pseq) for f in report.findings}
    assert any("changed since the last walk" in f.detail for f in report.findings)


def test_the_console_walks_everything_first_then_what_was_appended(
    live_server: LiveServer,
    auth_headers: dict[str, str],
    chain_ready: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = live_server.app.state
    console = Verifier(state.engine, state.auth.keys, state.settings.audit_checkpoint_seconds)
    first = asyncio.run(console._run())
    assert first.state == "verified" and first.full_walk_at is not None, first
    assert console.resume is not None
    walked = first.summary["records"]

    a_few_reads(live_server, auth_headers)
    with state.engine.connect() as conn:
        appended = appended_since(conn, console.resume)
    second = asyncio.run(console._run())
    assert second.state == "verified", second
    assert second.full_walk_at == first.full_walk_at  # not walked again
    assert second.summary["records"] == walked + appended

    monkeypatch.setattr(verification, "FULL_WALK_SECONDS", 0.0)
    third = asyncio.run(console._run())
    assert third.full_walk_at is not None and third.full_walk_at > first.full_walk_at
    with state.engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM audit_event")).scalar_one()
    assert third.summary["records"] == total
