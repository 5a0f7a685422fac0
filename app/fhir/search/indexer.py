"""Index rows for one resource: every search parameter of its type, evaluated at write time.

The rows are written in the same transaction as the resource (storage.replace_index), so a
search never sees a resource without its index or an index without its resource.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Table

from app.fhir.search import values
from app.fhir.search.definitions import SearchParamDef, offered, params_for
from app.fhir.tables import (
    search_composite,
    search_date,
    search_number,
    search_quantity,
    search_reference,
    search_string,
    search_token,
    search_uri,
)

# Served from columns of the resource table itself, not from index rows.
FROM_RESOURCE_TABLE = frozenset({"_id", "_lastUpdated"})

Rows = dict[Table, list[dict[str, Any]]]


def index_rows(rtype: str, rid: str, resource: dict[str, Any]) -> Rows:
    rows = _own_rows(rtype, rid, resource, resource)
    contained = resource.get("contained")
    if contained and isinstance(contained, list):
        _add_contained(rows, rtype, rid, resource, contained)
    return rows


def _own_rows(rtype: str, rid: str, resource: dict[str, Any], root: dict[str, Any]) -> Rows:
    """The rows of every parameter of rtype, evaluated on `resource` (`root`: the resource
    that holds it, for `#id` references)."""
    rows: Rows = {}
    for code, param, kind in _indexed(rtype):
        if kind is None:  # composite
            composite = _composites(rtype, param, resource)
            if composite:
                owner = {"resource_type": rtype, "resource_id": rid, "param": code}
                rows.setdefault(search_composite, []).extend({**owner, **c} for c in composite)
            continue
        nodes = param.evaluate(resource, root)
        if not nodes:
            continue
        table, columns, values_of = kind
        seen: set[tuple[Any, ...]] = set()  # the same value reached through two branches
        built = rows.get(table)
        for found in values_of(nodes):
            if found in seen:
                continue
            seen.add(found)
            row = {"resource_type": rtype, "resource_id": rid, "param": code}
            row.update(zip(columns, found))  # noqa: B905 - values.py yields exactly these
            if built is None:
                built = rows[table] = []
            built.append(row)
    return rows


# ------------------------------------------------------------------ contained resources
# A contained resource has no identity of its own: it is part of its container (R4
# references.html#contained), so its rows are the container's rows, owned by the container
# (written and dropped with it), with the parameter named `#<position>.<code>`: `#0.name` is
# the name of contained[0]. A reference to it (`#p1`) is indexed without a target id and with
# the url `#<position>`, so that literal searches, includes and compartments never take it
# for a resource of ours, and a chain can still go into it (sql.py: `subject.name=x` finds
# the rows `<url>.name` of the same owner). Its position, not its id, names it: an id may be
# 64 characters long, and a parameter name at most 64 in all.


def contained_param(position: int, code: str) -> str:
    return f"#{position}.{code}"


def _add_contained(
    rows: Rows, rtype: str, rid: str, container: dict[str, Any], contained: list[Any]
) -> None:
    positions: dict[str, tuple[int, str]] = {}  # contained id -> (position, type)
    for position, inner in enumerate(contained):
        if not isinstance(inner, dict):
            continue
        inner_type, inner_id = inner.get("resourceType"), inner.get("id")
        if not isinstance(inner_type, str) or not params_for(inner_type):
            continue
        if isinstance(inner_id, str):
            positions.setdefault(inner_id, (position, inner_type))
        # evaluated with the container as root: a `#id` inside names a sibling (or `#` it)
        for table, found in _own_rows(inner_type, rid, inner, container).items():
            for row in found:
                row["resource_type"] = rtype
                row["param"] = contained_param(position, row["param"])
            rows.setdefault(table, []).extend(found)
    for row in rows.get(search_reference, ()):
        url = row.get("url")
        if url and url[0] == "#" and url[1:] in positions:
            position, inner_type = positions[url[1:]]
            row.update(target_type=inner_type, target_id=None, url=f"#{position}")


def _unique(items: Any) -> list[dict[str, Any]]:
    """Drop duplicate rows (e.g. the same code reached through two union branches)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for columns in items:
        key = tuple(columns.values())
        if key not in seen:
            seen.add(key)
            out.append(columns)
    return out


# Per parameter type: its index table, the value columns in the order values.py yields them.
Kind = tuple[Table, tuple[str, ...], Callable[[list[Any]], Iterable[tuple[Any, ...]]]]


