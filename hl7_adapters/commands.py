"""`medisentinel mllp` (the MLLP listener alone) and `medisentinel hl7 errors|reprocess`.

Local operator commands, like `medisentinel audit`: they migrate first, work on the database
directly, print JSON, and print `error: ...` to stderr with exit status 2 on refusal.

`hl7 reprocess` runs stored messages again after a mapping fix, through the same pipeline and
door as a live message (as the feed identity `hl7-reprocess:<MSH-3>`); each message's row
records the new outcome (status, error, produced resources, reprocess count) and the run is
audited. It exits 1 when a message is still not accepted. With `--accepted` it re-applies
accepted messages instead (one id, or those received `--since` [`--until`]), after a mapping
improvement: upserts update what the first run wrote, nothing is duplicated (a message that
would create a resource again is left alone), and it exits 1 when one was not re-applied.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

from app.fhir.instants import parse_instant, to_instant
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

COMMANDS = frozenset({"mllp", "hl7"})


def add_commands(commands: Any) -> None:
    mllp = commands.add_parser("mllp", help="run the HL7 v2 MLLP listener on its own")
    mllp.add_argument("--host", help="bind address (MEDISENTINEL_MLLP_HOST)")
    mllp.add_argument("--port", type=int, help="port (MEDISENTINEL_MLLP_PORT)")
    hl7 = commands.add_parser("hl7", help="the HL7 v2 message store: error queue, reprocess")
    actions = hl7.add_subparsers(dest="action", required=True)
    errors = actions.add_parser("errors", help="list messages in error (oldest first)")
    errors.add_argument("--limit", type=int, default=100)
    again = actions.add_parser("reprocess", help="run stored messages again (after a fix)")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="a message id (from `hl7 errors`)")
    which.add_argument("--errors", action="store_true", help="every message in the queue")
    which.add_argument("--since", help="accepted messages received from then (with --accepted)")
    again.add_argument("--until", help="... and before then (a date or instant, exclusive)")
    again.add_argument(
        "--accepted",
        action="store_true",
        help="re-apply accepted messages (an id, or --since) with today's mapping",
    )
    again.add_argument(
        "--limit", type=int, default=1000, help="at most this many (--errors/--since)"
    )


def run(args: argparse.Namespace) -> int:
    from app.db import run_migrations

    settings = get_settings()
    run_migrations(settings.database_url)
    if args.command == "mllp":
        return _serve_mllp(settings, args.host, args.port)
    if args.action == "errors":
        return _errors(settings, args.limit)
    if args.accepted and args.errors:
        return _refuse("--accepted re-applies accepted messages; --errors takes the error queue")
    if (args.since or args.until) and not args.accepted:
        return _refuse("--since/--until select accepted messages: add --accepted")
    if args.until and not args.since:
        return _refuse("--until needs --since")
    try:
        window = [parse_instant(t) if t else None for t in (args.since, args.until)]
    except ValueError as exc:
        return _refuse(f"--since/--until: not a date or instant ({exc})")
    return _reprocess(settings, args, window[0], window[1])


def _refuse(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 2


def _app(settings: Settings) -> FastAPI:
    """The server's own wiring (door, hooks, audit, feeds): the CLI makes no twin of it."""
    from app.main import create_app

    return create_app(settings)


def _errors(settings: Settings, limit: int) -> int:
    from app.db import create_db_engine
    from hl7_adapters import store

    engine = create_db_engine(settings.database_url, pool_size=1)
    try:
        rows = [_printable(store.summary(r)) for r in store.error_queue(engine, limit=limit)]
    finally:
        engine.dispose()
    print(json.dumps(rows, indent=2))
    return 0


def _reprocess(
    settings: Settings, args: argparse.Namespace, since: int | None, until: int | None
) -> int:
    from hl7_adapters import store
    from hl7_adapters.feeds import feed_identity

    app = _app(settings)
    ingest = app.state.hl7.ingest
    identity = feed_identity(
        "hl7-reprocess",
        address=None,
        base_url=settings.fhir_base_url,
        request_line="CLI hl7 reprocess" + (" --accepted" if args.accepted else ""),
    )
    try:
        if args.errors:
            ids = [r.id for r in store.error_queue(app.state.engine, limit=args.limit)]
        elif since is not None:
            found = store.accepted_between(app.state.engine, since, until, limit=args.limit)
            ids = [r.id for r in found]
        else:
            ids = [args.id]
        results = []
        for one in ids:
            try:
                results.append(_printable(ingest.reprocess(one, identity, accepted=args.accepted)))
            except (LookupError, ValueError) as exc:
                return _refuse(str(exc))
    finally:
        app.state.engine.dispose()
    print(json.dumps(results, indent=2))
    if args.accepted:
        return 0 if all(r["reapplied"] for r in results) else 1
    return 0 if all(r["status"] == "accepted" for r in results) else 1


def _printable(summary: dict[str, Any]) -> dict[str, Any]:
    return {**summary, "received": to_instant(summary["received"])}


def _serve_mllp(settings: Settings, host: str | None, port: int | None) -> int:
    # One process: the port is bound exclusively (no SO_REUSEPORT even when
    # MEDISENTINEL_WORKERS is set for `serve`), so a port already served exits 2.
    overrides: dict[str, Any] = {"mllp_enabled": True, "workers": 1}
    if host:
        overrides["mllp_host"] = host
    if port is not None:
        overrides["mllp_port"] = port
    app = _app(settings.model_copy(update=overrides))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_listen(app))
    return 0


async def _listen(app: FastAPI) -> int:
    """The app's lifespan without HTTP: background tasks and the listener, until a signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with app.router.lifespan_context(app):
        feeds = app.state.hl7
        if feeds.listener is None:
            print("error: the MLLP listener could not start (see the log)", file=sys.stderr)
            return 2
        s = feeds.settings
        print(f"MLLP listening on {s.mllp_host}:{feeds.mllp_port}", flush=True)
        await stop.wait()
    return 0
