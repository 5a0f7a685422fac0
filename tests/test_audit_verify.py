"""Tamper evidence: rows of the audit chain edited, deleted, inserted or reordered directly in
the database (SQLite or PostgreSQL, whichever the suite runs on) are caught by verify; the
PostgreSQL trigger refuses UPDATE, DELETE and TRUNCATE; the CLI exits non-zero on a finding,
exports verify offline, and archiving respects the retention period and keeps the rest
verifiable.

The tamper tests work inside a transaction that is rolled back afterwards, so the shared test
database stays intact for the rest of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy.exc
from sqlalchemy import Connection, text

from app.context import RequestContext
from app.db import create_db_engine
from app.main import create_app
from app.settings import Settings
from audit import checkpoints
from audit import verify as verify_module
from audit.chain import content_hash, link_hash
from audit.commands import key_store
from audit.events import SUCCESS, Actor, EventKind
from audit.export import archive
from audit.verify import verify_on
from tests.conftest import TEST_MASTER_KEY, LiveServer
from tests.smart_helpers import create_resource


@pytest.fixture(scope="module")
def chain_ready(live_server: LiveServer, auth_headers: dict[str, str]) -> None:
    """Enough records in the trail, and a checkpoint over them."""
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers) as http:
        pid = create_resource(http, {"resourceType": "Patient"})
        for _ in range(6):
            assert http.get(f"Patient/{pid}").status_code == 200
    checkpoints.take(live_server.app.state.engine, live_server.app.state.auth.keys)


@pytest.fixture
def tamper(live_server: LiveServer, chain_ready: None, is_postgres: bool) -> Iterator[Connection]:
    """A connection inside a transaction that is always rolled back."""
    with live_server.app.state.engine.connect() as conn:
        # a write transaction from the start (SQLite: BEGIN IMMEDIATE): one that reads
        # first cannot start writing if a background writer got in between
        conn = conn.execution_options(for_write=True)
        transaction = conn.begin()
        if is_postgres:  # the table owner may switch the guard off: an attacker with DDL rights
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update"))
            conn.execute(text("ALTER TABLE audit_checkpoint DISABLE TRIGGER USER"))
        try:
            yield conn
        finally:
            transaction.rollback()


def findings(conn: Connection, live_server: LiveServer) -> list[Any]:
    return verify_on(conn, live_server.app.state.auth.keys).findings


def a_partition(conn: Connection) -> tuple[int, int]:
    """(partition, a pseq in the middle of it), on the partition with the most records."""
    pid, last = conn.execute(
        text("SELECT partition_id, max(pseq) FROM audit_event GROUP BY partition_id "
             "ORDER BY count(*) DESC LIMIT 1")
    ).one()  # fmt: skip
    assert last >= 4
    return pid, last // 2


def test_the_untouched_chain_verifies(live_server: LiveServer, chain_ready: None) -> None:
    with live_server.app.state.engine.connect() as conn:
        report = verify_on(conn, live_server.app.state.auth.keys)
    assert report.ok, report.summary()
    assert report.records > 5 and report.checkpoints >= 1


def test_an_edited_record_is_caught(tamper: Connection, live_server: LiveServer) -> None:
    pid, pseq = a_partition(tamper)
    tamper.execute(
        text("UPDATE audit_event SET content = :c WHERE partition_id = :p AND pseq = :s"),
        {"c": b'{"resourceType":"AuditEvent","id":"forged"}', "p": pid, "s": pseq},
    )
    first = findings(tamper, live_server)[0]
    assert (first.kind, first.partition, first.pseq) == ("modified", pid, pseq)


def test_a_deleted_record_is_caught(tamper: Connection, live_server: LiveServer) -> None:
    pid, pseq = a_partition(tamper)
    tamper.execute(
        text("DELETE FROM audit_event WHERE partition_id = :p AND pseq = :s"),
        {"p": pid, "s": pseq},
    )
    first = findings(tamper, live_server)[0]
    assert (first.kind, first.pseq) == ("deleted", pseq + 1)
    assert f"{pseq}..{pseq}" in first.detail


@pytest.fixture
def a_record_after_the_checkpoint(
    live_server: LiveServer, auth_headers: dict[str, str], chain_ready: None
) -> None:
    with httpx.Client(base_url=live_server.base_url, headers=auth_headers) as http:
        assert http.get("metadata").status_code == 200  # audited like any read
        assert http.get("Patient", params={"_count": 1}).status_code == 200


def test_deleting_the_newest_records_is_caught(
    a_record_after_the_checkpoint: None, tamper: Connection, live_server: LiveServer
) -> None:
    """No later record and no checkpoint covers a partition's newest record: its head does."""
    pid, pseq = tamper.execute(
        text("SELECT partition_id, pseq FROM audit_event ORDER BY seq DESC LIMIT 1")
    ).one()
    tamper.execute(
        text("DELETE FROM audit_event WHERE partition_id = :p AND pseq = :s"),
        {"p": pid, "s": pseq},
    )
    found = [(f.kind, f.partition, f.pseq, f.detail) for f in findings(tamper, live_server)]
    assert ("deleted", pid, pseq, f"the newest records {pseq}..{pseq} are missing") in found


