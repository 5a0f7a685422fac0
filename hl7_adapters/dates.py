"""HL7 v2 DT/DTM/TS values to FHIR date and dateTime strings, keeping the sent precision.

HL7 DTM is ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``. Real feeds send invalid ones
(``196203520``, a 16-digit v2.2 stamp, ``20240230``); a bad date must not reject a whole
message, so these functions return None instead of raising and the mapper decides what to do.

FHIR has no minute or hour precision for dateTime: a value with hours but no seconds is
completed with ``:00`` seconds (as the v2-to-FHIR IG does). A date-only value drops any offset,
because FHIR dates carry none. A value with a time but without an offset is NOT valid FHIR
(a dateTime with a time needs a zone): the caller supplies the sender's zone with
``default_offset``, or keeps only the date (mapping/context.py does the latter, with a warning).
"""

from __future__ import annotations

import calendar
import re

_DTM = re.compile(
    r"(?P<y>\d{4})(?:(?P<mo>\d{2})(?:(?P<d>\d{2})(?:(?P<h>\d{2})(?:(?P<mi>\d{2})"
    r"(?:(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?)?)?)?)?)?(?P<tz>[+-]\d{4})?"
)


def _offset(tz: str | None) -> str | None:
    """'+0130' -> '+01:30'; None for an impossible offset."""
    if not tz:
        return ""
    hours, minutes = int(tz[1:3]), int(tz[3:5])
    if minutes > 59 or hours > 14 or (hours == 14 and minutes):
        return None
    return f"{tz[0]}{tz[1:3]}:{tz[3:5]}"


def _valid_date(year: int, month: int | None, day: int | None) -> bool:
    if year < 1:
        return False
    if month is None:
        return True
    if not 1 <= month <= 12:
        return False
    return day is None or 1 <= day <= calendar.monthrange(year, month)[1]


def to_fhir_datetime(value: str, default_offset: str | None = None) -> str | None:
    """An HL7 DTM/TS (first component) as a FHIR dateTime, or None when it is not a valid date.

    ``default_offset`` ('+01:00') is applied when the value has a time but no offset.
    """
    match = _DTM.fullmatch(value.strip())
    if match is None:
        return None
    g = match.groupdict()
    year = int(g["y"])
    month = int(g["mo"]) if g["mo"] else None
    day = int(g["d"]) if g["d"] else None
    if not _valid_date(year, month, day):
        return None
    tz = _offset(g["tz"])
    if tz is None:
        return None
    out = g["y"]
    if month is None:
        return out
    out += f"-{g['mo']}"
    if day is None:
        return out
    out += f"-{g['d']}"
    if g["h"] is None:
        return out
    hour, minute, second = int(g["h"]), int(g["mi"] or 0), int(g["s"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    out += f"T{g['h']}:{g['mi'] or '00'}:{g['s'] or '00'}"
    if g["f"]:
        out += f".{g['f']}"
    if not tz and default_offset:
        tz = default_offset
    return out + tz


def to_fhir_date(value: str) -> str | None:
    """An HL7 DT/DTM as a FHIR date (e.g. a birth date): any time part is dropped."""
    full = to_fhir_datetime(value)
    return None if full is None else full[:10]