def _singles(values_of: Callable[[list[Any]], Iterable[Any]]) -> Callable[[list[Any]], Any]:
    return lambda nodes: ((value,) for value in values_of(nodes))


_KINDS: dict[str, Kind] = {
    "token": (search_token, ("system", "code", "display", "type_system", "type_code"),
              values.token_values),
    "string": (search_string, ("value", "exact"), values.string_values),
    "reference": (search_reference,
                  ("target_type", "target_id", "url", "identifier_system", "identifier_value"),
                  values.reference_values),
    "date": (search_date, ("low", "high"), values.date_values),
    "number": (search_number, ("value",), _singles(values.number_values)),
    "quantity": (search_quantity,
                 ("value", "system", "code", "unit", "canonical_value", "canonical_code"),
                 values.quantity_values),
    "uri": (search_uri, ("value",), _singles(values.uri_values)),
}  # fmt: skip


@functools.cache
def _indexed(rtype: str) -> tuple[tuple[str, SearchParamDef, Kind | None], ...]:
    """The parameters indexed for a type (decided once per type, not per resource)."""
    return tuple(
        (code, param, None if param.type == "composite" else _KINDS[param.type])
        for code, param in params_for(rtype).items()
        if indexed_param(rtype, param)
    )


def indexed_param(rtype: str, param: SearchParamDef) -> bool:
    if param.code in FROM_RESOURCE_TABLE:
        return False
    if not offered(rtype, param.code):
        return False
    if param.type == "composite":
        return composite_kinds(rtype, param) is not None
    return param.type in _KINDS


# ------------------------------------------------------------------ composites

COMPOSITE_SECONDS = ("token", "quantity", "date", "string")


def composite_kinds(rtype: str, param: SearchParamDef) -> tuple[str, str] | None:
    return _composite_kinds(rtype, param.code) if param.type == "composite" else None


@functools.cache
def _composite_kinds(rtype: str, code: str) -> tuple[str, str] | None:
    """(first, second) component types when we index this composite, else None.

    Supported: a token first component with a token, quantity, date or string second one:
    68 of the 72 R4 composites (the others pair numbers or references and are reported as
    unsupported parameters).
    """
    params = params_for(rtype)
    param = params[code]
    if len(param.components) != 2 or param.evaluate_components is None:
        return None
    first, second = (params.get(c.definition) for c in param.components)
    if first is None or second is None or first.type != "token":
        return None
    return ("token", second.type) if second.type in COMPOSITE_SECONDS else None


def _composites(
    rtype: str, param: SearchParamDef, resource: dict[str, Any]
) -> list[dict[str, Any]]:
    kinds = composite_kinds(rtype, param)
    assert kinds is not None and param.evaluate_components is not None
    rows: list[dict[str, Any]] = []
    for first_nodes, second_nodes in param.evaluate_components(resource):
        seconds = list(_SECOND_BUILDERS[kinds[1]](second_nodes))
        for system, code, *_ in values.token_values(first_nodes):
            if code is None:
                continue
            rows.extend({**_EMPTY_COMPOSITE, "c1_system": system, "c1_code": code, **second}
                        for second in seconds)  # fmt: skip
    return _unique(rows)


# Every composite row carries every column, so rows of different composites batch together.
_EMPTY_COMPOSITE: dict[str, Any] = dict.fromkeys(
    ("c2_system", "c2_code", "c2_value", "c2_unit", "c2_canonical_value", "c2_canonical_code",
     "c2_low", "c2_high", "c2_text")
)  # fmt: skip


def _second_tokens(nodes: list[Any]) -> Any:
    for system, code, *_ in values.token_values(nodes):
        if code is not None:
            yield {"c2_system": system, "c2_code": code}


def _second_quantities(nodes: list[Any]) -> Any:
    for value, system, code, unit, canonical, canonical_code in values.quantity_values(nodes):
        yield {"c2_value": value, "c2_system": system, "c2_code": code, "c2_unit": unit,
               "c2_canonical_value": canonical, "c2_canonical_code": canonical_code}  # fmt: skip


def _second_dates(nodes: list[Any]) -> Any:
    for low, high in values.date_values(nodes):
        yield {"c2_low": low, "c2_high": high}


def _second_strings(nodes: list[Any]) -> Any:
    for normalized, _exact in values.string_values(nodes):
        yield {"c2_text": normalized}


_SECOND_BUILDERS = {
    "token": _second_tokens,
    "quantity": _second_quantities,
    "date": _second_dates,
    "string": _second_strings,
}
