"""Bundle entries in and out: an entry's request as a FhirRequest (its request elements as
the HTTP headers they stand for, a PATCH's Binary as its JSON Patch), and a FhirResponse or
an error as a response entry. Shared by batch and transaction (app/fhir/transaction.py)."""

from __future__ import annotations

import base64
from contextlib import suppress
from http import HTTPStatus
from typing import Any

from app.errors import FhirError, InvalidRequest
from app.fhir import jsonio, preconditions, shaping
from app.fhir.exchange import FhirRequest, FhirResponse, RawJson, write_outcome
from app.fhir.instants import parse_instant, to_http_date, to_instant
from app.fhir.operations import is_operation
from app.fhir.validation import is_valid_id

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROCESSING_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
ENTRY_HEADERS = {
    "ifMatch": "if-match",
    "ifNoneExist": "if-none-exist",
    "ifNoneMatch": "if-none-match",
    "ifModifiedSince": "if-modified-since",
}


def entry_headers(req: dict[str, Any]) -> dict[str, str]:
    """The HTTP headers an entry's request elements stand for. ifModifiedSince is a FHIR
    instant there and an HTTP date in the header; one that is not an instant is passed as
    given (a lenient client's HTTP date still works, garbage is ignored as in the header)."""
    headers = {h: str(req[k]) for k, h in ENTRY_HEADERS.items() if req.get(k)}
    since = headers.get("if-modified-since")
    if since is not None:
        with suppress(ValueError, OverflowError, OSError):
            headers["if-modified-since"] = to_http_date(parse_instant(since))
    return headers


def entry_request(index: int, entry: Any, base_url: str) -> FhirRequest:
    path = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{path} must be an object", expression=path)
    req = entry.get("request")
    if not isinstance(req, dict) or not req.get("method") or not isinstance(req.get("url"), str):
        raise InvalidRequest(f"{path}.request needs method and url", expression=f"{path}.request")
    method = str(req["method"]).upper()
    if method not in PROCESSING_ORDER:
        raise InvalidRequest(
            f"{path}.request.method '{method}' is not supported",
            expression=f"{path}.request.method",
        )
    url = _relative_url(path, req["url"], base_url)
    headers = entry_headers(req)
    try:  # checked now, at its element: a transaction refuses it before anything runs
        preconditions.check_if_match_syntax(headers.get("if-match"))
    except InvalidRequest as exc:
        where = f"{path}.request.ifMatch"
        message = exc.message.removeprefix("If-Match: ")
        raise InvalidRequest(f"{where}: {message}", expression=where) from exc
    body = entry.get("resource")
    if method == "PATCH":
        body = _patch_body(path, body)
    elif method in ("POST", "PUT") and not isinstance(body, dict):
        raise InvalidRequest(
            f"{path}.resource is required for {method}", expression=f"{path}.resource"
        )
    head = method == "HEAD"  # GET's answer without the content (RFC 9110 9.3.2)
    request = FhirRequest.from_url("GET" if head else method, url, headers=headers, body=body)
    request.head = head
    if request.method == "GET":  # checked now: response_entry shapes after the commit
        try:
            shaping.check_summary(dict(request.query).get("_summary"))
        except InvalidRequest as exc:
            where = f"{path}.request.url"
            raise InvalidRequest(f"{where}: {exc.message}", expression=where) from exc
    if method == "PUT" and len(request.segments) == 2 and not is_valid_id(request.segments[1]):
        raise InvalidRequest(
            f"{path}.request.url has an invalid id", expression=f"{path}.request.url"
        )
    return request


def _relative_url(path: str, url: str, base_url: str) -> str:
    """request.url relative to this server's base. An absolute URL elsewhere names another
    server, which this one cannot act for: it was cut into path segments and answered as an
    unknown resource type (404 'fhir')."""
    if url == base_url or url.startswith((base_url + "/", base_url + "?")):
        return url[len(base_url) :].lstrip("/")
    if "://" in url.split("?", 1)[0]:
        raise InvalidRequest(
            f"{path}.request.url '{url}' is not on this server ({base_url})",
            expression=f"{path}.request.url",
        )
    return url


def _patch_body(path: str, resource: Any) -> Any:
    """A transaction PATCH carries its JSON Patch in a Binary resource (R4)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            return jsonio.loads(base64.b64decode(resource.get("data", "")))
        except (ValueError, jsonio.FhirJsonError) as exc:
            raise InvalidRequest(
                f"{path}.resource.data is not a JSON Patch", expression=f"{path}.resource"
            ) from exc
    raise InvalidRequest(
        f"{path}: PATCH entries need a Binary resource holding a JSON Patch",
        expression=f"{path}.resource",
    )


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def response_entry(
    response: FhirResponse, request: FhirRequest, preference: str, base_url: str
) -> dict[str, Any]:
    """An entry of the response Bundle. `Prefer: return=minimal` drops a write's resource;
    return=OperationOutcome puts an outcome in its place, in `response.outcome` (R4
    Bundle.entry.response.outcome: "hints and warnings produced as part of processing this
    entry"), where an OperationOutcome the interaction answered with goes too (a conditional
    delete that matched nothing): `resource` is the resource the entry is about. Reads keep
    their results either way, and so does an operation ($validate's OperationOutcome is its
    answer); a HEAD has none."""
    entry: dict[str, Any] = {}
    method, body = request.method, response.body
    if method == "GET":  # _summary / _elements, as for the same GET sent alone
        body = shaping.shape_response(body, request)
    outcome = write_outcome(method, response) if preference == "OperationOutcome" else None
    # an OperationOutcome answering an operation ($validate) is its result: it stays resource
    answer = isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
    if answer and not is_operation(request.path):
        outcome, body = outcome or body, None
    written = method in WRITES and isinstance(body, RawJson)
    if body is not None and not request.head and not (written and preference != "representation"):
        entry["resource"] = body
    result: dict[str, Any] = {"status": _status_line(response.status)}
    version = response.version
    if version is not None and not version.deleted:
        result["location"] = f"{version.resource_type}/{version.id}/_history/{version.version_id}"
    if "ETag" in response.headers:
        result["etag"] = response.headers["ETag"]
    if version is not None:
        result["lastModified"] = to_instant(version.last_updated)
    if outcome is not None:
        result["outcome"] = outcome
    entry["response"] = result
    if version is not None and not version.deleted:
        entry["fullUrl"] = f"{base_url}/{version.resource_type}/{version.id}"
        entry = {"fullUrl": entry.pop("fullUrl"), **entry}
    return entry


def error_entry(error: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status_line(error.status), "outcome": error.outcome()}}
