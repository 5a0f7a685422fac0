"""A coded HL7 value looked up in a code table, the way every mapping does it: a code the
table lacks is not an error (the message is still applied) but an ERR 103 "table value not
found" warning in the AA, and an empty one, where the field is needed, an ERR 101 "required
field missing" warning; the caller decides the fallback (left out, a default, the text).

The varying parts are parameters: the table (a dict of code -> FHIR value, or a set of the
codes that are merely known), the code as sent, where it is (ERR-2), and the warning texts.
A text is a template: ``{code}`` is the code as sent, ``{name}`` the field ("PID-5"); it is
formatted only when the warning is given, so a hit costs a dict look-up and nothing else.
"""

from __future__ import annotations

from collections.abc import Set
from typing import TypeVar, cast

from hl7_adapters.mapping.context import Where

T = TypeVar("T")


def look_up(
    table: dict[str, T] | Set[T],
    sent: str,
    where: Where,
    unknown: str,
    *,
    empty: str | None = None,
    component: int | None = None,
) -> T | None:
    """``table[sent.upper()]`` (a set: the upper-cased code itself), or None.

    Not found: an ERR 103 warning with ``unknown`` at `where` (and `component`). An empty
    `sent` with an ``empty`` text: an ERR 101 warning with it instead; without one, an empty
    code is looked up like any other (callers that skip empty fields return before)."""
    key = sent.upper()
    if not key and empty is not None:
        where.warn(101, empty, component)
        return None
    if isinstance(table, dict):  # (not the Mapping ABC: an ABC check costs 7 times more)
        found = table.get(key)
    else:  # a set of str: T is str
        found = cast(T, key) if key in table else None
    if found is None:
        where.warn(103, unknown.format(code=sent, name=where.name()), component)
    return found
