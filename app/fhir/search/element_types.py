"""What the elements a search parameter finds can be, as the FHIRPath compiler types its
expression: some questions depend on it (`:of-type` is defined on Identifier elements only;
a canonical include looks only where a canonical can be)."""

from __future__ import annotations

import functools

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
