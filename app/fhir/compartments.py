"""The R4 compartments (CompartmentDefinition patient, encounter, practitioner, relatedperson,
device) as SQL over the reference index, and compartment search (R4 http.html#search:
`GET [base]/Patient/123/Observation?...`).

A resource is in the compartment of Patient/123 when one of its compartment parameters (the
definition's `param` for its type: Observation `subject`, `performer`) refers to Patient/123;
the compartment's own resource is in it too (the definitions say `{def}`, or `link` for a
Patient). Types the definition does not list are never in that compartment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, true

from app.fhir.search.sql import is_local
from app.fhir.tables import search_reference
from app.fhir.unit_of_work import RowFilter

TABLE = Path(__file__).resolve().parents[2] / "fhir_profiles" / "r4_core" / "compartments.json"
OWN = "{def}"  # a definition's parameter meaning "the compartment's own resource"

IdTest = Callable[[Any], ColumnElement[bool]]


@cache
def definitions() -> dict[str, dict[str, tuple[str, ...]]]:
    """Compartment type -> resource type -> the parameters that put it in the compartment."""
    table = json.loads(TABLE.read_text())
    return {
        ctype: {rtype: tuple(params) for rtype, params in members.items()}
        for ctype, members in table.items()
    }


def members(ctype: str) -> list[str]:
    """The resource types that can be in a compartment of type `ctype`, sorted."""
    return sorted(definitions().get(ctype, {}))


def in_compartment(
    ctype: str, owner_type: str, owner_id: Any, base_url: str, target: IdTest
) -> ColumnElement[bool]:
    """Is the resource (owner_type, the owner_id column) in the compartment of a `ctype`
    whose id passes `target`? (`target` is a test on an id column: `== "123"` for one
    compartment, `!= "123"` for "any other".)"""
    params = tuple(p for p in definitions()[ctype].get(owner_type, ()) if p != OWN)
    # An alias of its own: the condition is nested inside queries over search_reference
    # (chains, _has), whose rows the bare table could be correlated with.
    ref = search_reference.alias()
    refers = exists().where(
        ref.c.resource_type == owner_type,
        ref.c.resource_id == owner_id,
        ref.c.param.in_(params),
        ref.c.target_type == ctype,
        target(ref.c.target_id),
        is_local(ref, base_url),
    )
    return or_(target(owner_id), refers) if owner_type == ctype else refers


@dataclass(frozen=True)
class CompartmentFilter:
    """A RowFilter confining a search's matches to one compartment, on top of what the
    caller's grant already confines (`inner`). Chains, `_has` and includes are left to the
    grant: the spec restricts the matches, not what an include brings along."""

    ctype: str
    cid: str
    base_url: str
    inner: RowFilter | None
    # The types the search covers: a search of several types gets a branch for each of
    # them only, not one per type the compartment holds (66 for Patient, whatever `_type` said).
    types: tuple[str, ...]

    def sql(self, owner_type: Any, owner_id: Any) -> ColumnElement[bool]:
        if not isinstance(owner_type, str):  # a search of several types: one branch each
            held = set(members(self.ctype))
            return or_(
                false(),  # (none of the types in the compartment: nothing matches)
                *[
                    and_(owner_type == rtype, self.sql(rtype, owner_id))
                    for rtype in self.types
                    if rtype in held
                ],
            )
        mine = in_compartment(
            self.ctype, owner_type, owner_id, self.base_url, lambda column: column == self.cid
        )
        return mine if self.inner is None else and_(mine, self.inner.sql(owner_type, owner_id))

    def criteria_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        return true() if self.inner is None else self.inner.criteria_sql(rtype, owner_id)

    def included_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        return true() if self.inner is None else self.inner.included_sql(rtype, owner_id)
