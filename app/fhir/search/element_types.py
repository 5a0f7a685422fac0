"""What the elements a search parameter finds can be, as the FHIRPath compiler types its
expression: some questions depend on it (`:of-type` is defined on Identifier elements only;
a canonical include looks only where a canonical can be)."""

from __future__ import annotations

import functools

from app.errors import InvalidRequest
from app.fhir.search.definitions import params_for
from app.fhir.search.fhirpath import result_types, split_union


@functools.cache
def may_return(rtype: str, code: str, types: frozenset[str]) -> bool:
    """Whether the parameter `code` of rtype may find an element of one of `types`. A branch
    of its expression whose types the compiler cannot tell may find anything."""
    param = params_for(rtype).get(code)
    if param is None or not param.expression:
        return True
    branches = [result_types(b, rtype) for b in split_union(param.expression)]
    return any(found is None or types & set(found) for found in branches)


@functools.cache
def returns_only(rtype: str, code: str, types: frozenset[str]) -> bool:
    """Whether every branch of the parameter's expression finds elements of `types` only."""
    param = params_for(rtype).get(code)
    if param is None or not param.expression:
        return False
    branches = [result_types(b, rtype) for b in split_union(param.expression)]
    return all(found is not None and set(found) <= types for found in branches)


BOOLEAN = frozenset({"boolean"})


def check_boolean(rtype: str, code: str, key: str, values: tuple[str, ...]) -> None:
    """A token on boolean elements (`Patient?active`) takes `true` or `false` alone (R4
    search.html#token: no `|` either); anything else matched nothing, silently."""
    if not returns_only(rtype, code, BOOLEAN):
        return
    for value in values:
        if value not in ("true", "false"):
            raise InvalidRequest(
                f"{key}={value}: {rtype}.{code} is a boolean (true or false)", expression=key
            )
