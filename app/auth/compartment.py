"""The R4 Patient compartment (CompartmentDefinition-patient), as SQL over the reference index:
a resource is in Patient/X's compartment when one of its compartment parameters refers to
Patient/X (the Patient itself: its own id, or `link`). Types with no compartment parameters
hold no patient's data and are not confined."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, true, tuple_

from app.fhir import compartments
from app.fhir.search.sql import is_local
from app.fhir.tables import search_reference


def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type -> the parameters that put it in a Patient's compartment."""
    return compartments.definitions()["Patient"]


def is_confined_type(rtype: str) -> bool:
    return rtype in patient_compartment()


def in_compartment(
    owner_type: str, owner_id: Any, patient_id: str, base_url: str
) -> ColumnElement[bool]:
    """Is the resource (owner_type, owner_id column) in Patient/patient_id's compartment?"""
    if not patient_compartment().get(owner_type):
        return true()
    return compartments.in_compartment(
        "Patient", owner_type, owner_id, base_url, lambda target: target == patient_id
    )


def in_other_compartment(
    owner_type: str, owner_id: Any, patient_id: str, base_url: str
) -> ColumnElement[bool]:
    """Is the resource in the compartment of any Patient other than Patient/patient_id? A
    write confined to one patient may not put data into (or change) another's compartment."""
    if not patient_compartment().get(owner_type):
        return false()
    return compartments.in_compartment(
        "Patient", owner_type, owner_id, base_url, lambda target: target != patient_id
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
