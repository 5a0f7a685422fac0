"""Every resource type a search reaches beyond the searched one, and the permission it needs.

A search answers questions about more than its own type: a chain (`subject:Patient.name=x`)
and a reverse chain (`_has:Condition:subject:code=x`) test criteria on other types (search,
`s`), and `_include` / `_revinclude` return resources of other types (read, `r`). Each needs a
scope of its own (docs/smart.md), or the search is an oracle on data the token may not see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.fhir.search.params import Criterion, Include, SearchParams


@dataclass(frozen=True)
class Reached:
    """The resource types one query parameter reaches. They are alternatives: an untyped
    chain or include lands on any target type of its reference (`subject.name` on Patient,
    Group, ...), a typed one on the one type named."""

    types: tuple[str, ...]
    permission: str  # "s": criteria are tested on them; "r": they are returned
    parameter: str  # the query parameter, for the refusal's expression


def reached(params: SearchParams) -> list[Reached]:
    found = [r for c in params.criteria for r in _by_criterion(c, c.key())]
    found += [_by_include(inc) for inc in params.includes]
    return found


def _by_criterion(c: Criterion, parameter: str) -> Iterator[Reached]:
    if c.chain is None:
        return
    if c.has_type:
        yield Reached((c.has_type,), "s", parameter)
    elif c.chain_type:
        yield Reached(tuple(c.chain_type.split("|")), "s", parameter)
    yield from _by_criterion(c.chain, parameter)


def _by_include(inc: Include) -> Reached:
    name = "_revinclude" if inc.reverse else "_include"
    parameter = f"{name}={inc.value()}"
    return Reached(inc.returned_types(), "r", parameter)
