"""The app with its audit hook swapped for a no-op: for measuring what auditing costs
(bench/run_core.py --no-audit). Only the benchmark can start it; the product has no switch
that turns auditing off.

    python -m bench.noaudit --host H --port P --workers N   # served as `medisentinel serve` does
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from app.fhir.hooks import Hook
from app.main import create_app as create_audited_app
from audit.hook import AuditHook


def create_app() -> FastAPI:
    app = create_audited_app()
    hooks = app.state.pipeline.hooks
    hooks[:] = [Hook() if isinstance(h, AuditHook) else h for h in hooks]
    return app


def main() -> None:
    from app.serving import serve  # each worker on a socket of its own, as the product

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    serve(app="bench.noaudit:create_app", factory=True, host=args.host, port=args.port,
          workers=args.workers, log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
