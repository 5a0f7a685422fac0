"""The R4 Patient compartment (CompartmentDefinition-patient), as SQL over the reference index:
a resource is in Patient/X's compartment when one of its compartment parameters refers to
Patient/X (the Patient itself: its own id, or `link`). Types with no compartment parameters
hold no patient's data and are not confined."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, true, tuple_

from app.fhir.search.sql import is_local
from app.fhir.tables import search_reference

TABLE = Path(__file__).resolve().parents[2] / "fhir_profiles" / "r4_core" / "compartments.json"


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type -> the parameters that put it in a Patient's compartment."""
    table = json.loads(TABLE.read_text())["Patient"]
    return {rtype: tuple(params) for rtype, params in table.items()}


def is_confined_type(rtype: str) -> bool:
    return rtype in patient_compartment()


def in_compartment(
    owner_type: str, owner_id: Any, patient_id: str, base_url: str
) -> ColumnElement[bool]:
    """Is the resource (owner_type, owner_id column) in Patient/patient_id's compartment?"""
    params = patient_compartment().get(owner_type)
    if not params:
        return true()
    refers = _refers(owner_type, owner_id, params, base_url, lambda target: target == patient_id)
    return or_(owner_id == patient_id, refers) if owner_type == "Patient" else refers


def in_other_compartment(
    owner_type: str, owner_id: Any, patient_id: str, base_url: str
) -> ColumnElement[bool]:
    """Is the resource in the compartment of any Patient other than Patient/patient_id? A
    write confined to one patient may not put data into (or change) another's compartment."""
    params = patient_compartment().get(owner_type)
    if not params:
        return false()
    refers = _refers(owner_type, owner_id, params, base_url, lambda target: target != patient_id)
    return or_(owner_id != patient_id, refers) if owner_type == "Patient" else refers


def _refers(
    owner_type: str,
    owner_id: Any,
    params: tuple[str, ...],
    base_url: str,
    patient: Callable[[Any], ColumnElement[bool]],
) -> ColumnElement[bool]:
    """One of the resource's compartment parameters refers to a local Patient whose id
    satisfies `patient`. An alias of its own: the filter is nested inside queries over
    search_reference (chains, _has), whose rows the bare table could be correlated with."""
    ref = search_reference.alias()
    return exists().where(
        ref.c.resource_type == owner_type,
        ref.c.resource_id == owner_id,
        ref.c.param.in_(params),
        ref.c.target_type == "Patient",
        patient(ref.c.target_id),
        is_local(ref, base_url),
    )


def in_compartment_any_type(
    owner_type: Any, owner_id: Any, types: list[str], patient_id: str, base_url: str
) -> ColumnElement[bool]:
    """The same for a resource whose type is a column, among `types` (all confined types)."""
    if not types:
        return false()
    table = patient_compartment()
    pairs = [(t, p) for t in types for p in table[t]]
    ref = search_reference
    refers = exists().where(
        ref.c.resource_type == owner_type,
        ref.c.resource_id == owner_id,
        tuple_(ref.c.resource_type, ref.c.param).in_(pairs),
        ref.c.target_type == "Patient",
        ref.c.target_id == patient_id,
        is_local(ref, base_url),
    )
    itself = and_(owner_type == "Patient", owner_id == patient_id)
    return and_(owner_type.in_(types), or_(itself, refers))
