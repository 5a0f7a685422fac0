"""The app with its audit hook swapped for a no-op: for measuring what auditing costs
(bench/run_core.py --no-audit). Only the benchmark can start it; the product has no switch
that turns auditing off."""

from __future__ import annotations

from fastapi import FastAPI

from app.fhir.hooks import Hook
from app.main import create_app as create_audited_app
from audit.hook import AuditHook


def create_app() -> FastAPI:
    app = create_audited_app()
    hooks = app.state.pipeline.hooks
    hooks[:] = [Hook() if isinstance(h, AuditHook) else h for h in hooks]
    return app
