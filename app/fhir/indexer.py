"""Index rows computed at write time, stored in the same transaction as the resource.

For now: the `identifier` token of every resource type that has a top-level identifier
(the official SearchParameter `identifier` is `<Type>.identifier` for them). The search issue
replaces this with every SearchParameter definition evaluated by FHIRPath.
"""

from __future__ import annotations

from typing import Any

Token = tuple[str, str | None, str | None]  # (param, system, code)


def tokens_for(resource: dict[str, Any]) -> list[Token]:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, dict):  # a few types have a single identifier
        identifiers = [identifiers]
    if not isinstance(identifiers, list):
        return []
    tokens: list[Token] = []
    for ident in identifiers:
        if isinstance(ident, dict) and (ident.get("value") or ident.get("system")):
            tokens.append(("identifier", ident.get("system"), ident.get("value")))
    return tokens
