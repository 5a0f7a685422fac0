"""JSON Patch (RFC 6902) applied to a stored resource for the PATCH interaction."""

from __future__ import annotations

from typing import Any

import jsonpatch

from app.errors import InvalidRequest, PreconditionFailed, Unprocessable


def apply_json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """`document` with an RFC 6902 patch applied: a failed `test` is 412, anything else that
    cannot be applied 422 (FHIR http.html#patch)."""
    if not isinstance(operations, list):
        raise InvalidRequest("a JSON Patch body must be an array of operations")
    try:
        result = jsonpatch.JsonPatch(operations).apply(document, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PreconditionFailed(f"JSON Patch test failed: {exc}") from exc
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
    ) as exc:
        raise Unprocessable(f"JSON Patch could not be applied: {exc}") from exc
    if not isinstance(result, dict):
        raise Unprocessable("JSON Patch result is not a resource")
    return result
