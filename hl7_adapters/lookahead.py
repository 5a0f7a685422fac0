"""Looking up a message's matches before it writes anything (a speed-up for the applier).

Every search through the door first sends the rows staged so far (``UnitOfWork.flush``).
Applied in order, an ORU^R01 alternates "find Observation k" and "create Observation k", so
each OBX cost a flush of its predecessor's rows of its own (one database round trip, an
executemany per table): measured on PostgreSQL, those flushes were about a fifth of the
ingest's CPU. Looking every match up first, while nothing is staged yet, the rows of the
writes that follow are sent in one batch (when the message's audit record is added).

The searches are the same ones, all sent in one statement (``FhirService.find_ids_many``:
each its own branch with its own plan, not one OR of several values, whose plans proved
fragile on young tables); only when they run changes. A result found ahead is used only
while nothing the message wrote since could change it:

* a plain ``identifier=[system|]value`` match: unless a resource of that type written by
  this message carries that value (compared ignoring case and surrounding space, a superset
  of the exact comparison the token search makes), or the resource it found (or any Patient,
  whose replaced-by links decide which patient is current) was written by this message;
* any other query (it may chain to other types): unless the message wrote anything at all.

Otherwise the match is looked up again, in place, exactly as without this module. A match
planned twice (a bed ensured, then written with its status, PV1-40) is served the same way
the second time: searching again would send the rows staged so far, one round trip more. An error
found ahead (an ambiguous match) is raised when its resource's turn comes, not before, so a
message still fails on its first problem in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

PREFIX = "identifier="
Found = TypeVar("Found")


def identifier_value(match: str) -> str | None:
    """The value of a single ``identifier=[system|]value`` match; None for any other query
    (several parameters or values, another parameter, a modifier, no value)."""
    if not match.startswith(PREFIX) or "&" in match:
        return None
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in unquote(match[len(PREFIX) :]):
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            return None  # an OR of several values
        elif ch == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts[-1] if parts[-1] and len(parts) <= 2 else None


def fold(value: str) -> str:
    return value.strip().casefold()


class Lookahead(Generic[Found]):
    """Matches looked up before the writes, and what the message has written since.

    `find(rtype, match)` returns the result to keep, or raises one of `errors` to keep (content
    errors only: a database error ends the transaction, so it is raised at once);
    `find_many(keys)` does the same for several (type, match) keys at once, returning each
    one's result or error; `ids_of(result)` the resource ids the result names."""

    def __init__(
        self,
        find: Callable[[str, str], Found],
        find_many: Callable[[list[tuple[str, str]]], list[Found | Exception]],
        ids_of: Callable[[Found], list[str]],
        errors: tuple[type[Exception], ...],
    ) -> None:
        self._find, self._find_many, self._ids_of, self._errors = find, find_many, ids_of, errors
        self._ahead: dict[tuple[str, str], tuple[Found | None, Exception | None]] = {}
        self._used: dict[tuple[str, str], tuple[Found | None, Exception | None]] = {}
        self._written_values: dict[str, set[str]] = {}
        self._written_ids: dict[str, set[str]] = {}
        self._wrote_any = False

    def prepare(self, matches: list[tuple[str, str]]) -> None:
        """Look up each (type, match) once, all together, before anything is written."""
        keys = [key for key in dict.fromkeys(matches) if key not in self._ahead]
        for key, outcome in zip(keys, self._find_many(keys), strict=True):
            if isinstance(outcome, self._errors):
                self._ahead[key] = (None, outcome)
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                self._ahead[key] = (outcome, None)

    def forget(self, matches: list[tuple[str, str]]) -> None:
        """Drop these look-ups, so that `prepare` runs them again (after taking a lock)."""
        for key in matches:
            self._ahead.pop(key, None)

    def find(self, rtype: str, match: str) -> Found:
        """The result for a match: the one found ahead while still valid, else a new search."""
        key = (rtype, match)
        entry = self._ahead.pop(key, None)
        if entry is None:  # a repeat (a bed ensured, then its status): the same rule applies
            entry = self._used.get(key)
        else:
            self._used[key] = entry
        if entry is None or self._stale(rtype, match, entry[0]):
            return self._find(rtype, match)
        result, error = entry
        if error is not None:
            raise error
        return result  # type: ignore[return-value]  # no error: the result was stored

    def absent(self, rtype: str, match: str) -> bool:
        """Whether the match was looked up ahead, not used yet, and found nothing."""
        return self._ahead.get((rtype, match)) == (None, None)

    def found(self) -> list[tuple[str, str]]:
        """(type, id) of every resource found ahead and not yet used."""
        return [
            (rtype, rid)
            for (rtype, _), (result, _) in self._ahead.items()
            if result is not None
            for rid in self._ids_of(result)
        ]

    def wrote(self, rtype: str, rid: str, body: dict[str, Any]) -> None:
        """Note a resource this message created or updated (`body`: as stored)."""
        self._wrote_any = True
        self._written_ids.setdefault(rtype, set()).add(rid)
        values = self._written_values.setdefault(rtype, set())
        for key in ("identifier", "masterIdentifier"):  # what an `identifier` search indexes
            found = body.get(key) or []
            for identifier in found if isinstance(found, list) else [found]:
                if isinstance(identifier, dict) and identifier.get("value") is not None:
                    values.add(fold(str(identifier["value"])))

    def _stale(self, rtype: str, match: str, result: Found | None) -> bool:
        if not self._wrote_any:
            return False
        value = identifier_value(match)
        if value is None:
            return True
        if fold(value) in self._written_values.get(rtype, ()):
            return True
        if rtype == "Patient" and "Patient" in self._written_ids:
            return True
        written = self._written_ids.get(rtype, set())
        return result is not None and any(i in written for i in self._ids_of(result))
