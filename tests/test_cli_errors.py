"""The medisentinel command on operator mistakes: a one-line error on stderr, a non-zero exit
code, never a Python traceback; and a load goes on past input it cannot parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import patient, unique

CLI = [sys.executable, "-m", "app.cli"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_operator_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_load_refuses_missing_file_and_directory_before_posting(
    tmp_path: Path, base_url: str, system_token: str, auth_headers: dict[str, str]
) -> None:
    rid = unique("notposted")
    good = tmp_path / "good.ndjson"
    good.write_text(json.dumps(patient(id=rid)) + "\n")
    for wrong in (tmp_path / "missing.json", tmp_path):
        result = _run(["load", str(good), str(wrong), "--url", base_url, "--token", system_token])
        _assert_operator_error(result, str(wrong))
    assert httpx.get(f"{base_url}/Patient/{rid}", headers=auth_headers).status_code == 404


@pytest.mark.parametrize("command", ["load", "reindex"])
def test_batch_size_below_one_is_refused(tmp_path: Path, command: str) -> None:
    # reindex --batch-size 0 reindexed nothing and said "0 failure(s)", exit 0.
    args = [command, str(tmp_path / "x.ndjson")] if command == "load" else [command]
    for size in ("0", "-3"):
        result = _run([*args, "--batch-size", size])
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "--batch-size: must be at least 1" in result.stderr.strip().splitlines()[-1]


def test_load_skips_a_bad_ndjson_line_and_loads_the_rest(
    tmp_path: Path, base_url: str, system_token: str, auth_headers: dict[str, str]
) -> None:
    first, last = unique("first"), unique("last")
    ndjson = tmp_path / "mixed.ndjson"
    ndjson.write_text(
        f"{json.dumps(patient(id=first))}\nnot json\n{json.dumps(patient(id=last))}\n"
    )
    empty = tmp_path / "empty.json"
    empty.write_text("")
    array = tmp_path / "array.json"
    array.write_text("[1]")
    result = _run(
        ["load", str(ndjson), str(empty), str(array), "--url", base_url, "--token", system_token]
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "2 ok, 3 failed" in result.stdout
    assert f"{ndjson}:2: invalid JSON" in result.stdout
    assert f"{empty}: invalid JSON" in result.stdout
    assert f"{array}: not a JSON object" in result.stdout
    for rid in (first, last):
        assert httpx.get(f"{base_url}/Patient/{rid}", headers=auth_headers).status_code == 200


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEDISENTINEL_AUDIT_RETENTION_DAYS", "-1"),
        ("MEDISENTINEL_AUDIT_RETENTION_DAYS", "0"),
        ("MEDISENTINEL_AUDIT_RETENTION_DAYS", "2191"),  # a day short of six years
        ("MEDISENTINEL_BACKEND_ACCESS_TOKEN_SECONDS", "0"),
        ("MEDISENTINEL_BACKEND_ACCESS_TOKEN_SECONDS", "301"),  # SMART: SHOULD NOT exceed 300
        ("MEDISENTINEL_PORT", "-5"),
        ("MEDISENTINEL_PORT", "70000"),
        ("MEDISENTINEL_PORT", "eighty"),
        ("MEDISENTINEL_MLLP_PORT", "-1"),
        ("MEDISENTINEL_BASE_URL", "fhir.example.org/fhir"),
        ("MEDISENTINEL_WORKERS", "0"),
        ("MEDISENTINEL_MAX_PAGE_SIZE", "0"),
        ("MEDISENTINEL_LOG_LEVEL", "loud"),
        ("MEDISENTINEL_MASTER_KEY", "too-short"),
    ],
)
def test_invalid_setting_is_refused_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    db = tmp_path / "never.db"
    result = _run(["migrate"], MEDISENTINEL_DATABASE_URL=f"sqlite:///{db}", **{variable: value})
    _assert_operator_error(result, variable)
    assert not db.exists()


def test_audit_retention_below_six_years_is_refused_saying_why(tmp_path: Path) -> None:
    """HIPAA 45 CFR 164.316(b)(2)(i): six years. Anything younger than the retention cannot be
    archived, so a smaller value (0 above all) would let the whole trail be archived at once."""
    db = tmp_path / "never.db"
    url = f"sqlite:///{db}"
    result = _run(
        ["migrate"], MEDISENTINEL_DATABASE_URL=url, MEDISENTINEL_AUDIT_RETENTION_DAYS="30"
    )
    _assert_operator_error(result, "MEDISENTINEL_AUDIT_RETENTION_DAYS", "2192", "six years")
    assert not db.exists()
    floor = _run(
        ["migrate"], MEDISENTINEL_DATABASE_URL=url, MEDISENTINEL_AUDIT_RETENTION_DAYS="2192"
    )
    assert floor.returncode == 0, floor.stderr


def test_serve_refuses_a_port_flag_out_of_range(tmp_path: Path) -> None:
    result = _run(
        ["serve", "--port", "99999"], MEDISENTINEL_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}"
    )
    _assert_operator_error(result, "MEDISENTINEL_PORT")


def test_unreachable_database_is_one_line_with_the_password_hidden() -> None:
    url = "postgresql+psycopg://ops:s3cret@127.0.0.1:1/none"
    commands = (["migrate"], ["serve"], ["client", "list"], ["audit", "verify"], ["hl7", "errors"])
    for command in commands:
        result = _run(command, MEDISENTINEL_DATABASE_URL=url)
        _assert_operator_error(result, "database postgresql+psycopg://ops:***@127.0.0.1:1/none")
        assert "s3cret" not in result.stderr


def test_malformed_database_url_is_one_line() -> None:
    for command in (["migrate"], ["keys", "list"]):
        result = _run(command, MEDISENTINEL_DATABASE_URL="nonsense")
        _assert_operator_error(result, "MEDISENTINEL_DATABASE_URL")
