"""How large one search may be. Each criterion is a subquery and each value a condition in
it: PostgreSQL planned 100 criteria in ~1 s and 1,000 for minutes (a request holding a worker
and a connection all that time), and 10,000 values of one parameter took SQLite 10-40 s to
build and run. Real searches stay far below these bounds; one beyond them is refused with
400 `too-costly`, naming the parameter where the bound was crossed."""

from __future__ import annotations

from dataclasses import replace

from app.errors import InvalidRequest

MAX_CRITERIA = 50  # search parameters (criteria), chains and _has included
MAX_VALUES = 1000  # values in all: each alternative of `a,b,c` counts one
MAX_SORT_KEYS = 10


def check_size(criteria: list[tuple[str, int]], sort_keys: int) -> None:
    """`criteria`: each criterion's key as written and its number of values."""
    if len(criteria) > MAX_CRITERIA:
        raise _too_costly(
            f"a search takes at most {MAX_CRITERIA} parameters, this one has {len(criteria)}",
            criteria[MAX_CRITERIA][0],
        )
    values = 0
    for key, count in criteria:
        values += count
        if values > MAX_VALUES:
            raise _too_costly(f"a search takes at most {MAX_VALUES} values in all", key)
    if sort_keys > MAX_SORT_KEYS:
        raise _too_costly(f"_sort takes at most {MAX_SORT_KEYS} keys", "_sort")


def _too_costly(message: str, expression: str) -> InvalidRequest:
    error = InvalidRequest(message, expression=expression)
    error.issues = [replace(i, code="too-costly") for i in error.issues]
    return error