def test_verify_reads_one_snapshot_while_the_server_appends(
    live_server: LiveServer, chain_ready: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records committed while verify walks (the server never stops) are not findings."""
    state = live_server.app.state
    real_walk = verify_module._walk_partition
    appended: list[int] = []

    def walk_after_an_append(*args: Any) -> None:
        if not appended:  # another connection commits a record after verify has begun
            state.audit.record_event(EventKind.rest("read"), Actor(client_id="meanwhile"),
                                     SUCCESS)  # fmt: skip
            appended.append(1)
        real_walk(*args)

    monkeypatch.setattr(verify_module, "_walk_partition", walk_after_an_append)
    report = verify_module.verify(state.engine, state.auth.keys)
    assert appended and report.ok, report.summary()


def test_an_inserted_record_is_caught_even_with_correct_hashes(
    tamper: Connection, live_server: LiveServer
) -> None:
    pid, _ = a_partition(tamper)
    last, prev = tamper.execute(
        text("SELECT pseq, chain_hash FROM audit_event WHERE partition_id = :p "
             "ORDER BY pseq DESC LIMIT 1"), {"p": pid}
    ).one()  # fmt: skip
    content = b'{"resourceType":"AuditEvent","id":"planted"}'
    digest = content_hash(content)
    tamper.execute(
        text("INSERT INTO audit_event (id, partition_id, pseq, recorded, content, content_hash,"
             " prev_hash, chain_hash) VALUES ('planted', :p, :s, 0, :c, :d, :prev, :h)"),
        {"p": pid, "s": last + 1, "c": content, "d": digest, "prev": bytes(prev),
         "h": link_hash(bytes(prev), digest, pid, last + 1)},
    )  # fmt: skip
    kinds = {(f.kind, f.pseq) for f in findings(tamper, live_server)}
    assert ("inserted", last + 1) in kinds


def test_reordered_records_are_caught(tamper: Connection, live_server: LiveServer) -> None:
    pid, pseq = a_partition(tamper)
    swap = "UPDATE audit_event SET pseq = :to WHERE partition_id = :p AND pseq = :s"
    tamper.execute(text(swap), {"to": -1, "p": pid, "s": pseq})
    tamper.execute(text(swap), {"to": pseq, "p": pid, "s": pseq + 1})
    tamper.execute(text(swap), {"to": pseq + 1, "p": pid, "s": -1})
    first = findings(tamper, live_server)[0]
    assert (first.kind, first.pseq) == ("reordered", pseq)


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(
    tamper: Connection, live_server: LiveServer
) -> None:
    """An attacker who edits a record and recomputes every hash after it still cannot
    re-sign the checkpoint."""
    pid, pseq = a_partition(tamper)
    rechain_from(tamper, pid, pseq, b'"outcome":"0"', b'"outcome":"4"')
    kinds = {f.kind for f in findings(tamper, live_server)}
    assert "modified" in kinds


def rechain_from(conn: Connection, pid: int, pseq: int, edit: bytes, to: bytes) -> int:
    """Edit the first record from `pseq` on that holds `edit` (replace it by `to`) and
    recompute every hash after it; returns the pseq edited. (Which records hold what depends
    on the tests run before: the record in the middle may be a refusal, say.)"""
    rows = conn.execute(
        text("SELECT pseq, content, prev_hash FROM audit_event WHERE partition_id = :p "
             "AND pseq >= :s ORDER BY pseq"), {"p": pid, "s": pseq}
    ).all()  # fmt: skip
    rows = rows[next(i for i, row in enumerate(rows) if edit in bytes(row.content)) :]
    edited = rows[0].pseq
    prev = bytes(rows[0].prev_hash)
    for row in rows:
        content = bytes(row.content)
        content = content.replace(edit, to) if row.pseq == edited else content
        digest = content_hash(content)
        chained = link_hash(prev, digest, pid, row.pseq)
        conn.execute(
            text("UPDATE audit_event SET content = :c, content_hash = :d, prev_hash = :prev,"
                 " chain_hash = :h WHERE partition_id = :p AND pseq = :s"),
            {"c": content, "d": digest, "prev": prev, "h": chained, "p": pid, "s": row.pseq},
        )  # fmt: skip
        prev = chained
    return edited


@pytest.fixture
def numbered_checkpoints(live_server: LiveServer, chain_ready: None) -> list[int]:
    state = live_server.app.state
    return [
        checkpoints.take(state.engine, state.auth.keys, only_if_changed=False) or 0
        for _ in range(3)
    ]


def test_checkpoints_are_numbered_and_linked(
    numbered_checkpoints: list[int], live_server: LiveServer
) -> None:
    with live_server.app.state.engine.connect() as conn:
        marks = checkpoints.load_all(conn, live_server.app.state.auth.keys)
    assert [m.n for m in marks] == list(range(1, len(marks) + 1))
    assert all(b.prev == a.digest for a, b in zip(marks, marks[1:], strict=False))


def test_a_deleted_checkpoint_is_caught(
    numbered_checkpoints: list[int], tamper: Connection, live_server: LiveServer
) -> None:
    tamper.execute(
        text("DELETE FROM audit_checkpoint WHERE id = :i"), {"i": numbered_checkpoints[1]}
    )
    details = [(f.kind, f.detail) for f in findings(tamper, live_server)]
    assert any(kind == "checkpoint" and "missing (deleted)" in d for kind, d in details), details


def test_a_rewrite_hidden_by_deleting_every_checkpoint_is_caught(
    tamper: Connection, live_server: LiveServer
) -> None:
    """The probe's case: edit, re-hash, delete the checkpoints. The records are then covered
    by no checkpoint although newer ones exist (interval 0 here: the suite's records are
    seconds apart, a real trail's hours)."""
    pid, pseq = a_partition(tamper)
    rechain_from(tamper, pid, pseq, b'"outcome":"0"', b'"outcome":"4"')
    tamper.execute(text("DELETE FROM audit_checkpoint"))
    kinds = {f.kind for f in verify_on(tamper, live_server.app.state.auth.keys,
                                       checkpoint_seconds=0).findings}  # fmt: skip
    assert "unanchored" in kinds


def test_records_younger_than_the_interval_need_no_checkpoint(
    live_server: LiveServer, a_record_after_the_checkpoint: None
) -> None:
    """The records after the newest checkpoint (the server has not signed them yet) are no
    finding with the real interval."""
    with live_server.app.state.engine.connect() as conn:
        report = verify_on(conn, live_server.app.state.auth.keys, checkpoint_seconds=300)
    assert report.ok, report.summary()


@pytest.mark.parametrize("column", ["recorded", "id"])
def test_the_id_and_recorded_columns_are_checked_against_the_record(
    column: str, tamper: Connection, live_server: LiveServer
) -> None:
    pid, pseq = a_partition(tamper)
    change = "recorded = recorded - 86400000000" if column == "recorded" else "id = 'forged'"
    tamper.execute(
        text(f"UPDATE audit_event SET {change} WHERE partition_id = :p AND pseq = :s"),
        {"p": pid, "s": pseq},
    )
    found = [(f.kind, f.pseq, f.detail) for f in findings(tamper, live_server)]
    assert ("modified", pseq, f"the {column} column does not match the record's "
            + ("time" if column == "recorded" else "id")) in found  # fmt: skip


@pytest.fixture
def copied(live_server: LiveServer, chain_ready: None) -> None:
    from audit.indexing import catch_up_now

    catch_up_now(live_server.app.state.engine)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE resource SET content = :c WHERE resource_type = 'AuditEvent' AND id = :i",
        "DELETE FROM resource WHERE resource_type = 'AuditEvent' AND id = :i",
        "UPDATE resource SET id = 'planted' WHERE resource_type = 'AuditEvent' AND id = :i",
        "DELETE FROM resource_history WHERE resource_type = 'AuditEvent' AND id = :i",
    ],
)
def test_the_searchable_copy_is_compared_with_the_chain(
    change: str, copied: None, tamper: Connection, live_server: LiveServer
) -> None:
    """Searches, the console and the accounting of disclosures read the copy."""
    event_id = tamper.execute(
        text("SELECT id FROM audit_event ORDER BY seq LIMIT 1 OFFSET 2")
    ).scalar_one()
    tamper.execute(text(change), {"c": b'{"resourceType":"AuditEvent"}', "i": event_id})
    copy_findings = [f.detail for f in findings(tamper, live_server) if f.kind == "copy"]
    assert copy_findings, "the copy's change was not found"


