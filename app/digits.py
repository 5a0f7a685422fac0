"""Whole numbers a client writes in a URL, a header or a message field.

`int()` alone is the wrong reader for them: it takes any Unicode digit ("٣"), refuses "²"
(which `str.isdigit()` accepts) and refuses more than 4,300 digits, which made a 500 of
`_history/<5,000 digits>` and `_count=<5,000 digits>`. Every such field is read here.
"""

from __future__ import annotations


def whole_number(text: str, cap: int) -> int | None:
    """`text` as a whole number, `cap` if it is larger; None unless it is ASCII digits only."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(cap)):
        return cap
    return min(int(significant), cap)
