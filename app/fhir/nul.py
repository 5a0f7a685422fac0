"""NUL characters in a request. No FHIR id, search parameter or value holds one (resources
refuse control characters, validation.py), and PostgreSQL cannot take text holding one: a
`%00` in a search value, an id or a paging token was a 500 there (SQLite took it)."""

from __future__ import annotations

from app.errors import InvalidRequest


def refuse_nul(text: str, expression: str) -> None:
    if "\x00" in text:
        written = expression.replace("\x00", "%00")
        raise InvalidRequest(f"'{written}' holds a NUL character (%00)", expression=written)
