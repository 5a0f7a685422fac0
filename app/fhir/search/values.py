"""From evaluated FHIRPath values to index values, one function per search parameter type.

Each function takes the nodes a SearchParameter expression returned for one resource and
yields plain tuples (the columns of that type's index table). The same normalisations are
applied to search input (see criteria.py), so the two always agree.
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import unicodedata
from collections.abc import Iterator
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from app.fhir import ucum
from app.fhir.instants import parse_instant

# Date index values are [low, high) in epoch microseconds; open ends use these sentinels.
MIN_TIME = -(2**62)
MAX_TIME = 2**62

HUMAN_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


@functools.lru_cache(maxsize=8192)
def normalize(text: str) -> str:
    """Case- and accent-insensitive form used by string search: 'Zoë' -> 'zoe'.

    Cached: every write indexes the same displays, names and cities over and over."""
    if text.isascii():  # NFKD leaves ASCII alone and none of it is a combining mark
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def canonical_text(text: str) -> str:
    """The form :exact compares: NFC, so that "é" typed precomposed (U+00E9) and decomposed
    (e + U+0301) are the same string, as Unicode says they are; case and accents still count."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


# A btree index entry on PostgreSQL holds at most 2,704 bytes: a longer indexed value made
# the write fail. Indexed text is therefore kept to its first INDEXED_BYTES bytes of UTF-8
# (token system and code share one index entry, so half each), and searched values are cut
# the same way (criteria.py): values longer than that compare on that much of their start.
INDEXED_BYTES = 2000


def capped(text: str, limit: int = INDEXED_BYTES) -> str:
    """text cut to at most limit bytes of UTF-8, at a character boundary."""
    if len(text) * 4 <= limit:  # the common case: no character takes more than 4 bytes
        return text
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


CODE_BYTES = INDEXED_BYTES // 2  # a token's system and code share an index entry


def capped_code(text: str | None) -> str | None:
    return None if text is None else capped(text, CODE_BYTES)


# ------------------------------------------------------------------ string


def string_values(nodes: list[Any]) -> Iterator[tuple[str, str]]:
    """(normalized, exact) for strings, and for each part of HumanName / Address."""
    for node in nodes:
        if isinstance(node, str):
            yield capped(normalize(node)), canonical_text(node)
        elif isinstance(node, dict):
            # HumanName has family/given/prefix/suffix, Address none of them (a name with only
            # a prefix, e.g. {"prefix": ["Sister"]}, is still a name).
            is_name = any(part in node for part in HUMAN_NAME_PARTS[1:])
            parts = HUMAN_NAME_PARTS if is_name else ADDRESS_PARTS
            for part in parts:
                for text in _strings(node.get(part)):
                    yield capped(normalize(text)), canonical_text(text)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


# ------------------------------------------------------------------ token

# (system, code, display, type_system, type_code); display is normalized for :text.
Token = tuple[str | None, str | None, str | None, str | None, str | None]


def token_values(nodes: list[Any]) -> Iterator[Token]:
    for system, code, display, type_system, type_code in _tokens(nodes):
        yield capped_code(system), capped_code(code), display, type_system, type_code


def _tokens(nodes: list[Any]) -> Iterator[Token]:
    for node in nodes:
        if isinstance(node, bool):
            yield None, "true" if node else "false", None, None, None
        elif isinstance(node, str | int | Decimal):
            yield None, str(node), None, None, None
        elif isinstance(node, dict):
            yield from _token_dict(node)


def _token_dict(node: dict[str, Any]) -> Iterator[Token]:
    if "coding" in node or ("text" in node and "code" not in node and "value" not in node):
        text = node.get("text")
        for coding in node.get("coding") or []:
            if isinstance(coding, dict):
                yield from _coding(coding, fallback_text=text)
        if isinstance(text, str):
            yield None, None, normalize(text), None, None
    elif "value" in node and (
        "system" in node or "use" in node or "type" in node or "assigner" in node
    ):
        yield from _identifier_or_contact(node)
    elif "code" in node or "system" in node:
        yield from _coding(node, fallback_text=None)
    elif "value" in node:
        yield from _identifier_or_contact(node)


def _coding(coding: dict[str, Any], fallback_text: Any) -> Iterator[Token]:
    display = coding.get("display")
    shown = display if isinstance(display, str) else fallback_text
    yield (
        _str(coding.get("system")),
        _str(coding.get("code")),
        normalize(shown) if isinstance(shown, str) else None,
        None,
        None,
    )


