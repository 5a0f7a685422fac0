"""`medisentinel audit ...`: verify the chain, take a checkpoint, export a date range,
archive what is older than the retention period. Local operator commands: they work on the
database directly, need no running server, and print JSON.

`verify` exits 1 when anything does not fit (the first finding is printed first), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.auth.keys import KeyStore, Sealer, load_master_key
from app.db import create_db_engine, run_migrations
from app.settings import Settings, get_settings
from audit import checkpoints, export, export_verify
from audit.verify import verify


def add_commands(commands: Any) -> None:
    audit = commands.add_parser(
        "audit", help="verify, checkpoint, export or archive the audit trail"
    )
    actions = audit.add_subparsers(dest="action", required=True)
    check = actions.add_parser("verify", help="walk the hash chain; exit 1 on any finding")
    check.add_argument("--since", help="start at the last checkpoint before this date/time")
    check.add_argument("--export", type=Path, metavar="FILE", help="verify an exported file")
    check.add_argument(
        "--jwks",
        metavar="FILE|URL",
        help="with --export: the keys to trust (the server's published /auth/jwks, its jwks_uri,"
        " saved or fetched); without it, this server's own keys from its database",
    )
    actions.add_parser("checkpoint", help="sign the current chain heads now")
    out = actions.add_parser("export", help="write a date range as NDJSON plus its chain data")
    out.add_argument("--from", dest="start", required=True, help="date or date-time (UTC)")
    out.add_argument("--to", dest="end", required=True, help="date or date-time, exclusive")
    out.add_argument("--out", type=Path, required=True, metavar="FILE.ndjson")
    archive = actions.add_parser(
        "archive", help="move records older than the retention period to a file"
    )
    archive.add_argument("--before", required=True, help="date or date-time (UTC)")
    archive.add_argument("--out", type=Path, required=True, metavar="FILE.ndjson")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.action == "verify" and args.export:
        return _verify_export(args.export, args.jwks, settings)
    run_migrations(settings.database_url)
    engine = create_db_engine(settings.database_url, pool_size=2)
    keys = key_store(engine, settings)
    try:
        if args.action == "verify":
            since = to_us(args.since, "--since") if args.since else None
            result = verify(
                engine, keys, since=since, checkpoint_seconds=settings.audit_checkpoint_seconds
            )
            print(json.dumps(result.summary(), indent=2))
            return 0 if result.ok else 1
        if args.action == "checkpoint":
            taken = checkpoints.take(engine, keys, only_if_changed=False)
            print(json.dumps({"checkpoint": taken}))
            return 0
        if args.action == "export":
            start, end = to_us(args.start, "--from"), to_us(args.end, "--to")
            summary = export.write(engine, keys, start, end, args.out)
            print(json.dumps(summary, indent=2))
            return 0
        summary = export.archive(engine, keys, settings, to_us(args.before, "--before"), args.out)
        print(json.dumps(summary, indent=2))
        return 0
    except (export.ArchiveRefused, export.ExportRefused, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


def _verify_export(path: Path, jwks: str | None, settings: Settings) -> int:
    """Check an export against keys trusted independently of it, never the keys it carries."""
    if jwks is not None:
        try:
            trusted = export_verify.load_jwks(_read(jwks))
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: cannot read the JWKS {jwks}: {exc}", file=sys.stderr)
            return 2
        report = _verified(path, trusted)
    else:
        engine = _existing_database(settings)
        if engine is None:
            print(
                "error: no trusted keys: pass --jwks FILE|URL (the server's published"
                " /auth/jwks, its jwks_uri), or run this where the server's database and master"
                " key are",
                file=sys.stderr,
            )
            return 2
        try:
            report = _verified(path, key_store(engine, settings).genuine_key)
        finally:
            engine.dispose()
    if isinstance(report, str):
        print(f"error: {report}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def _verified(path: Path, trusted: export_verify.TrustedKey) -> dict[str, Any] | str:
    """The verification report; or, when the file or its chain file cannot be read, why.
    A file that reads but is not shaped like an export does not verify (ok false, exit 1)."""
    try:
        return export_verify.verify_file(path, trusted)
    except OSError as exc:
        return f"cannot read the export or its chain file ({path.name}.chain.json): {exc}"
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        problem = f"not a well-formed export: {type(exc).__name__}: {exc}"
        return {"ok": False, "records": 0, "anchored_by_checkpoint": 0, "problems": [problem]}


def _read(source: str) -> str:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as answer:  # noqa: S310 (an http URL)
            return str(answer.read().decode())
    return Path(source).read_text()


def _existing_database(settings: Settings) -> Any:
    """The server's database, if this machine has it and its master key (nothing created)."""
    if not settings.master_key and not settings.master_key_file.exists():
        return None
    if settings.is_sqlite:
        file = settings.database_url.split("///", 1)[-1]
        if not Path(file).exists():
            return None
    return create_db_engine(settings.database_url, pool_size=2)


def key_store(engine: Any, settings: Settings) -> KeyStore:
    return KeyStore(engine, Sealer(load_master_key(settings.master_key, settings.master_key_file)))


class UsageError(Exception):
    """A command-line value the command cannot use (exit 2, like argparse's own errors)."""


def to_us(value: str, flag: str) -> int:
    """`2026-11-21` or an ISO date-time (UTC when no offset) -> epoch microseconds."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not a date or an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)
