"""Reading a request body without holding more of it than the server accepts.

Starlette's `request.body()` reads everything before anyone can look at the size, so a
limit checked afterwards (413) came after a client had made the process hold gigabytes. Here
a declared `Content-Length` over the limit is refused before reading, and a body without one
(chunked) is refused as soon as what arrived passes it.
"""

from __future__ import annotations

from starlette.requests import Request

from app.digits import whole_number
from app.errors import FhirError


class BodyTooLarge(FhirError):
    status = 413
    issue_code = "too-long"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body too large (the limit is {limit} bytes)")


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge once it is known to pass `limit` bytes."""
    declared = whole_number(request.headers.get("content-length", ""), limit + 1)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette's own cache: a later `stream()` or `body()` of this request gets it again
    # (the token endpoint reads its form in more than one place).
    request._body = body
    return body
