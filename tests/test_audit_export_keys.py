"""An auditor verifies an export against the keys the server publishes, fetched from where the
command line tells them to look (docs/audit.md "Verifying an export")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.conftest import TEST_MASTER_KEY, LiveServer
from tests.test_audit_verify import cli


def test_the_keys_the_cli_points_auditors_to_are_published_and_verify_an_export(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    root = live_server.settings.server_root
    # Without --jwks, on a machine without the server's database, the command says where the
    # trusted keys are published.
    elsewhere = {"MEDISENTINEL_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}",
                 "MEDISENTINEL_MASTER_KEY_FILE": str(tmp_path / "none.key")}  # fmt: skip
    (tmp_path / "x.ndjson").write_text("")
    refused = cli(elsewhere, "verify", "--export", str(tmp_path / "x.ndjson"))
    assert refused.returncode == 2
    named = re.search(r"published (/[\w/.-]+)", refused.stderr)
    assert named, refused.stderr
    published = httpx.get(root + named.group(1))
    assert published.status_code == 200, f"{named.group(1)}: {published.status_code}"
    assert published.json()["keys"]
    # The smart-configuration advertises the same document.
    discovery = httpx.get(f"{live_server.base_url}/.well-known/smart-configuration").json()
    assert discovery["jwks_uri"] == root + named.group(1)

    server = {"MEDISENTINEL_DATABASE_URL": database_url, "MEDISENTINEL_MASTER_KEY": TEST_MASTER_KEY}
    out = tmp_path / "range.ndjson"
    made = cli(server, "export", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(out))
    assert made.returncode == 0, made.stderr
    checked = cli({}, "verify", "--export", str(out), "--jwks", root + named.group(1))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
