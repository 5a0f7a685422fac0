"""create_app(settings): wires engine, hook pipeline, service and router into a FastAPI app."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from app.api import fhir as fhir_api
from app.api.fast_path import MediSentinelApp
from app.auth.enforcement import SmartAccessHook
from app.auth.keys import KeyStore
from app.auth.revocations import RevocationWatch
from app.auth.router import routes as auth_routes
from app.auth.server import AuthServer
from app.db import (
    GROWN_CHECK_SECONDS,
    analyze_grown_tables,
    create_db_engine,
    refresh_statistics,
)
from app.errors import FhirError, InvalidRequest, MethodNotAllowed, NotFound, ServerError
from app.fhir.hooks import OutboxHook, Pipeline
from app.fhir.router import FhirRouter
from app.fhir.service import FhirService
from app.settings import Settings, get_settings
from audit import checkpoints as audit_checkpoints
from audit import indexing as audit_indexing
from audit.hook import AuditCatchUpHook, AuditHook
from audit.trail import AuditTrail
from audit.web import routes as audit_web_routes
from hl7_adapters import feeds as hl7_feeds

log = logging.getLogger("medisentinel")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = create_db_engine(settings.database_url, pool_size=settings.db_pool_size)
    auth = AuthServer(engine, settings)
    trail = AuditTrail(engine, settings.fhir_base_url)
    auth.events = trail.record_auth
    # Audit first: an interaction is noted before authorization may refuse it (a refusal is
    # recorded too); reads of the audit trail first make its recent records searchable
    # (AuditCatchUpHook); then authorization: nothing is read or written for a caller it refuses.
    audit_hook = AuditHook(trail)
    # A refused resource is shown to the audit hook, so the refusal names its patients.
    smart = SmartAccessHook(auth.tokens, witness=audit_hook.on_access)
    pipeline = Pipeline([audit_hook, AuditCatchUpHook(engine), smart, OutboxHook()])
    service = FhirService(engine, pipeline)
    copier = audit_indexing.BackgroundCopier(
        engine, lambda: service.last_unit_started, settings.audit_index_max_lag_seconds
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(auth.keys.signing_key)  # the first start creates it
        watch = _watch_revocations(auth, settings)
        # Planner statistics now and then (SQLite: all of them; PostgreSQL: tables that grew
        # since), and signed audit heads (only when records were added): a failed round only
        # delays the next.
        background = [
            asyncio.create_task(_every(600, refresh_statistics, engine)),
            asyncio.create_task(_every(GROWN_CHECK_SECONDS, analyze_grown_tables, engine)),
            asyncio.create_task(_every(settings.audit_index_seconds, copier.round)),
            # From the start: records a previous run left unsigned (a crash) are covered at
            # once, so verify can expect every record older than two intervals to be covered.
            asyncio.create_task(
                _every(settings.audit_checkpoint_seconds, audit_checkpoints.take, engine, auth.keys)
            ),
        ]  # fmt: skip
        await feeds.start()  # the MLLP listener, when enabled
        _freeze_startup_objects()
        yield
        copier.stopping.set()  # a round in progress ends after its current batch
        await feeds.stop()
        for task in background:
            task.cancel()
        await _final_checkpoint(engine, auth.keys)
        if watch is not None:
            await asyncio.to_thread(watch.stop)
        if trail.async_commit is not None:
            await trail.async_commit.close()
        trail.group_commit.close()
        engine.dispose()

    app = MediSentinelApp(title="MediSentinel", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.pipeline = pipeline
    app.state.service = service
    app.state.auth = auth
    app.state.audit = trail
    app.state.fhir_router = FhirRouter(
        service, default_count=settings.default_page_size, max_count=settings.max_page_size
    )
    app.router.routes.extend(auth_routes())  # before /fhir/{path}: .well-known lives there
    app.router.routes.extend(audit_web_routes())  # the compliance console, /audit/
    app.router.routes.extend(fhir_api.routes())
    feeds = hl7_feeds.install(app)  # POST /hl7/v2; the lifespan runs the MLLP listener
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
        allow_headers=["*"],
        expose_headers=["Location", "Content-Location", "ETag", "Last-Modified"],
        max_age=600,
    )
    _install_error_handlers(app)
    return app


def _watch_revocations(auth: AuthServer, settings: Settings) -> RevocationWatch | None:
    """PostgreSQL: hear of token revocations instead of looking each request's token up."""
    if not settings.database_url.startswith("postgresql"):
        return None
    watch = RevocationWatch(settings.database_url, settings.longest_access_token_seconds)
    watch.start()
    auth.tokens.watch = watch
    return watch


_frozen = False


def _freeze_startup_objects() -> None:
    """What a process loads to serve (search parameter and value set tables, models, ...)
    lives as long as it does: out of the cyclic collector's reach, a full collection under
    load walks only what requests left. A worker tracked ~190,000 objects after warming up,
    and each full collection took ~70 ms of its CPU (a latency spike for every request in
    flight). Once per process: objects frozen are never collected, and tests start many apps."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


async def _final_checkpoint(engine: Engine, keys: KeyStore) -> None:
    """Sign the heads once more at shutdown: the last records are covered at once."""
    try:
        await asyncio.to_thread(audit_checkpoints.take, engine, keys)
    except Exception:
        log.warning("the audit checkpoint at shutdown failed", exc_info=True)


async def _every(
    seconds: float, work: Callable[..., object], *args: object, first_now: bool = True
) -> None:
    """Run `work(*args)` on a worker thread every `seconds`, logging (not raising) failures."""
    if not first_now:
        await asyncio.sleep(seconds)
    while True:
        try:
            await asyncio.to_thread(work, *args)
        except Exception:  # a busy or briefly unreachable database only delays the next round
            log.warning("background task %s failed", work.__qualname__, exc_info=True)
        await asyncio.sleep(seconds)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, anywhere, leaves as an OperationOutcome with the right status."""

    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        return fhir_api.error_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error: FhirError
        if exc.status_code == 404:
            error = NotFound(f"no endpoint at {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(
                f"{request.method} is not allowed at {request.url.path}",
                headers=dict(exc.headers or {}),  # Allow (for /fhir: set by error_response)
            )
        else:
            error = FhirError(str(exc.detail), status=exc.status_code)
        return fhir_api.error_response(error, request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return fhir_api.error_response(InvalidRequest(str(exc.errors()[:3])), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return fhir_api.error_response(ServerError("internal server error"), request)
