"""A paging cursor (`_page`) read back: its position, as the values the page query binds.

A cursor is a client-held token: a forged or damaged one must be a 400, never a database
error (PostgreSQL refuses to compare a text column with a number, SQLite a value with a
JSON object, and PostgreSQL's bigint and numeric overflow). Each position value must have
its sort key's type: the resource id and text keys a string, dates and _lastUpdated an
integer (µs) within the index's range, numbers and quantities a decimal within its bounds.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from app.errors import InvalidRequest
from app.fhir.search.params import SearchParams, lookup
from app.fhir.search.values import MAX_TIME, MIN_TIME, NUMBER_LAST, bounded

DIRECTIONS = ("next", "prev")


def to_json(value: Any) -> Any:
    """A sort value as the cursor holds it (JSON has no decimal)."""
    return {"decimal": str(value)} if isinstance(value, Decimal) else value


def tiebreakers(several_types: bool) -> int:
    """The keys after the sort keys that make every position unique: the id, and for a
    search of several types the type too (Patient/1 and Organization/1 share an id; with
    the id alone, a page that ended on one of them skipped the other)."""
    return 2 if several_types else 1


def position(params: SearchParams, rtype: str, *, several_types: bool = False) -> dict[str, Any]:
    """The bound values :at0, :at1, ... of params.page, or a 400."""
    page = params.page or {}
    at = page.get("at")
    if page.get("dir") not in DIRECTIONS or not isinstance(at, list):
        raise _refused()
    extra = tiebreakers(several_types)
    if len(at) != len(params.sort) + extra:
        raise _refused()
    kinds = [lookup(rtype, key.lstrip("-"))[0] for key in params.sort] + ["token"] * extra
    return {
        f"at{i}": _value(kind, value) for i, (kind, value) in enumerate(zip(kinds, at, strict=True))
    }


def _value(kind: str, value: Any) -> Any:
    if kind in ("number", "quantity"):
        text = value.get("decimal") if isinstance(value, dict) else None
        try:
            number = Decimal(text) if isinstance(text, str) else None
        except InvalidOperation:
            number = None
        if number is not None and _is_number_last(number):
            return NUMBER_LAST.copy_sign(number)  # a page that ended on a missing value
        # beyond what the index holds (values.bounded): PostgreSQL's numeric overflows
        if number is None or not number.is_finite() or bounded(number) != number:
            raise _refused()
        return number
    if kind == "date":  # within the index's sentinels, so within a bigint
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refused()
        if not MIN_TIME <= value <= MAX_TIME:
            raise _refused()
        return value
    if not isinstance(value, str):
        raise _refused()
    return value


def _is_number_last(number: Decimal) -> bool:
    """The sentinel a sort by number gives a resource without one (±NUMBER_LAST, beyond the
    index's bounds), as the database hands it back: SQLite as a double (1.00000000000000005…e301).
    Refused as out of bounds, it made the next page of such a sort a 400."""
    return number.is_finite() and float(number.copy_abs()) == float(NUMBER_LAST)


def _refused() -> InvalidRequest:
    return InvalidRequest("_page does not belong to this search", expression="_page")
