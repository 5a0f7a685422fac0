"""The `medisentinel` command: serve, migrate, load."""

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
        "--batch-size", type=int, default=100, help="NDJSON resources per transaction"
    )

    reindex = commands.add_parser("reindex", help="rebuild search indexes (all types, or TYPE...)")
    reindex.add_argument("types", nargs="*", metavar="TYPE")
    reindex.add_argument("--batch-size", type=int, default=500)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "migrate":
        return _migrate()
    if args.command == "reindex":
        from app.reindex import run_reindex

        _migrate()
        return run_reindex(get_settings(), args.types, batch_size=args.batch_size)
    from app.loader import run_load

    return run_load(
        args.files,
        url=args.url or get_settings().fhir_base_url,
        token=args.token,
        batch_size=args.batch_size,
    )


def _migrate() -> int:
    from app.db import run_migrations

    settings = get_settings()
    run_migrations(settings.database_url)
    print(f"database is at the newest schema ({_redacted(settings.database_url)})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    # Flags override the environment so worker processes (which re-read settings) agree.
    for name in ("host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"MEDISENTINEL_{name.upper()}"] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    _migrate()
    print(f"serving FHIR at {settings.fhir_base_url}")
    uvicorn.run(
        "app.main:create_app",
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
