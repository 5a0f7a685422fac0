"""The medisentinel command: migrate, serve (migrates on start), load."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.db import create_db_engine, refresh_statistics, run_migrations, write_transaction
from tests.helpers import patient, unique

CLI = [sys.executable, "-m", "app.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_migrate_creates_schema_on_fresh_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "MEDISENTINEL_DATABASE_URL": url}
    result = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "newest schema" in result.stdout
    import sqlite3

    tables = {
        r[0]
        for r in sqlite3.connect(tmp_path / "fresh.db").execute("select name from sqlite_master")
    }
    assert {"resource", "resource_history", "change_event", "alembic_version"} <= tables


def test_serve_migrates_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "MEDISENTINEL_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "MEDISENTINEL_PORT": str(port),
        "MEDISENTINEL_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "MEDISENTINEL_MLLP_ENABLED": "false",  # tests/test_hl7_mllp_server.py covers it
    }
    process = subprocess.Popen(
        [*CLI, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("server did not start")
                time.sleep(0.2)
        assert response.json()["resourceType"] == "CapabilityStatement"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_load_bundle_and_ndjson_through_the_api(
    tmp_path: Path, base_url: str, auth_headers: dict[str, str], system_token: str
) -> None:
    family = unique("Load")
    ndjson = tmp_path / "patients.ndjson"
    ndjson.write_text(
        "\n".join(json.dumps(patient(name=[{"family": family}])) for _ in range(7)) + "\n"
    )
    rid = unique("loaded")
    bundle = tmp_path / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": patient(id=rid),
                        "request": {"method": "PUT", "url": f"Patient/{rid}"},
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [
            *CLI,
            "load",
            str(ndjson),
            str(bundle),
            "--url",
            base_url,
            "--batch-size",
            "3",
            "--token",
            system_token,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 ok, 0 failed" in result.stdout
    assert "4 bundle(s)" in result.stdout
    assert httpx.get(f"{base_url}/Patient/{rid}", headers=auth_headers).status_code == 200


def test_load_reports_failures(tmp_path: Path, base_url: str, system_token: str) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text(json.dumps(patient(gender="girl")) + "\n")
    result = subprocess.run(
        [*CLI, "load", str(bad), "--url", base_url, "--token", system_token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "0 ok, 1 failed" in result.stdout


def test_reindex_rebuilds_missing_index_rows(
    base_url: str, database_url: str, auth_headers: dict[str, str]
) -> None:
    from sqlalchemy import create_engine, delete

    from app.fhir.tables import search_token

    system = f"urn:reindex:{unique('sys')}"
    body = patient(identifier=[{"system": system, "value": "42"}])
    rid = httpx.post(f"{base_url}/Patient", json=body, headers=auth_headers).json()["id"]
    query = {"identifier": f"{system}|42"}
    search = httpx.get(f"{base_url}/Patient", params=query, headers=auth_headers).json()
    assert len(search["entry"]) == 1
    engine = create_engine(database_url)
    with engine.begin() as conn:  # as if a definition had changed after indexing
        conn.execute(delete(search_token).where(search_token.c.resource_id == rid))
    engine.dispose()
    search = httpx.get(f"{base_url}/Patient", params=query, headers=auth_headers).json()
    assert "entry" not in search
    env = {**os.environ, "MEDISENTINEL_DATABASE_URL": database_url}
    result = subprocess.run(
        [*CLI, "reindex", "Patient", "--batch-size", "7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s)" in result.stdout
    assert "Patient" in result.stderr  # the progress bar
    found = httpx.get(f"{base_url}/Patient", params=query, headers=auth_headers).json()["entry"]
    assert [e["resource"]["id"] for e in found] == [rid]


def test_reindex_refuses_unknown_type(tmp_path: Path) -> None:
    db = tmp_path / "untouched.db"
    env = {**os.environ, "MEDISENTINEL_DATABASE_URL": f"sqlite:///{db}"}
    result = subprocess.run(
        [*CLI, "reindex", "Patient", "Pationt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "medisentinel reindex: unknown resource type(s): Pationt"
    assert not db.exists()  # refused before migrating


def test_postgres_stores_documents_lz4_compressed(
    database_url: str, is_postgres: bool, base_url: str, auth_headers: dict[str, str]
) -> None:
    """Migration 0010: large values (resource JSON, history, audit records, raw HL7) are
    compressed with LZ4 on a server that has it (Debian's and the postgres image's do)."""
    if not is_postgres:
        pytest.skip("column compression is a PostgreSQL setting")
    div = f'<div xmlns="http://www.w3.org/1999/xhtml">{"note " * 2000}</div>'
    body = patient(text={"status": "generated", "div": div})
    created = httpx.post(f"{base_url}/Patient", json=body, headers=auth_headers)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    engine = create_engine(database_url)
    with engine.connect() as conn:
        methods = dict(conn.execute(text(
            "SELECT c.relname || '.' || a.attname, a.attcompression FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname IN "
            "('resource', 'resource_history', 'audit_event', 'hl7_message') "
            "AND a.attname IN ('content', 'raw')"
        )).all())  # fmt: skip
        stored = conn.execute(
            text("SELECT pg_column_compression(content) FROM resource "
                 "WHERE resource_type = 'Patient' AND id = :id"), {"id": new_id}
        ).scalar()  # fmt: skip
    engine.dispose()
    assert methods == {
        "resource.content": "l",
        "resource_history.content": "l",
        "audit_event.content": "l",
        "hl7_message.raw": "l",
    }
    assert stored == "lz4"


def test_sqlite_planner_statistics_are_kept(tmp_path: Path) -> None:
    """refresh_statistics (server start, every 10 minutes, reindex) leaves sqlite_stat1 rows:
    without them SQLite plans patient + code + date as a scan (BENCHMARKS.md)."""
    url = f"sqlite:///{tmp_path / 'stats.db'}"
    run_migrations(url)
    engine = create_db_engine(url)
    try:
        with write_transaction(engine) as conn:
            conn.execute(
                text(
                    "INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, "
                    "content) VALUES ('Patient', 'p1', 1, 0, false, '{}')"
                )
            )
        refresh_statistics(engine)
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT DISTINCT tbl FROM sqlite_stat1")).scalars().all()
    finally:
        engine.dispose()
    assert "resource" in tables
