"""HTTP face of the FHIR API: turn a Starlette request into a FhirRequest and render the answer.

Everything FHIR-specific happens in app.fhir.router; this module only does HTTP: headers,
content negotiation, Prefer, _summary/_elements on single resources, _pretty.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import binary, formats
from app.api.bodies import read_limited
from app.api.worker_threads import run_in_worker, run_instance_read
from app.auth.enforcement import token_required
from app.context import RequestContext, http_context
from app.errors import (
    FhirError,
    InvalidRequest,
    MethodNotAllowed,
    ServerError,
)
from app.fhir import shaping
from app.fhir.exchange import (
    FhirRequest,
    FhirResponse,
    return_preference,
    write_outcome,
)
from app.fhir.operations import is_operation
from app.fhir.router import FhirRouter

log = logging.getLogger(__name__)

# Parameters about the HTTP representation, never part of FHIR search criteria.
HTTP_ONLY_PARAMS = {"_format", "_pretty"}
PASSED_HEADERS = ("if-match", "if-none-exist", "if-none-match", "if-modified-since", "prefer")
OPEN_PATHS = {"metadata"}  # the CapabilityStatement is public (SMART discovery needs it)
FHIR_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


def routes() -> list[Route]:
    return [
        Route("/fhir", fhir_endpoint, methods=FHIR_METHODS, include_in_schema=False),
        Route("/fhir/{path:path}", fhir_endpoint, methods=FHIR_METHODS, include_in_schema=False),
    ]


async def fhir_endpoint(request: Request) -> Response:
    """Every FHIR URL. A plain Starlette endpoint: FastAPI's dependency machinery would add
    per-request work for nothing, since FHIR routing happens in app.fhir.router."""
    path = request.path_params.get("path", "")
    try:
        ctx = _context(request, path)  # first: no valid token, no further processing
    except FhirError as exc:
        await _audit_refusal(request, http_context(request), exc)
        raise
    try:
        return await _serve(request, ctx, path)
    except FhirError as exc:
        if not ctx.trail.failure_recorded:
            await _audit_refusal(request, ctx, exc)
        raise


async def _audit_refusal(request: Request, ctx: RequestContext, error: FhirError) -> None:
    """A request refused outside the door's interactions (no token, unparseable body):
    recorded all the same. If even that cannot be written the answer becomes a 500."""
    trail = request.app.state.audit
    await run_in_worker(trail.record_request_failure, ctx, error)


async def _serve(request: Request, ctx: RequestContext, path: str) -> Response:
    query = request.query_params
    native = None
    if request.method in ("GET", "HEAD") and binary.is_read(path):
        native = formats.native_binary_ranges(request.headers.get("accept"), query.get("_format"))
    fmt = (
        "json"
        if native
        else formats.response_format(request.headers.get("accept"), query.get("_format"))
    )
    pretty = query.get("_pretty") == "true"
    settings = request.app.state.settings
    raw = await read_limited(request, settings.max_body_bytes)
    method = "GET" if request.method == "HEAD" else request.method
    # Before anything runs: found bad after a write, it would answer 400 for a committed write.
    shaping.check_summary(query.get("_summary"))
    if raw and _is_post_search(method, path):
        formats.check_search_form(request.headers.get("content-type"))
    elif raw and not binary.is_write(method, path):  # a Binary may hold a form as content
        formats.refuse_form(request.headers.get("content-type"))
    fhir_request = FhirRequest(
        method=method,
        path=path.strip("/"),
        query=[(k, v) for k, v in query.multi_items() if k not in HTTP_ONLY_PARAMS],
        headers={h: request.headers[h] for h in PASSED_HEADERS if h in request.headers},
        body=_body(request, method, path, raw),
    )
    if method in ("POST", "PUT") and fhir_request.body is None:
        # POST _search and operations may have no body ($validate mode=delete, $everything)
        if not (method == "POST" and (path.endswith("_search") or is_operation(fhir_request.path))):
            raise InvalidRequest(f"{method} needs a resource in the body")
    fhir_router: FhirRouter = request.app.state.fhir_router
    trail = request.app.state.audit
    ctx.trail.may_defer = trail.async_commit is not None  # reads' records: committed below
    # Reads leave records for the batch writer, which waits a moment for those in service.
    expected = _reads(fhir_request) and trail.expect_deferred()
    try:
        run = run_instance_read if is_instance_read(fhir_request) else run_in_worker
        response = await run(fhir_router.dispatch, ctx, fhir_request)
    except FhirError:
        raise
    except Exception as exc:
        # Answer here rather than in an app-level handler: Starlette re-raises those after
        # responding, which drops the client's keep-alive connection.
        log.exception("unhandled error on %s /fhir/%s", request.method, path)
        raise ServerError(f"internal server error (request {ctx.request_id})") from exc
    finally:
        # Before anything is answered: if they cannot be committed, the answer is a 500.
        await trail.commit_deferred(ctx, expected=expected)
    if native and response.status == 200:
        return binary.render_native(response, native, head=request.method == "HEAD")
    return _render(response, fhir_request, fmt, pretty, head=request.method == "HEAD")


def _body(request: Request, method: str, path: str, raw: bytes) -> Any:
    """The request body as JSON values. A write to Binary of anything but a Binary resource
    is raw content (R4 binary.html: "the data is accepted as is ... including when the
    content type is application/fhir+xml or application/fhir+json, except for the special
    case where the content is actually a Binary resource")."""
    content_type = request.headers.get("content-type")
    context = request.headers.get(binary.SECURITY_CONTEXT)
    if not (raw and binary.is_write(method, path)):
        return formats.parse_body(content_type, raw, method=method)
    if content_type is not None and binary.is_native_type(content_type):
        return binary.as_resource(path, content_type, raw, context)
    parsed = formats.parse_body(content_type, raw, method=method)
    if binary.is_binary_resource(parsed) or content_type is None:  # no type: FHIR JSON
        return parsed
    return binary.as_resource(path, content_type, raw, context)


def _reads(fhir_request: FhirRequest) -> bool:
    return fhir_request.method == "GET" or fhir_request.path.endswith("_search")


def is_instance_read(fhir_request: FhirRequest) -> bool:
    """GET Type/id: one resource by id (not `Type/_history`, `Type/$operation`, ...)."""
    if fhir_request.method != "GET":
        return False
    rtype, slash, rid = fhir_request.path.partition("/")
    if not (slash and rtype and rid) or "/" in rid:
        return False
    return rtype[0] not in "_$" and rid[0] not in "_$"


def _context(request: Request, path: str) -> RequestContext:
    """Who is asking: the bearer token is checked here (signature, audience, expiry); the
    door checks that it is still live and that its scopes allow each interaction."""
    grant = request.app.state.auth.authenticate(request.headers.get("authorization"))
    if grant is None and path.strip("/") not in OPEN_PATHS:
        raise token_required()
    return http_context(request, grant)


def _render(
    response: FhirResponse, request: FhirRequest, fmt: str, pretty: bool, *, head: bool
) -> Response:
    body = _apply_prefer(response, request)
    body = shaping.shape_response(body, request)
    headers = dict(response.headers)
    if body is None:
        return Response(status_code=response.status, headers=headers)
    content, media_type = formats.render(body, fmt, pretty=pretty)
    if head:  # GET's headers, its length included, without the content (RFC 9110 9.3.2)
        headers["Content-Length"] = str(len(content))
        return Response(status_code=response.status, headers=headers, media_type=media_type)
    return Response(
        content=content, status_code=response.status, headers=headers, media_type=media_type
    )


def _apply_prefer(response: FhirResponse, request: FhirRequest) -> Any:
    if request.method not in ("POST", "PUT", "PATCH") or response.version is None:
        return response.body
    preference = return_preference(request.header("prefer"))
    if preference == "minimal":
        return None
    if preference == "OperationOutcome":
        return write_outcome(request.method, response)
    return response.body


def _is_post_search(method: str, path: str) -> bool:
    return method == "POST" and path.strip("/").rsplit("/", 1)[-1] == "_search"


def error_response(error: FhirError, request: Request) -> Response:
    try:
        fmt = formats.response_format(
            request.headers.get("accept"), request.query_params.get("_format")
        )
    except FhirError:
        fmt = "json"
    try:
        content, media_type = formats.render(error.outcome(), fmt, pretty=False)
    except Exception:  # never let rendering an error raise a second one
        content, media_type = _plain_json(error.outcome()), formats.JSON_TYPE
    headers = dict(error.headers)
    path = request.url.path
    if error.status == 405 and (path == "/fhir" or path.startswith("/fhir/")):
        # RFC 9110 15.5.6: a 405 MUST say what the target does allow (the refusal may know
        # better than the URL: a read-only type).
        allow = error.allow if isinstance(error, MethodNotAllowed) else None
        headers["Allow"] = allow or allowed_methods(
            path[len("/fhir") :], has_query=bool(request.url.query)
        )
    return Response(
        content=content, status_code=error.status, headers=headers, media_type=media_type
    )


def _plain_json(outcome: dict[str, Any]) -> bytes:
    """The standard library's JSON, ASCII only: it writes anything a message may quote (a
    lone surrogate that orjson refuses, say) as an escape."""
    return json.dumps(outcome, ensure_ascii=True, default=str).encode()


def allowed_methods(path: str, *, has_query: bool) -> str:
    """The methods the FHIR URL `path` (below /fhir) answers, for an Allow header."""
    segments = [s for s in path.split("/") if s]
    if not segments:
        return "GET, HEAD, POST"  # system search; batch and transaction
    if segments[-1] == "_search":
        return "POST"
    if segments[0] in ("metadata", "_history") or "_history" in segments:
        return "GET, HEAD"
    if len(segments) == 1:  # a type: conditional writes need criteria
        return "GET, HEAD, POST, PUT, PATCH, DELETE" if has_query else "GET, HEAD, POST"
    if len(segments) == 3:  # a compartment search (Patient/123/Observation) is read-only
        return "GET, HEAD"
    return "GET, HEAD, PUT, PATCH, DELETE"
