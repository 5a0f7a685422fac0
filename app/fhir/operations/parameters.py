"""Reading an operation's input parameters: a Parameters resource in a POST body, or the
URL query (R4 operations.html#request: primitive parameters may be given either way)."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidRequest
from app.fhir.exchange import FhirRequest


def is_parameters(body: Any) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "Parameters"


def named(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The `parameter` entries of a Parameters resource called `name`."""
    found = body.get("parameter", [])
    if not isinstance(found, list):
        path = "Parameters.parameter"
        raise InvalidRequest(f"{path} must be a list", expression=path)
    return [p for p in found if isinstance(p, dict) and p.get("name") == name]


def primitive(body: dict[str, Any], name: str) -> str | None:
    """The one value[x] of a primitive parameter (a string form: code, uri, date, ...)."""
    entries = named(body, name)
    if len(entries) > 1:
        raise InvalidRequest(f"parameter '{name}' is given more than once", expression=name)
    if not entries:
        return None
    values = [v for k, v in entries[0].items() if k.startswith("value")]
    if len(values) != 1 or not isinstance(values[0], (str, int)):
        raise InvalidRequest(f"parameter '{name}' needs one primitive value[x]", expression=name)
    return str(values[0])


def query_value(request: FhirRequest, name: str) -> str | None:
    values = [v for k, v in request.query if k == name]
    if len(values) > 1:
        raise InvalidRequest(f"parameter '{name}' is given more than once", expression=name)
    return values[0] if values else None


def inputs(request: FhirRequest, names: tuple[str, ...]) -> dict[str, str]:
    """The primitive parameters `names` from the query and, for a POST, a Parameters body
    (given in both places is an error: which one would count?)."""
    body = request.body if is_parameters(request.body) else None
    found: dict[str, str] = {}
    for name in names:
        in_query = query_value(request, name)
        in_body = primitive(body, name) if body is not None else None
        if in_query is not None and in_body is not None:
            message = f"parameter '{name}' is given in the URL and the body"
            raise InvalidRequest(message, expression=name)
        value = in_query if in_query is not None else in_body
        if value is not None:
            found[name] = value
    return found
