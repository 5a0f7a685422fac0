"""POST /hl7/v2: one ER7 message (or batch) in the body, its ACK in the answer.

The HL7 v2 over HTTP way for senders that cannot keep an MLLP connection: a backend-services
bearer token is required (401 without, as on /fhir), and its grant is what the door enforces
for every resource the message writes (a token without the needed `system/` scopes gets an
AR, and nothing is written). The answer is 200 with the ACK whatever the HL7 outcome: the
ACK says it. Unlike MLLP, an ACK is always sent, even when MSH-15/16 ask for none: an HTTP
request must be answered, and the answer costs nothing more.

A body over the message size limit is treated as MLLP treats such a frame: not processed,
its head kept in the message store (status ``truncated``, with its size), and answered with
AR/CR, ERR 104 at MSH^1, when its MSH can be read (413 when it cannot: there is no header
to acknowledge). The body is read in chunks and only its head is held, whatever its size.
"""

from __future__ import annotations

import dataclasses

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.auth.enforcement import unauthorized
from app.context import http_context
from app.errors import FhirError, UnsupportedMediaType
from hl7_adapters.mllp import HEAD_BYTES, oversize_error, readable_head

ER7_TYPE = "x-application/hl7-v2+er7"
ACCEPTED_TYPES = frozenset({ER7_TYPE, "application/hl7-v2", "application/hl7-v2+er7", "text/plain"})


def routes() -> list[Route]:
    return [Route("/hl7/v2", hl7_endpoint, methods=["POST"], include_in_schema=False)]


async def hl7_endpoint(request: Request) -> Response:
    ctx = http_context(request, channel="hl7")
    try:
        grant = request.app.state.auth.authenticate(request.headers.get("authorization"))
        if grant is None:
            raise unauthorized("a bearer token is required")
        ctx = dataclasses.replace(ctx, client_id=grant.client_id, user=grant.fhir_user, grant=grant)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ACCEPTED_TYPES:
            raise UnsupportedMediaType(
                f"send the ER7 message as {ER7_TYPE}, application/hl7-v2 or text/plain"
            )
        limit = request.app.state.settings.mllp_max_message_bytes
        body, size = await _body_within(request, limit)
        ingest = request.app.state.hl7.ingest
        if size > limit:
            ack = await run_in_threadpool(
                ingest.refuse_oversize, body, size, oversize_error(size, limit),
                channel="http", peer=ctx.remote_addr, ctx=lambda _msg, c=ctx: c,
            )  # fmt: skip
            if not readable_head(body):
                raise FhirError("HL7 message too large, and no MSH to acknowledge", status=413)
            return Response(content=ack, media_type=ER7_TYPE)
    except FhirError as exc:  # refused before any message was processed: audited all the same
        await run_in_threadpool(request.app.state.audit.record_request_failure, ctx, exc)
        raise
    ack = await run_in_threadpool(
        ingest.handle, body, channel="http", peer=ctx.remote_addr, ctx=ctx, always_ack=True
    )
    return Response(content=ack, media_type=ER7_TYPE)


async def _body_within(request: Request, limit: int) -> tuple[bytes, int]:
    """(the body, its size); for a body over `limit` only its head (as an MLLP frame's:
    the first `limit` bytes, at most HEAD_BYTES), the rest counted and dropped."""
    chunks: list[bytes] = []
    held = size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if held <= limit:
            chunks.append(chunk)
            held += len(chunk)
    body = b"".join(chunks)
    if size > limit:
        body = body[: min(limit, HEAD_BYTES)]
    return body, size