def _identifier_or_contact(node: dict[str, Any]) -> Iterator[Token]:
    """Identifier (system|value, with its type for :of-type) or ContactPoint (value)."""
    value = _str(node.get("value"))
    system = _str(node.get("system"))
    if system in ("phone", "fax", "email", "pager", "url", "sms", "other"):
        system = None  # a ContactPoint: its "system" is a kind, not a namespace
    raw_type = node.get("type")
    id_type: dict[str, Any] = raw_type if isinstance(raw_type, dict) else {}
    type_text = id_type.get("text")
    display = normalize(type_text) if isinstance(type_text, str) else None
    yield system, value, display, None, None
    for coding in id_type.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            yield system, value, display, _str(coding.get("system")), _str(coding.get("code"))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------ reference

# (target_type, target_id, url, identifier_system, identifier_value)
Ref = tuple[str | None, str | None, str | None, str | None, str | None]
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_ABSOLUTE = re.compile(r"^https?://.+/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


# A literal reference to a version (`Patient/1/_history/2`, absolute or relative), as the
# resource it names and the version part
_VERSIONED = re.compile(r"^(.*?(?:^|/)[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(/_history/[^/]+)$")


def versionless(reference: str) -> str:
    """`…Patient/1/_history/2` -> `…Patient/1`; any other text as it is."""
    match = _VERSIONED.match(reference)
    return match.group(1) if match else reference


def parse_reference(reference: str) -> tuple[str | None, str | None]:
    """'Patient/1', '.../fhir/Patient/1/_history/2' -> ('Patient', '1'); else (None, None)."""
    match = _RELATIVE.match(reference) or _ABSOLUTE.match(reference)
    return (match.group(1), match.group(2)) if match else (None, None)


def reference_values(nodes: list[Any]) -> Iterator[Ref]:
    for node in nodes:
        if isinstance(node, str):  # canonical / uri references
            rtype, rid = parse_reference(node)
            yield rtype, rid, node, None, None
        elif isinstance(node, dict):
            yield from _reference_dict(node)


def _reference_dict(node: dict[str, Any]) -> Iterator[Ref]:
    reference = node.get("reference")
    identifier = node.get("identifier") if isinstance(node.get("identifier"), dict) else None
    if isinstance(reference, str) and reference.startswith("#"):
        # a contained resource: the indexer resolves it (indexer._add_contained)
        declared = node.get("type")
        yield (declared if isinstance(declared, str) else None), None, reference, None, None
    elif isinstance(reference, str):
        rtype, rid = parse_reference(reference)
        if rtype is None and isinstance(node.get("type"), str):
            rtype = node["type"]
        url = reference if reference.startswith(("http:", "https:", "urn:")) else None
        yield rtype, rid, url, None, None
    if identifier is not None:
        yield None, None, None, _str(identifier.get("system")), _str(identifier.get("value"))


# ------------------------------------------------------------------ date


def date_values(nodes: list[Any]) -> Iterator[tuple[int, int]]:
    for node in nodes:
        if isinstance(node, str):
            span = date_range(node)
            if span:
                yield span
        elif isinstance(node, dict):
            yield from _date_dict(node)


def _date_dict(node: dict[str, Any]) -> Iterator[tuple[int, int]]:
    if "start" in node or "end" in node:  # Period: open ends reach to the sentinels
        start = date_range(node["start"]) if isinstance(node.get("start"), str) else None
        end = date_range(node["end"]) if isinstance(node.get("end"), str) else None
        if start or end:
            yield (start[0] if start else MIN_TIME), (end[1] if end else MAX_TIME)
    elif "event" in node or "repeat" in node:  # Timing: from its first to its last event
        spans = [
            s for e in node.get("event") or [] if isinstance(e, str) for s in [date_range(e)] if s
        ]
        bounds = (node.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            spans.extend(_date_dict(bounds))
        if spans:
            yield min(s[0] for s in spans), max(s[1] for s in spans)


# The zone as FHIR's dateTime has it: at most 14 hours off UTC (`+15:00` was taken as given)
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
    r"(Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))?)?)?)?$"
)


def date_range(value: str) -> tuple[int, int] | None:
    """[low, high) in µs for a FHIR date/dateTime/instant of any precision; None if invalid.

    A value without a timezone is taken as UTC (the server's zone).
    """
    match = _DATE.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if hour is None:
            low = parse_instant(value[:10] if day else value)
            month_number = int(month) if month else None
            day_number = int(day) if day else None
            return low, _next_calendar(int(year), month_number, day_number)
        if second == "60":  # a leap second (FHIR allows it; Python has none)
            return _leap_second(f"{value.strip()[:17]}59{zone or 'Z'}")
        low = parse_instant(value if zone else value + "Z")
    except ValueError:
        return None
    if fraction:
        digits = len(fraction) - 1
        return low, low + max(1, 10 ** max(0, 6 - digits))
    return low, low + (1_000_000 if second else 60_000_000)


def _leap_second(second_before: str) -> tuple[int, int]:
    """23:59:60 is the last moment of its minute: the last microsecond of 23:59:59 (time in
    microseconds since 1970, like POSIX time, has no place of its own for it)."""
    end = parse_instant(second_before) + 1_000_000
    return end - 1, end


def _next_calendar(year: int, month: int | None, day: int | None) -> int:
    """The end of a date's year, month or day: the start of its last day plus a day (the
    start of the next year is no datetime after 9999, and `9999` is a valid FHIR date)."""
    month = month or 12
    day = day or calendar.monthrange(year, month)[1]
    return parse_instant(f"{year:04d}-{month:02d}-{day:02d}") + 86_400_000_000


# ------------------------------------------------------------------ number, quantity, uri


# A decimal beyond what the index column holds (1e999999 is valid JSON and a valid FHIR
# decimal) made the write, or the search, fail with a 500 on PostgreSQL (numeric: at most
# 131,072 digits before the point, 16,383 after), and SQLite keeps a double (1e-999999 became
# 0). Indexed and searched numbers are kept within bounds both hold, which leaves every
# comparison between ordinary numbers as it was.
NUMBER_LIMIT = Decimal("1e300")  # larger magnitudes index and search as this
# Beyond every indexed number: where a sort by number puts a resource without one (a
# sentinel of 1e30 put it before one with 1e50, against "without a value last").
NUMBER_LAST = NUMBER_LIMIT.scaleb(1)
NUMBER_PLACES = 300  # digits after the point beyond these are rounded away
_PLACE = Decimal(1).scaleb(-NUMBER_PLACES)


def bounded(number: Decimal) -> Decimal:
    """number within what the index column holds (same sign; ordinary numbers unchanged)."""
    if number.copy_abs() > NUMBER_LIMIT:  # copy_abs: abs() would round, and overflow
        return NUMBER_LIMIT.copy_sign(number)
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= -NUMBER_PLACES:
        return number
    if number.adjusted() < -NUMBER_PLACES:  # nearer zero than the last place: that place
        return _PLACE.copy_sign(number)
    # enough precision for every digit that stays (the default context keeps 28)
    context = Context(prec=number.adjusted() + NUMBER_PLACES + 2)
    return number.quantize(_PLACE, context=context)


def number_values(nodes: list[Any]) -> Iterator[Decimal]:
    for node in nodes:
        number = as_decimal(node)
        if number is not None:
            yield bounded(number)


def as_decimal(value: Any) -> Decimal | None:
    """A JSON number as a Decimal. Bodies parsed from JSON hold Decimals (app.fhir.jsonio);
    one built in Python (a caller of FhirService in process) may hold floats, which the
    stored JSON writes as their shortest repr, so that is the number indexed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    return None


# (value, system, code, unit, canonical value, canonical code)
Qty = tuple[Decimal, str | None, str | None, str | None, Decimal | None, str | None]


def quantity_values(nodes: list[Any]) -> Iterator[Qty]:
    for node in nodes:
        if not isinstance(node, dict):
            continue
        value = as_decimal(node.get("value"))
        if value is not None:
            code = _str(node.get("code")) or _str(node.get("currency"))
            unit = _str(node.get("unit"))
            system = _quantity_system(node)
            number = bounded(value)
            # the unit text stands in for a missing code, as it does in search (criteria.py)
            coded = code if code is not None else unit
            canonical_value, canonical_code = canonical_quantity(number, system, coded)
            yield number, system, capped_code(code), unit, canonical_value, canonical_code


@functools.lru_cache(maxsize=8192)
def canonical_quantity(
    value: Decimal, system: str | None, code: str | None
) -> tuple[Decimal | None, str | None]:
    """A UCUM quantity in base units (`5.4 mg`: 0.0054, "g"); (None, None) for any other
    system, or a code that does not convert by a factor (Cel, [degF], an invalid code).

    Cached: a write meets the same quantity in several parameters (value-quantity and the
    composites), and devices send the same readings over and over."""
    if system != ucum.UCUM_SYSTEM or code is None:
        return None, None
    converted = ucum.to_canonical(value, code)
    if converted is None:
        return None, None
    return bounded(converted[0]), capped_code(converted[1])


# Money's currency is an ISO 4217 code, which a Quantity names by this system (R4 datatypes,
# MoneyQuantity): so `price=12.5|urn:iso:std:iso:4217|EUR` finds Money{12.5, EUR}.
ISO_4217 = "urn:iso:std:iso:4217"


def _quantity_system(node: dict[str, Any]) -> str | None:
    if isinstance(node.get("currency"), str):
        return ISO_4217
    return _str(node.get("system"))


def uri_values(nodes: list[Any]) -> Iterator[str]:
    for node in nodes:
        if isinstance(node, str):
            yield capped(node)


def to_decimal(text: str) -> Decimal | None:
    if "_" in text:  # Python reads `1_000` as 1000; FHIR has no such number
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
