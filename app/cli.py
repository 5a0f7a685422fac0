"""The `medisentinel` command: serve, migrate, load, reindex, the authorization server's
client, user, launch, token and keys (app.auth.commands), audit (audit.commands), and the
HL7 v2 feeds' mllp and hl7 (hl7_adapters.commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medisentinel", description="MediSentinel FHIR server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate, then serve the FHIR API")
    serve.add_argument("--host", help="bind address (MEDISENTINEL_HOST)")
    serve.add_argument("--port", type=int, help="port (MEDISENTINEL_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (MEDISENTINEL_WORKERS)")

    commands.add_parser("migrate", help="apply database migrations and exit")

    load = commands.add_parser(
        "load", help="post Bundle (.json) or NDJSON (.ndjson) files to the API"
    )
    load.add_argument("files", nargs="+", type=Path)
    load.add_argument("--url", help="FHIR base URL (default: this server's base URL)")
    load.add_argument("--token", help="bearer token")
    load.add_argument(
        "--batch-size", type=_positive_int, default=100, help="NDJSON resources per transaction"
    )

    reindex = commands.add_parser("reindex", help="rebuild search indexes (all types, or TYPE...)")
    reindex.add_argument("types", nargs="*", metavar="TYPE")
    reindex.add_argument("--batch-size", type=_positive_int, default=500)

    _add_auth_commands(commands)
    from audit.commands import add_commands as add_audit_commands

    add_audit_commands(commands)
    from hl7_adapters.commands import add_commands as add_hl7_commands

    add_hl7_commands(commands)

    args = parser.parse_args(argv)
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        return _dispatch(args)
    except OperatorError as exc:
        problem = str(exc)
    except ArgumentError:  # every command opens the database: one place for all of them
        problem = f"MEDISENTINEL_DATABASE_URL is not a database URL: {_database_url()!r}"
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        problem = f"database {_redacted(_database_url())}: {reason}"
    print(f"medisentinel {args.command}: {problem}", file=sys.stderr)
    return 2


def _database_url() -> str:
    return get_settings().database_url


class OperatorError(Exception):
    """A mistake in the operator's configuration or surroundings: one line, no traceback."""


def _dispatch(args: argparse.Namespace) -> int:
    _check_settings()
    if args.command in AUTH_COMMANDS:
        from app.auth import commands as auth_commands

        return auth_commands.run(args)
    if args.command == "audit":
        from audit.commands import run as run_audit

        return run_audit(args)
    if args.command in ("hl7", "mllp"):
        from hl7_adapters.commands import run as run_hl7

        return run_hl7(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "migrate":
        return _migrate()
    if args.command == "reindex":
        from app.reindex import run_reindex, unknown_types

        if unknown := unknown_types(args.types):  # before migrate: a typo changes nothing
            raise OperatorError(f"unknown resource type(s): {', '.join(unknown)}")
        _migrate()
        return run_reindex(get_settings(), args.types, batch_size=args.batch_size)
    from app.loader import run_load

    return run_load(
        args.files,
        url=args.url or get_settings().fhir_base_url,
        token=args.token,
        batch_size=args.batch_size,
    )


def _positive_int(text: str) -> int:
    # 0 made reindex do nothing and report success; a negative LIMIT is no limit on SQLite.
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


AUTH_COMMANDS = frozenset({"client", "user", "launch", "token", "keys"})


def _add_auth_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from app.auth.grant import ROLES

    client = commands.add_parser("client", help="register and list OAuth client applications")
    client_actions = client.add_subparsers(dest="action", required=True)
    create = client_actions.add_parser("create", help="register a client; prints its client_id")
    create.add_argument("name")
    create.add_argument("--kind", required=True, choices=("public", "confidential", "backend"))
    create.add_argument("--redirect-uri", action="append", default=[], metavar="URI")
    create.add_argument("--launch-uri", metavar="URI")
    create.add_argument("--scope", required=True, help="the scopes it may ever be granted")
    keys = create.add_mutually_exclusive_group()
    keys.add_argument("--jwks", type=Path, metavar="FILE", help="JWK Set (or one JWK) file")
    keys.add_argument("--jwks-uri", metavar="URL")
    client_actions.add_parser("list", help="print the registrations (never secrets)")

    user = commands.add_parser("user", help="create user accounts")
    user_actions = user.add_subparsers(dest="action", required=True)
    create = user_actions.add_parser("create", help="create a user; password read from stdin")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--fhir-user", metavar="Type/id")
    create.add_argument("--password-stdin", action="store_true", required=True)

    launch = commands.add_parser("launch", help="create an EHR launch context; prints its id")
    launch.add_argument("--patient", required=True, metavar="ID")
    launch.add_argument("--encounter", metavar="ID")
    launch.add_argument(
        "--client", metavar="CLIENT", help="client_id or name of the only app that may use it"
    )

    token = commands.add_parser("token", help="issue an access token to a registered client")
    token.add_argument("--client", required=True, metavar="NAME")
    token.add_argument("--scope", required=True)

    keys_parser = commands.add_parser("keys", help="list or rotate the token signing keys")
    keys_actions = keys_parser.add_subparsers(dest="action", required=True)
    keys_actions.add_parser("list", help="print the signing keys (public data only)")
    keys_actions.add_parser("rotate", help="retire the signing key, create a new one")


def _check_settings() -> None:
    from pydantic import ValidationError

    try:
        get_settings()
    except ValidationError as exc:
        problems = [
            f"MEDISENTINEL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        raise OperatorError("invalid setting " + "; ".join(problems)) from None


def _migrate() -> int:
    from app.db import run_migrations

    settings = get_settings()
    run_migrations(settings.database_url)
    print(f"database is at the newest schema ({_redacted(settings.database_url)})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from app.serving import serve

    # Flags override the environment so worker processes (which re-read settings) agree.
    for name in ("host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"MEDISENTINEL_{name.upper()}"] = str(value)
    get_settings.cache_clear()
    _check_settings()  # the flags are settings too: --port 99999 is refused like the variable
    settings = get_settings()
    _migrate()
    print(f"serving FHIR at {settings.fhir_base_url}")
    serve(
        app="app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
    )
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
