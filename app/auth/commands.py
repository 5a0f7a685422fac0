"""The authorization commands of `medisentinel` (client, user, launch, token, keys), for local
operators: they read and write the database directly, so they need no running server.

Each command migrates the database first, does its work in its own transactions, and prints
JSON on stdout. An OAuthError (or a master key that does not fit) is printed to stderr as
`error: <description> (<code>)` with exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from app.auth import clients, launch, users
from app.auth.errors import OAuthError, invalid_request
from app.auth.keys import MasterKeyError
from app.auth.tables import signing_key
from app.db import create_db_engine, run_migrations, write_transaction
from app.settings import Settings, get_settings

# A rotated key keeps verifying this long beyond the access token lifetime (clock skew, and
# tokens issued just before the rotation).
ROTATION_GRACE_SECONDS = 300

Handler = Callable[[Engine, Settings, argparse.Namespace], Any]


def run(args: argparse.Namespace) -> int:
    """Run the auth command `args` names (as parsed by app.cli) and print its JSON result."""
    handler = _HANDLERS[(args.command, getattr(args, "action", None))]
    settings = get_settings()
    try:
        run_migrations(settings.database_url)
        engine = create_db_engine(settings.database_url, pool_size=2)
        try:
            # Every transaction here may write: on SQLite take the write lock at BEGIN
            # (BEGIN IMMEDIATE) rather than upgrading a read lock part way through.
            result = handler(engine.execution_options(for_write=True), settings, args)
        finally:
            engine.dispose()
    except OAuthError as exc:
        print(f"error: {exc.description} ({exc.error})", file=sys.stderr)
        return 2
    except MasterKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------------- clients


def client_create(engine: Engine, _settings: Settings, args: argparse.Namespace) -> Any:
    jwks = read_jwks(args.jwks) if args.jwks is not None else None
    with write_transaction(engine) as conn:
        new = clients.create_client(
            conn,
            args.name,
            args.kind,
            scope=args.scope,
            redirect_uris=args.redirect_uri,
            launch_uri=args.launch_uri,
            jwks=jwks,
            jwks_uri=args.jwks_uri,
        )
    out = clients.describe(new.record)
    if new.client_secret is not None:
        out["client_secret"] = new.client_secret  # shown this once, stored only as a hash
    return out


def client_list(engine: Engine, _settings: Settings, _args: argparse.Namespace) -> Any:
    with engine.connect() as conn:
        return [clients.describe(record) for record in clients.list_clients(conn)]


def read_jwks(path: Path) -> dict[str, Any]:
    """A client's public keys from a file: a JWK Set, or one JWK (wrapped into a set)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise invalid_request(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise invalid_request(f"{path} is not JSON: {exc}") from exc
    if isinstance(value, dict) and "keys" not in value and "kty" in value:
        value = {"keys": [value]}
    if not (isinstance(value, dict) and isinstance(value.get("keys"), list)):
        raise invalid_request(f"{path} is neither a JWK Set ({{'keys': [...]}}) nor a JWK")
    return value  # its keys are checked by clients.create_client (client_metadata.py)


# ---------------------------------------------------------------------- users


def user_create(engine: Engine, _settings: Settings, args: argparse.Namespace) -> Any:
    password = read_password()
    with write_transaction(engine) as conn:
        user = users.create_user(conn, args.username, args.role, password, args.fhir_user)
    return {"username": user.username, "role": user.role, "fhir_user": user.fhir_user}


def read_password() -> str:
    """The password from stdin (never argv): one line typed at a terminal, or everything piped
    in, less one trailing newline."""
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    text = sys.stdin.read()
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


# ---------------------------------------------------------------------- launch and tokens


def launch_create(engine: Engine, _settings: Settings, args: argparse.Namespace) -> Any:
    with write_transaction(engine) as conn:
        try:
            context = launch.create_launch(
                conn,
                patient=args.patient,
                encounter=args.encounter,
                created_by="cli",
                client=args.client,
            )
        except ValueError as exc:
            raise invalid_request(str(exc)) from exc
    return {"launch": context.launch_id, "patient": context.patient,
            "encounter": context.encounter, "client_id": context.client_id}  # fmt: skip


def token(engine: Engine, settings: Settings, args: argparse.Namespace) -> Any:
    from app.auth.server import AuthServer

    if not args.scope.split():
        raise invalid_request("--scope must name at least one scope")
    return AuthServer(engine, settings).local_token(args.client, args.scope)


# ---------------------------------------------------------------------- signing keys


def keys_list(engine: Engine, _settings: Settings, _args: argparse.Namespace) -> Any:
    columns = (signing_key.c.kid, signing_key.c.created_at, signing_key.c.retired_at,
               signing_key.c.expires_at)  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(signing_key.c.created_at)).all()
    return [dict(row._mapping) for row in rows]


def keys_rotate(engine: Engine, settings: Settings, _args: argparse.Namespace) -> Any:
    from app.auth.server import AuthServer

    auth = AuthServer(engine, settings)
    with engine.connect() as conn:
        active = list(
            conn.scalars(select(signing_key.c.kid).where(signing_key.c.retired_at.is_(None)))
        )
    if active:
        # Unseal the active key first: a wrong master key must fail here, not retire the
        # working key and leave the server with a new one it cannot open.
        auth.keys.signing_key()
    kid = auth.keys.rotate(settings.longest_access_token_seconds + ROTATION_GRACE_SECONDS)
    return {"kid": kid, "retired": active}


_HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("client", "create"): client_create,
    ("client", "list"): client_list,
    ("user", "create"): user_create,
    ("launch", None): launch_create,
    ("token", None): token,
    ("keys", "list"): keys_list,
    ("keys", "rotate"): keys_rotate,
}