def test_postgres_refuses_changes_to_the_audit_table(
    live_server: LiveServer, chain_ready: None, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("the append-only trigger is PostgreSQL's (SQLite: no UPDATE path in code)")
    engine = live_server.app.state.engine
    for statement in (
        "UPDATE audit_event SET content = content",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
        "UPDATE audit_checkpoint SET created = created",
        "DELETE FROM audit_checkpoint",
        "TRUNCATE audit_checkpoint",
    ):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))


# ---------------------------------------------------------------- the CLI


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def own_database(tmp_path: Path) -> tuple[dict[str, str], Settings]:
    """A separate SQLite database with some audited activity, for the CLI."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    env = {"MEDISENTINEL_DATABASE_URL": url, "MEDISENTINEL_MASTER_KEY": TEST_MASTER_KEY}
    settings = Settings(database_url=url, master_key=TEST_MASTER_KEY)
    from app.db import run_migrations

    run_migrations(url)
    app = create_app(settings)
    service = app.state.service
    for n in range(5):
        with service.unit_of_work(RequestContext.system(), write=True) as uow:
            service.create(
                uow,
                "Patient",
                {"resourceType": "Patient", "id": None}
                if False
                else {"resourceType": "Patient", "gender": "other", "name": [{"family": f"F{n}"}]},
            )
    app.state.engine.dispose()
    return env, settings


def test_cli_verify_exits_non_zero_on_a_finding(
    own_database: tuple[dict[str, str], Settings],
) -> None:
    env, settings = own_database
    ok = cli(env, "verify")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    import sqlite3

    db = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    db.execute("UPDATE audit_event SET content = x'7b7d' WHERE pseq = 2")
    db.commit()
    db.close()
    bad = cli(env, "verify")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["first_problem"].startswith("MODIFIED: partition 1 record 2")


def test_cli_export_verifies_offline_and_archive_respects_retention(
    own_database: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, settings = own_database
    out = tmp_path / "range.ndjson"
    exported = cli(env, "export", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["records"] == 5
    lines = out.read_bytes().splitlines()
    assert all(json.loads(line)["resourceType"] == "AuditEvent" for line in lines)
    checked = cli(env, "verify", "--export", str(out))
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["anchored_by_checkpoint"] == 5
    out.write_bytes(out.read_bytes().replace(b'"action":"C"', b'"action":"R"', 1))
    assert cli(env, "verify", "--export", str(out)).returncode == 1

    refused = cli(env, "archive", "--before", "2100-01-01", "--out", str(tmp_path / "a.ndjson"))
    assert refused.returncode == 2 and "retention" in refused.stderr
    # The records are all young: archive them as of a day past the retention (in-process;
    # the command line always counts from now, and the retention cannot go below six years).
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    later = now + (settings.audit_retention_days + 1) * 86_400_000_000
    engine = create_db_engine(settings.database_url, pool_size=1)
    try:
        keys = key_store(engine, settings)
        summary = archive(engine, keys, settings, now, tmp_path / "a.ndjson", as_of=later)
    finally:
        engine.dispose()
    assert summary["archived"] == 4  # the newest record stays as the head
    after = cli(env, "verify")
    assert after.returncode == 0, after.stdout
    assert json.loads(after.stdout)["records"] == 1
    assert cli(env, "verify", "--export", str(tmp_path / "a.ndjson")).returncode == 0


# ---------------------------------------------------------------- forged exports (S2)


@pytest.fixture
def exported(own_database: tuple[dict[str, str], Settings], tmp_path: Path) -> Path:
    env, _ = own_database
    out = tmp_path / "range.ndjson"
    made = cli(env, "export", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(out))
    assert made.returncode == 0, made.stderr
    return out


def published_jwks(settings: Settings, path: Path) -> Path:
    """The server's published /auth/jwks, as an auditor would save it."""
    engine = create_db_engine(settings.database_url, pool_size=1)
    path.write_text(json.dumps(key_store(engine, settings).jwks()))
    engine.dispose()
    return path


