"""The FHIR API's short way in: /fhir requests go straight to their endpoint.

FHIR traffic is most of what the server does, and per request the framework around the
endpoint (FastAPI's telemetry and body-limit layers, Starlette's error, CORS and exception
middleware, matching the path against every route) cost about as much Python as a read's
own work in the door (py-spy, BENCHMARKS.md session 7). The endpoint needs none of it: it
does its own routing (app.fhir.router) and answers every error as an OperationOutcome
itself. So :class:`MediSentinelApp` hands a /fhir request directly to it, with the same
Request object and the same error rendering the app's handlers would give.

Requests that need a layer still take the full way: a request with an `Origin` header (CORS:
its answer needs CORSMiddleware's headers, and a preflight is answered there), anything
outside /fhir, and the few routes under /fhir that are not the FHIR endpoint (SMART
discovery: /fhir/.well-known/...).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.api import fhir as fhir_api
from app.errors import FhirError, ServerError

log = logging.getLogger(__name__)


class MediSentinelApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_short_way(scope):
            await super().__call__(scope, receive, send)
            return
        path: str = scope["path"]
        scope["app"] = self
        scope["path_params"] = {"path": path[len("/fhir/") :]}
        request = Request(scope, receive)
        try:
            response = await fhir_api.fhir_endpoint(request)
        except FhirError as exc:
            response = fhir_api.error_response(exc, request)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, path)
            response = fhir_api.error_response(ServerError("internal server error"), request)
        # As CORSMiddleware marks every answer to a request without Origin: a cache must not
        # hand it to a browser app, whose request would get the CORS headers.
        response.headers["Vary"] = ", ".join([*response.headers.getlist("Vary"), "Origin"])
        await response(scope, receive, send)

    def _is_short_way(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if not (path == "/fhir" or path.startswith("/fhir/")) or scope.get("root_path"):
            return False
        if scope["method"] not in fhir_api.FHIR_METHODS:
            return False  # OPTIONS and the like: the full way answers them (405 or CORS)
        for name, _ in scope["headers"]:
            if name == b"origin":
                return False
        exact, patterns = self._other_fhir_routes()
        return path not in exact and not any(r.matches(scope)[0] != Match.NONE for r in patterns)

    def _other_fhir_routes(self) -> tuple[frozenset[str], tuple[Route, ...]]:
        """Routes under /fhir other than the FHIR endpoint (looked up once): the paths of
        those without parameters (a set lookup per request), and the others."""
        found: tuple[frozenset[str], tuple[Route, ...]] | None = getattr(
            self.state, "other_fhir_routes", None
        )
        if found is None:
            others = [
                route
                for route in self.router.routes
                if isinstance(route, Route)
                and route.path.startswith("/fhir/")
                and route.endpoint is not fhir_api.fhir_endpoint
            ]
            found = (
                frozenset(r.path for r in others if "{" not in r.path),
                tuple(r for r in others if "{" in r.path),
            )
            self.state.other_fhir_routes = found
        return found
