"""Index rows for one resource: every search parameter of its type, evaluated at write time.

The rows are written in the same transaction as the resource (storage.replace_index), so a
search never sees a resource without its index or an index without its resource.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from app.fhir.search import values
from app.fhir.search.definitions import SearchParamDef, params_for
from app.fhir.tables import (
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
        if code in FROM_RESOURCE_TABLE or param.type not in _BUILDERS:
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


def indexed_param(param: SearchParamDef) -> bool:
    return param.code not in FROM_RESOURCE_TABLE and param.type in _BUILDERS
