"""`medisentinel audit` on bad input: a date it cannot read, an export without its chain file
or with a mangled one. Errors, never tracebacks: exit 2 for what the command cannot use,
exit 1 (ok false) for a file that does not verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.settings import Settings
from tests.test_audit_verify import cli, own_database

__all__ = ["own_database"]  # the fixture, shared with the chain tests


@pytest.mark.parametrize(
    "args",
    [
        ("export", "--from", "yesterday", "--to", "2100-01-01"),
        ("export", "--from", "2000-01-01", "--to", "2100-13-01"),
        ("archive", "--before", "garbage"),
        ("verify", "--since", "not-a-date"),
    ],
)
def test_unreadable_dates_are_usage_errors(
    own_database: tuple[dict[str, str], Settings], tmp_path: Path, args: tuple[str, ...]
) -> None:
    env, _ = own_database
    extra = ("--out", str(tmp_path / "x.ndjson")) if args[0] != "verify" else ()
    done = cli(env, *args, *extra)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "is not a date" in done.stderr


def test_an_export_without_its_chain_file_is_an_error(
    own_database: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, _ = own_database
    lonely = tmp_path / "lonely.ndjson"
    lonely.write_text("{}\n")
    done = cli(env, "verify", "--export", str(lonely))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "chain file" in done.stderr


@pytest.mark.parametrize("chain", ["not json", '{"format": 2}', "[]", '{"records": 5}'])
def test_a_mangled_chain_file_does_not_verify(
    own_database: tuple[dict[str, str], Settings], tmp_path: Path, chain: str
) -> None:
    env, _ = own_database
    out = tmp_path / "range.ndjson"
    made = cli(env, "export", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(out))
    assert made.returncode == 0, made.stderr
    out.with_name(out.name + ".chain.json").write_text(chain)
    done = cli(env, "verify", "--export", str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["ok"] is False
