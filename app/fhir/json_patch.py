"""JSON Patch (RFC 6902) applied to a stored resource for the PATCH interaction."""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from app.errors import FhirError, InvalidRequest, Issue, PreconditionFailed, Unprocessable

# What one operation may raise besides a failed `test`: a malformed or unknown operation,
# a path that is not there, a value of the wrong kind at it.
NOT_APPLICABLE = (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
                  KeyError, IndexError, ValueError)  # fmt: skip


# Elements (objects, arrays, values) the `copy` operations of one patch may add: each copies
# what it names, so thirty that copy a list into itself grow the resource 2^30-fold (a 1.5 KB
# patch that held a worker for hours); the body limit bounds every other operation's values.
MAX_COPIED = 100_000


def apply_json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """`document` with an RFC 6902 patch applied, in place (the caller parsed it from the
    stored bytes for this, so no copy is made): a failed `test` is 412, anything else that
    cannot be applied 422 (FHIR http.html#patch), as is an operation that changes the
    resource's type or id. Each error names its operation (index in the patch, op, path):
    applied as a whole, the library's message named neither, so a client could not tell
    which of its operations failed."""
    if not isinstance(operations, list):
        raise InvalidRequest("a JSON Patch body must be an array of operations")
    result: Any = document
    rtype, rid = document.get("resourceType"), document.get("id")
    copied = 0
    for index, operation in enumerate(operations):
        copied += _copied_size(result, operation, MAX_COPIED - copied)
        if copied > MAX_COPIED:
            raise _failed(Unprocessable, index, operation, f"the patch's copies would add more "
                          f"than {MAX_COPIED} elements")  # fmt: skip
        try:
            result = jsonpatch.JsonPatch([operation]).apply(result, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise _failed(PreconditionFailed, index, operation, f"test failed: {exc}") from exc
        except NOT_APPLICABLE as exc:
            raise _failed(Unprocessable, index, operation, f"cannot be applied: {exc}") from exc
        if not isinstance(result, dict):
            raise _failed(Unprocessable, index, operation, "the result is not a resource")
        if result.get("resourceType") != rtype or result.get("id") != rid:
            raise _failed(Unprocessable, index, operation, "a patch may not change "
                          "resourceType or id")  # fmt: skip
    return result


def _copied_size(document: Any, operation: Any, budget: int) -> int:
    """How many elements a `copy` operation adds (counted up to just past `budget`); 0 for
    any other operation, or a copy whose source is not there (applying it says so)."""
    if not isinstance(operation, dict) or operation.get("op") != "copy":
        return 0
    source = operation.get("from")
    if not isinstance(source, str):
        return 0
    try:
        value = jsonpointer.resolve_pointer(document, source)
    except (jsonpointer.JsonPointerException, TypeError, KeyError, IndexError, ValueError):
        return 0
    return _elements(value, budget + 1)


def _elements(value: Any, budget: int) -> int:
    """Elements in `value`, counting no further than `budget`."""
    count, stack = 0, [value]
    while stack and count < budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _failed(kind: type[FhirError], index: int, operation: Any, reason: str) -> FhirError:
    """The error of operation `index`; its location is the JSON Pointer of the operation in
    the patch document (`/2`): the body is no resource, so there is no element path."""
    if isinstance(operation, dict):
        named = f"{operation.get('op')} {operation.get('path')}"
    else:
        named = "not an object"
    message = f"JSON Patch operation {index} ({named}): {reason}"
    return kind(message, issues=[Issue("error", kind.issue_code, message, location=(f"/{index}",))])
