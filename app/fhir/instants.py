"""FHIR instants and HTTP dates <-> the integer microseconds we store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

_DATE_ONLY = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def to_instant(us: int) -> str:
    """e.g. 2026-11-21T14:30:00.123456Z (microseconds, the precision we store)."""
    seconds, micros = divmod(us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")  # faster than strftime


def to_http_date(us: int) -> str:
    return format_datetime(datetime.fromtimestamp(us // 1_000_000, UTC), usegmt=True)


def _to_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(microseconds=1)


def parse_instant(value: str) -> int:
    """A FHIR instant/dateTime/date as a lower bound in microseconds; ValueError if unparseable.

    A date without time (2026, 2026-11, 2026-11-21) means its first moment in UTC; a time
    without zone is taken as UTC (the spec requires a zone when time is given; we are lenient).
    """
    value = value.strip()
    match = _DATE_ONLY.match(value)
    if match:
        year, month, day = match.groups()
        return _to_us(datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC))
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _to_us(moment)


def parse_http_date(value: str) -> int | None:
    try:
        return _to_us(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None