def forge(export: Path, *, drop_line: int) -> dict[str, Any]:
    """The probe's forgery: one line dropped, another changed, the chain re-hashed."""
    lines = export.read_bytes().split(b"\n")[:-1]
    chain = json.loads(export.with_name(export.name + ".chain.json").read_text())
    del lines[drop_line]
    del chain["records"][drop_line]
    lines[0] = lines[0].replace(b'"action":"', b'"action":"X', 1)
    prev = bytes(32)
    for n, (line, info) in enumerate(zip(lines, chain["records"], strict=True), start=1):
        digest = content_hash(line)
        chained = link_hash(prev, digest, info["partition"], n)
        info.update(pseq=n, prev_hash=prev.hex(), content_hash=digest.hex(),
                    chain_hash=chained.hex())  # fmt: skip
        prev = chained
    export.write_bytes(b"\n".join(lines) + b"\n")
    chain["forged_head"] = [chain["records"][-1]["partition"], len(lines), prev.hex()]
    return chain


def save_chain(export: Path, chain: dict[str, Any]) -> None:
    export.with_name(export.name + ".chain.json").write_text(json.dumps(chain))


def test_an_export_verifies_against_the_published_jwks(
    exported: Path, own_database: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, settings = own_database
    jwks = published_jwks(settings, tmp_path / "jwks.json")
    checked = cli({}, "verify", "--export", str(exported), "--jwks", str(jwks))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["anchored_by_checkpoint"] == report["records"] == 5


def test_a_forged_export_without_its_markers_is_not_verified(
    exported: Path, own_database: tuple[dict[str, str], Settings]
) -> None:
    env, _ = own_database
    chain = forge(exported, drop_line=2)
    for drop in ("end", "start"):
        chain.pop(drop, None)
    save_chain(exported, chain)
    checked = cli(env, "verify", "--export", str(exported))
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert report["ok"] is False and report["anchored_by_checkpoint"] == 0
    assert "nothing anchors the export's end: not verified" in report["problems"]


def test_a_forged_export_signed_with_a_key_it_carries_is_not_verified(
    exported: Path, own_database: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    """The attacker signs the end marker with their own key under the server's kid and puts
    that key in the file's jwks: only independently trusted keys count."""
    from joserfc import jws
    from joserfc.jwk import RSAKey

    env, settings = own_database
    chain = forge(exported, drop_line=2)
    kid = chain["end"]["kid"]
    attacker = RSAKey.generate_key(2048, parameters={"kid": kid})
    pid, pseq, head = chain.pop("forged_head")
    payload = json.dumps({"created": 4102444800000000, "heads": {str(pid): [pseq, head]}},
                         sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
    chain["end"]["jws"] = jws.serialize_compact({"alg": "RS256", "kid": kid}, payload, attacker)
    chain["jwks"] = {"keys": [attacker.as_dict(private=False)]}
    save_chain(exported, chain)
    jwks = published_jwks(settings, tmp_path / "jwks.json")
    for trust in ((), ("--jwks", str(jwks))):
        checked = cli(env, "verify", "--export", str(exported), *trust)
        assert checked.returncode == 1, checked.stdout
        problems = json.loads(checked.stdout)["problems"]
        assert any("signature does not verify" in p for p in problems), problems


@pytest.mark.parametrize("where", ["first", "last"])
def test_records_dropped_at_either_end_of_an_export_are_caught(
    where: str, exported: Path, own_database: tuple[dict[str, str], Settings]
) -> None:
    """Whole lines cut off at the start or the end leave a chain that still links: the signed
    start (the trail's beginning here) and end heads show the cut."""
    env, _ = own_database
    lines = exported.read_bytes().split(b"\n")[:-1]
    chain = json.loads(exported.with_name(exported.name + ".chain.json").read_text())
    index = 0 if where == "first" else -1
    del lines[index]
    del chain["records"][index]
    exported.write_bytes(b"\n".join(lines) + b"\n")
    save_chain(exported, chain)
    checked = cli(env, "verify", "--export", str(exported))
    assert checked.returncode == 1, checked.stdout
    assert "records dropped" in json.loads(checked.stdout)["problems"][0]


def test_verifying_an_export_without_trusted_keys_is_refused(
    exported: Path, tmp_path: Path
) -> None:
    elsewhere = {"MEDISENTINEL_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}",
                 "MEDISENTINEL_MASTER_KEY_FILE": str(tmp_path / "no-key")}  # fmt: skip
    refused = cli(elsewhere, "verify", "--export", str(exported))
    assert refused.returncode == 2 and "--jwks" in refused.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "no-key").exists()


def test_a_server_signs_the_heads_when_it_stops(
    own_database: tuple[dict[str, str], Settings],
) -> None:
    """Records a server (or a crashed run) left unsigned are covered when a server starts and
    when it stops, so verify may expect every record older than two intervals to be covered."""
    import asyncio

    from audit.checkpoints import current_heads, load_all

    _env, settings = own_database
    app = create_app(settings)
    engine, keys = app.state.engine, app.state.auth.keys
    with engine.connect() as conn:
        assert load_all(conn, keys) == []  # the records were written without a server

    async def start_and_stop() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(start_and_stop())
    engine = create_app(settings).state.engine
    with engine.connect() as conn:
        marks, heads = load_all(conn, keys), current_heads(conn)
    engine.dispose()
    assert heads and marks and marks[-1].heads == heads
