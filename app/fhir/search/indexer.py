"""Index rows for one resource: every search parameter of its type, evaluated at write time.

The rows are written in the same transaction as the resource (storage.replace_index), so a
search never sees a resource without its index or an index without its resource.
"""

from __future__ import annotations

import functools
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
    rows: Rows = {}
    for code, param in params_for(rtype).items():
        if not indexed_param(rtype, param):
            continue
        if param.type == "composite":
            composite = _composites(rtype, param, resource)
            if composite:
                owner = {"resource_type": rtype, "resource_id": rid, "param": code}
                rows.setdefault(search_composite, []).extend({**owner, **c} for c in composite)
            continue
        nodes = param.evaluate(resource, resource)
        if not nodes:
            continue
        table, build = _BUILDERS[param.type]
        owner = {"resource_type": rtype, "resource_id": rid, "param": code}
        built = [{**owner, **columns} for columns in _unique(build(nodes))]
        if built:
            rows.setdefault(table, []).extend(built)
    return rows


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


def _tokens(nodes: list[Any]) -> Any:
    for system, code, display, type_system, type_code in values.token_values(nodes):
        yield {
            "system": system,
            "code": code,
            "display": display,
            "type_system": type_system,
            "type_code": type_code,
        }


def _strings(nodes: list[Any]) -> Any:
    for normalized, exact in values.string_values(nodes):
        yield {"value": normalized, "exact": exact}


def _references(nodes: list[Any]) -> Any:
    for target_type, target_id, url, id_system, id_value in values.reference_values(nodes):
        yield {
            "target_type": target_type,
            "target_id": target_id,
            "url": url,
            "identifier_system": id_system,
            "identifier_value": id_value,
        }


def _dates(nodes: list[Any]) -> Any:
    for low, high in values.date_values(nodes):
        yield {"low": low, "high": high}


def _numbers(nodes: list[Any]) -> Any:
    for number in values.number_values(nodes):
        yield {"value": number}


def _quantities(nodes: list[Any]) -> Any:
    for value, system, code, unit in values.quantity_values(nodes):
        yield {"value": value, "system": system, "code": code, "unit": unit}


def _uris(nodes: list[Any]) -> Any:
    for uri in values.uri_values(nodes):
        yield {"value": uri}


_BUILDERS: dict[str, tuple[Table, Any]] = {
    "token": (search_token, _tokens),
    "string": (search_string, _strings),
    "reference": (search_reference, _references),
    "date": (search_date, _dates),
    "number": (search_number, _numbers),
    "quantity": (search_quantity, _quantities),
    "uri": (search_uri, _uris),
}


def indexed_param(rtype: str, param: SearchParamDef) -> bool:
    if param.code in FROM_RESOURCE_TABLE:
        return False
    if not offered(rtype, param.code):
        return False
    if param.type == "composite":
        return composite_kinds(rtype, param) is not None
    return param.type in _BUILDERS


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
    ("c2_system", "c2_code", "c2_value", "c2_unit", "c2_low", "c2_high", "c2_text")
)


def _second_tokens(nodes: list[Any]) -> Any:
    for system, code, *_ in values.token_values(nodes):
        if code is not None:
            yield {"c2_system": system, "c2_code": code}


def _second_quantities(nodes: list[Any]) -> Any:
    for value, system, code, unit in values.quantity_values(nodes):
        yield {"c2_value": value, "c2_system": system, "c2_code": code, "c2_unit": unit}


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
