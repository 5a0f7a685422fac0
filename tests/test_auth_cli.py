"""The authorization commands (client, user, launch, token, keys): the real `medisentinel`
command in a subprocess against a real database, and one token used on the live server."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from app.auth import secrets
from app.auth.server import AuthServer
from app.db import create_db_engine
from app.settings import Settings
from tests.conftest import TEST_MASTER_KEY
from tests.helpers import server_env

CLI = [sys.executable, "-m", "app.cli"]
MASTER_KEY = "cli-test-master-key-" + "1" * 32
BASE_URL = "http://cli.test/fhir"


class Cli:
    """`medisentinel` on a fresh SQLite database of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.db_path = tmp_path / "auth.db"
        self.url = f"sqlite:///{self.db_path}"
        self.master_key_file = tmp_path / "master.key"
        self.env = {
            **os.environ,
            "MEDISENTINEL_DATABASE_URL": self.url,
            "MEDISENTINEL_MASTER_KEY": MASTER_KEY,
            "MEDISENTINEL_MASTER_KEY_FILE": str(self.master_key_file),
            "MEDISENTINEL_BASE_URL": BASE_URL,
        }

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=120
        )

    def ok(self, *args: str, stdin: str | None = None) -> Any:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def fails(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout == ""
        return result.stderr

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    def auth_server(self) -> AuthServer:
        settings = Settings(
            database_url=self.url,
            master_key=MASTER_KEY,
            master_key_file=self.master_key_file,
            base_url=BASE_URL,
        )
        return AuthServer(create_db_engine(self.url), settings)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def jwk_file(tmp_path: Path) -> Path:
    """One public RSA JWK (not a set: the command wraps it)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "cli-test", "alg": "RS384"})
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key.as_dict(private=False)))
    return path


def _backend(cli: Cli, name: str, jwk_file: Path, scope: str = "system/*.rs") -> dict[str, Any]:
    return dict(cli.ok("client", "create", name, "--kind", "backend", "--scope", scope,
                       "--jwks", str(jwk_file)))  # fmt: skip


def _jwt_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


# ---------------------------------------------------------------------- clients


def test_client_create_each_kind(cli: Cli, jwk_file: Path) -> None:
    confidential = cli.ok(
        "client", "create", "web-app", "--kind", "confidential",
        "--redirect-uri", "https://app.test/cb", "--redirect-uri", "https://app.test/cb2",
        "--launch-uri", "https://app.test/launch", "--scope", "user/*.rs openid fhirUser",
    )  # fmt: skip
    assert confidential["client_id"]
    assert confidential["client_secret"]
    assert confidential["redirect_uris"] == ["https://app.test/cb", "https://app.test/cb2"]
    assert confidential["launch_uri"] == "https://app.test/launch"

    public = cli.ok("client", "create", "spa", "--kind", "public",
                    "--redirect-uri", "https://spa.test/cb", "--scope", "patient/*.rs")  # fmt: skip
    assert public["client_id"] and public["kind"] == "public"
    assert "client_secret" not in public

    backend = _backend(cli, "etl", jwk_file)
    assert backend["client_id"] and backend["kind"] == "backend"
    assert "client_secret" not in backend
    assert [k["kid"] for k in backend["jwks"]["keys"]] == ["cli-test"]  # one JWK, wrapped

    by_uri = cli.ok("client", "create", "etl-2", "--kind", "backend", "--scope", "system/*.rs",
                    "--jwks-uri", "https://etl.test/jwks.json")  # fmt: skip
    assert by_uri["jwks_uri"] == "https://etl.test/jwks.json"
    assert "client_secret" not in by_uri

    ids = {r[0] for r in cli.query("select client_id from auth_client")}
    assert ids == {c["client_id"] for c in (confidential, public, backend, by_uri)}


def test_client_create_refuses_incomplete_registrations(cli: Cli, tmp_path: Path) -> None:
    stderr = cli.fails("client", "create", "etl", "--kind", "backend", "--scope", "system/*.rs")
    assert stderr.startswith("error: ") and "--jwks" in stderr
    stderr = cli.fails("client", "create", "spa", "--kind", "public", "--scope", "patient/*.rs")
    assert stderr.startswith("error: ") and "redirect URI" in stderr
    private = tmp_path / "private.json"
    private.write_text(json.dumps(RSAKey.generate_key(2048).as_dict(private=True)))
    stderr = cli.fails("client", "create", "etl", "--kind", "backend", "--scope", "system/*.rs",
                       "--jwks", str(private))  # fmt: skip
    assert "private key material" in stderr
    assert cli.query("select count(*) from auth_client") == [(0,)]


def test_client_list_never_shows_secrets(cli: Cli, jwk_file: Path) -> None:
    created = cli.ok("client", "create", "web-app", "--kind", "confidential",
                     "--redirect-uri", "https://app.test/cb", "--scope", "user/*.rs")  # fmt: skip
    _backend(cli, "etl", jwk_file)
    result = cli.run("client", "list")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [c["client_name"] for c in listed] == ["etl", "web-app"]
    assert listed[1]["client_id"] == created["client_id"]
    assert created["client_secret"] not in result.stdout
    assert "secret" not in result.stdout and "$argon2" not in result.stdout


# ---------------------------------------------------------------------- users


def test_user_create_reads_password_from_stdin_and_stores_argon2id(cli: Cli) -> None:
    password = "correct horse battery"
    user = cli.ok("user", "create", "dr-who", "--role", "practitioner",
                  "--fhir-user", "Practitioner/77", "--password-stdin",
                  stdin=password + "\n")  # fmt: skip
    assert user == {"username": "dr-who", "role": "practitioner", "fhir_user": "Practitioner/77"}
    [(stored,)] = cli.query("select password_hash from auth_user where username = ?", "dr-who")
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert secrets.verify_password(stored, password)  # the trailing newline was not kept


def test_user_create_patient_needs_fhir_user(cli: Cli) -> None:
    stderr = cli.fails("user", "create", "pat", "--role", "patient", "--password-stdin",
                       stdin="long enough password\n")  # fmt: skip
    assert "--fhir-user" in stderr
    assert cli.query("select count(*) from auth_user") == [(0,)]


def test_user_create_never_takes_the_password_from_argv(cli: Cli) -> None:
    result = cli.run("user", "create", "x", "--role", "admin", "--password", "hunter22hunter")
    assert result.returncode == 2  # argparse: no such option
    result = cli.run("user", "create", "x", "--role", "admin", stdin="hunter22hunter\n")
    assert result.returncode == 2 and "--password-stdin" in result.stderr


# ---------------------------------------------------------------------- launch


def test_launch_prints_a_stored_launch_id(cli: Cli) -> None:
    out = cli.ok("launch", "--patient", "pat-1", "--encounter", "enc-9")
    assert out["patient"] == "pat-1" and out["encounter"] == "enc-9"
    rows = cli.query(
        "select patient, encounter, created_by from auth_launch where launch_id = ?", out["launch"]
    )
    assert rows == [("pat-1", "enc-9", "cli")]
    assert cli.ok("launch", "--patient", "pat-2")["encounter"] is None


def test_launch_for_one_client(cli: Cli, jwk_file: Path) -> None:
    client = _backend(cli, "ehr-app", jwk_file)
    by_name = cli.ok("launch", "--patient", "pat-3", "--client", "ehr-app")
    by_id = cli.ok("launch", "--patient", "pat-3", "--client", client["client_id"])
    assert by_name["client_id"] == by_id["client_id"] == client["client_id"]
    rows = cli.query("select client_id from auth_launch where launch_id = ?", by_name["launch"])
    assert rows == [(client["client_id"],)]
    assert "no registered client" in cli.fails("launch", "--patient", "p", "--client", "nobody")


# ---------------------------------------------------------------------- tokens and keys


def test_token_is_signed_by_a_listed_key(cli: Cli, jwk_file: Path) -> None:
    client = _backend(cli, "etl", jwk_file)
    response = cli.ok("token", "--client", "etl", "--scope", "system/Patient.rs")
    assert response["token_type"] == "Bearer" and response["scope"] == "system/Patient.rs"
    kid = _jwt_header(response["access_token"])["kid"]
    keys = cli.ok("keys", "list")
    assert [k["kid"] for k in keys] == [kid]
    assert set(keys[0]) == {"kid", "created_at", "retired_at", "expires_at"}  # public data only
    auth = cli.auth_server()
    try:
        assert auth.tokens.verify(response["access_token"]).client_id == client["client_id"]
    finally:
        auth.engine.dispose()


def test_token_refuses_scopes_beyond_the_registration(cli: Cli, jwk_file: Path) -> None:
    _backend(cli, "etl", jwk_file, scope="system/Patient.rs")
    stderr = cli.fails("token", "--client", "etl", "--scope", "system/Observation.rs")
    assert stderr.startswith("error: ") and "invalid_scope" in stderr
    stderr = cli.fails("token", "--client", "etl", "--scope", "system/Patient.cruds")
    assert "invalid_scope" in stderr
    assert "no client named" in cli.fails("token", "--client", "nobody", "--scope", "system/*.rs")
    assert cli.query("select count(*) from auth_token") == [(0,)]


def test_token_is_for_backend_clients_and_system_scopes_only(cli: Cli, jwk_file: Path) -> None:
    """A console token's subject is the client itself: no user, no patient in context. So an
    app registered to act for people gets none, and a backend client gets system/ scopes only,
    the rules client_credentials applies (SMART Backend Services)."""
    scope = "user/*.rs patient/*.rs"
    cli.ok("client", "create", "web-app", "--kind", "confidential",
           "--redirect-uri", "https://app.test/cb", "--scope", scope)  # fmt: skip
    stderr = cli.fails("token", "--client", "web-app", "--scope", "user/Patient.rs")
    assert "unauthorized_client" in stderr and "confidential" in stderr
    stderr = cli.fails("token", "--client", "web-app", "--scope", "patient/Patient.rs")
    assert "unauthorized_client" in stderr
    _backend(cli, "etl", jwk_file, scope="system/*.rs openid")
    assert "invalid_scope" in cli.fails("token", "--client", "etl", "--scope", "openid")
    assert cli.query("select count(*) from auth_token") == [(0,)]
    assert cli.ok("token", "--client", "etl", "--scope", "system/Patient.rs")["access_token"]


def test_keys_rotate_keeps_old_tokens_verifying(cli: Cli, jwk_file: Path) -> None:
    _backend(cli, "etl", jwk_file)
    before = cli.ok("token", "--client", "etl", "--scope", "system/Patient.rs")["access_token"]
    old_kid = _jwt_header(before)["kid"]

    rotated = cli.ok("keys", "rotate")
    assert rotated["kid"] != old_kid
    assert rotated["retired"] == [old_kid]

    keys = {k["kid"]: k for k in cli.ok("keys", "list")}
    assert set(keys) == {old_kid, rotated["kid"]}
    old = keys[old_kid]
    assert old["retired_at"] is not None
    assert old["expires_at"] == old["retired_at"] + Settings().access_token_seconds + 300
    assert keys[rotated["kid"]]["retired_at"] is None and keys[rotated["kid"]]["expires_at"] is None

    after = cli.ok("token", "--client", "etl", "--scope", "system/Patient.rs")["access_token"]
    assert _jwt_header(after)["kid"] == rotated["kid"]
    auth = cli.auth_server()
    try:
        assert auth.tokens.verify(before).client_id == auth.tokens.verify(after).client_id
        assert auth.keys.signing_key().kid == rotated["kid"]
    finally:
        auth.engine.dispose()


def test_keys_rotate_refuses_a_wrong_master_key(cli: Cli, jwk_file: Path) -> None:
    _backend(cli, "etl", jwk_file)
    cli.ok("token", "--client", "etl", "--scope", "system/Patient.rs")
    cli.env["MEDISENTINEL_MASTER_KEY"] = "another-master-key-" + "2" * 32
    assert "master key" in cli.fails("keys", "rotate")
    cli.env["MEDISENTINEL_MASTER_KEY"] = MASTER_KEY
    assert [k["retired_at"] for k in cli.ok("keys", "list")] == [None]  # nothing was retired


# ---------------------------------------------------------------------- end to end


def test_cli_token_opens_the_live_server(base_url: str, database_url: str, jwk_file: Path) -> None:
    env = server_env(database_url, TEST_MASTER_KEY, base_url=base_url)
    name = f"cli-e2e-{uuid.uuid4().hex[:12]}"

    def run(*args: str) -> Any:
        result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    run("client", "create", name, "--kind", "backend", "--scope", "system/*.rs",
        "--jwks", str(jwk_file))  # fmt: skip
    token = run("token", "--client", name, "--scope", "system/Patient.rs")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(f"{base_url}/Patient", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == "Bundle"
    assert httpx.get(f"{base_url}/Patient", timeout=30).status_code == 401
