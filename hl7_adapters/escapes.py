"""ER7 delimiters and escape sequences (HL7 v2 chapter 2, "escape sequences in text fields").

Values are split on the raw text first and unescaped afterwards: an escaped delimiter
(``\\S\\``) never contains the delimiter itself, so splitting before unescaping is exact. The
tokenizer therefore keeps raw values and unescapes only on access, which also keeps the hot path
cheap for the many values that contain no escape character at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hl7_adapters.charsets import FALLBACK_ERRORS


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators of one message: MSH-1 and the 4 or 5 characters of MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # v2.7+ fifth encoding character ('#'); '' when MSH-2 has four

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it should be written back (e.g. in an ACK to this message)."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()

_SIMPLE = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape"}
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_FORMAT = re.compile(r"\.(sp|br|fi|nf|in|ti|sk|ce)\s*([+-]?\d*)")
_MAX_REPEAT = 100  # bound \.sp 99999\ so a hostile value cannot blow up memory


def _formatting(command: str, count: str) -> str:
    """Formatted-text (FT) commands as plain text: line breaks stay line breaks, layout goes."""
    n = int(count) if count.lstrip("+-").isdigit() else 1
    n = max(0, min(abs(n), _MAX_REPEAT))
    if command in ("br", "ce"):
        return "\n"
    if command == "sp":
        return "\n" * max(n, 1)
    if command == "sk":
        return " " * n
    return ""  # .fi .nf .in .ti: fill mode and indentation have no plain-text meaning


def _translate(seq: str, d: Delimiters, codec: str, formatting: bool) -> str | None:
    """The text for one escape sequence (without its escape characters), None if unknown."""
    simple = _SIMPLE.get(seq)
    if simple is not None:
        return str(getattr(d, simple))
    if seq == "P":
        return d.truncation or None
    if not seq:
        return None
    head = seq[0]
    if head == "X" and _HEX.fullmatch(seq, 1):
        return bytes.fromhex(seq[1:]).decode(codec, errors=FALLBACK_ERRORS)
    if not formatting:
        return None
    if seq in ("H", "N"):
        return ""  # highlighting on/off
    match = _FORMAT.fullmatch(seq)
    if match:
        return _formatting(match.group(1), match.group(2))
    return None  # \Z..\ (local), \C..\ / \M..\ (ISO 2022 switching): kept verbatim


def unescape(value: str, d: Delimiters, codec: str = "utf-8", *, formatting: bool = True) -> str:
    """Resolve escape sequences in one leaf value. Unknown or unterminated ones stay verbatim.

    ``formatting`` turns FT commands (``\\.br\\``, ``\\.sp\\``, ``\\H\\``...) into plain text
    line breaks; switch it off to keep them as they were sent.
    """
    esc = d.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        start = value.find(esc, pos)
        if start < 0:
            out.append(value[pos:])
            break
        out.append(value[pos:start])
        stop = value.find(esc, start + 1)
        if stop < 0:
            out.append(value[start:])
            break
        text = _translate(value[start + 1 : stop], d, codec, formatting)
        if text is None:
            # Unknown: keep it as sent, and resume at the closing escape so that a literal
            # backslash (e.g. a Windows path) does not swallow the next real sequence.
            out.append(value[start:stop])
            pos = stop
            continue
        out.append(text)
        pos = stop + 1
    return "".join(out)


def escape(value: str, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """Escape a plain value for writing into an ER7 message (used for ACK texts)."""
    out: list[str] = []
    e = d.escape
    table = {
        d.escape: f"{e}E{e}",
        d.field: f"{e}F{e}",
        d.component: f"{e}S{e}",
        d.repetition: f"{e}R{e}",
        d.subcomponent: f"{e}T{e}",
        "\r": f"{e}X0D{e}",
        "\n": f"{e}X0A{e}",
    }
    if d.truncation:
        table[d.truncation] = f"{e}P{e}"
    for ch in value:
        out.append(table.get(ch, ch))
    return "".join(out)
