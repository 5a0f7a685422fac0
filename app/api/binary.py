"""Binary in its native form on the REST API (R4 binary.html): reads that ask for no FHIR
format get the content itself, and writes of content that is not a Binary resource store it
as the data of one. Only the HTTP representation changes: the request still goes through the
router and the one door as a Binary resource (authorization, audit, validation).

The security context travels in the `X-Security-Context` header: on a native write it
becomes `Binary.securityContext`, on a native read the server returns it.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.responses import Response

from app.api import formats
from app.errors import NotAcceptable
from app.fhir import jsonio
from app.fhir.exchange import FhirResponse

SECURITY_CONTEXT = "X-Security-Context"


def is_read(path: str) -> bool:
    """GET Binary/id or Binary/id/_history/vid."""
    parts = path.strip("/").split("/")
    return parts[0] == "Binary" and (
        len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history")
    )


def is_write(method: str, path: str) -> bool:
    """POST Binary or PUT Binary/id (not a conditional write: its body is a resource)."""
    parts = path.strip("/").split("/")
    return parts[0] == "Binary" and (
        (method == "POST" and len(parts) == 1) or (method == "PUT" and len(parts) == 2)
    )


def is_native_type(content_type: str | None) -> bool:
    """A body that is not in a FHIR format (nor a JSON Patch or a form) is raw content."""
    return content_type is not None and not formats.is_fhir_body_type(content_type)


def as_resource(
    path: str, content_type: str, raw: bytes, security_context: str | None
) -> dict[str, Any]:
    """Raw content as the Binary resource it is stored as ("the data is accepted as is").
    The content type is kept as sent (its charset, if any, belongs to the content)."""
    binary: dict[str, Any] = {"resourceType": "Binary"}
    parts = path.strip("/").split("/")
    if len(parts) == 2:  # PUT Binary/id: the body's id must be the URL's
        binary["id"] = parts[1]
    binary["contentType"] = content_type.strip()
    if security_context:
        binary["securityContext"] = {"reference": security_context.strip()}
    if raw:
        binary["data"] = base64.b64encode(raw).decode("ascii")
    return binary


def is_binary_resource(body: Any) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "Binary"


def render_native(response: FhirResponse, ranges: list[str], *, head: bool) -> Response:
    """A Binary as its own content type and bytes; 406 if that type is not one asked for."""
    binary = jsonio.materialize(response.body)
    content_type = str(binary.get("contentType", ""))
    if not formats.media_matches(content_type, ranges):
        raise NotAcceptable(
            f"this Binary is {content_type or 'of no content type'}; "
            f"none of the accepted types ({', '.join(ranges)}) matches"
        )
    content = base64.b64decode(binary.get("data") or "")
    # Set as stored: given as media_type, Starlette would add a charset to text/* types.
    headers = {**response.headers, "Content-Type": content_type}
    context = binary.get("securityContext")
    if isinstance(context, dict) and isinstance(context.get("reference"), str):
        headers[SECURITY_CONTEXT] = context["reference"]
    if head:
        headers["Content-Length"] = str(len(content))
        return Response(status_code=200, headers=headers)
    return Response(content=content, status_code=200, headers=headers)
