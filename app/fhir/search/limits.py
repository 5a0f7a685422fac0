"""How large one search may be. Each criterion is a subquery and each value a condition in
it; a chain is one subquery per type it reaches at each link, twice (stored and contained
resources, sql._chain), so its cost doubles with every link. Unbounded, PostgreSQL planned 100
criteria in ~1 s and 1,000 for minutes, a chain ten links deep took it 22 s (SQLite: a 500,
"parser stack overflow", from seven links on; a server process grew to several GB building
one), and 10,000 values of one parameter took SQLite 10-40 s. Real searches stay far below
these bounds; one beyond them is refused with 400 `too-costly`, naming the parameter where
the bound was crossed."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from app.errors import InvalidRequest

if TYPE_CHECKING:
    from app.fhir.search.params import Criterion

MAX_BRANCHES = 64  # in all: a plain criterion is one, a chain one per reached type and link
MAX_DEPTH = 5  # links of a chain, levels of _has
MAX_VALUES = 1000  # in all: each alternative of `a,b,c` counts once per branch it is in
MAX_SORT_KEYS = 10


def check_size(criteria: tuple[Criterion, ...] | list[Criterion], sort_keys: int) -> None:
    branches = values = 0
    for criterion in criteria:
        if depth(criterion) > MAX_DEPTH:
            raise _too_costly(
                f"a chain or _has goes at most {MAX_DEPTH} links deep", criterion.key()
            )
        count = leaves(criterion)
        branches += count
        if branches > MAX_BRANCHES:
            raise _too_costly(
                f"a search takes at most {MAX_BRANCHES} criteria (a chain counts one per "
                "resource type it reaches at each link, twice: stored and contained)",
                criterion.key(),
            )
        values += count * len(criterion.leaf().values)
        if values > MAX_VALUES:
            raise _too_costly(f"a search takes at most {MAX_VALUES} values in all", criterion.key())
    if sort_keys > MAX_SORT_KEYS:
        raise _too_costly(f"_sort takes at most {MAX_SORT_KEYS} keys", "_sort")


def depth(criterion: Criterion) -> int:
    if criterion.has_type:
        assert criterion.chain is not None
        return 1 + depth(criterion.chain)
    if criterion.chain is not None:
        return 1 + max(depth(inner) for _, inner in criterion.targets)
    return 0


def leaves(criterion: Criterion) -> int:
    """How many times the criterion's values are written into the SQL."""
    if criterion.has_type:
        assert criterion.chain is not None
        return leaves(criterion.chain)
    if criterion.chain is not None:
        return sum(2 * leaves(inner) for _, inner in criterion.targets)
    return 1


def _too_costly(message: str, expression: str) -> InvalidRequest:
    error = InvalidRequest(message, expression=expression)
    error.issues = [replace(i, code="too-costly") for i in error.issues]
    return error
