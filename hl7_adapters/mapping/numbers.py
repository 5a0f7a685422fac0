"""HL7 NM values as exact decimals: shared by every numeric OBX value type (obx, sampled)
and SPM quantities (specimen)."""

from __future__ import annotations

import re
from decimal import Decimal

_NM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def decimal(text: str) -> Decimal | None:
    """An HL7 NM as a Decimal (exact digits kept, so 4.10 stays 4.10), None if not NM."""
    text = text.strip()
    if not _NM.fullmatch(text):
        return None
    number = Decimal(text.lstrip("+"))
    return number if number == number.to_integral_value() or "." in text else number


def json_number(number: Decimal) -> Decimal | int:
    """Integers as int (FHIR JSON needs no fraction), others as Decimal (literal kept)."""
    text = str(number)
    return int(number) if "." not in text and "E" not in text.upper() else number
