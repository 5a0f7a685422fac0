"""FHIR JSON in and out without losing what the client wrote.

Python's float loses decimal precision (``1.50`` -> ``1.5``), and FHIR decimals are
significant to their last digit. We parse every JSON number with a fraction or exponent
into :class:`DecimalLiteral`, which remembers the exact literal, and write it back
verbatim through ``orjson.Fragment``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal
from typing import Any

import orjson


class DecimalLiteral(Decimal):
    """A Decimal that also keeps the literal text it was parsed from."""

    literal: str

    def __new__(cls, literal: str) -> DecimalLiteral:
        value = super().__new__(cls, literal)
        value.literal = literal
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (DecimalLiteral, (self.literal,))

    def __deepcopy__(self, memo: dict[int, Any]) -> DecimalLiteral:
        return self

    def __copy__(self) -> DecimalLiteral:
        return self


class IntegerLiteral(DecimalLiteral):
    """An integer literal a Python int would not give back verbatim: ``-0`` (it would become
    ``0``) and anything beyond 64 bits (orjson cannot write such ints). Still a JSON integer
    (``bindings`` accepts it where an integer belongs); written back exactly as sent."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (IntegerLiteral, (self.literal,))


_INT64_DIGITS = len(str(2**63))


def parse_int(literal: str) -> int | IntegerLiteral:
    """A JSON integer literal: an int when that writes back the same, else IntegerLiteral."""
    if len(literal) > _INT64_DIGITS + 1:  # beyond 64 bits whatever the digits: and past
        return IntegerLiteral(literal)  # 4,300 digits Python refuses int() altogether
    if literal == "-0" or len(literal) >= _INT64_DIGITS:
        value = int(literal)
        if literal == "-0" or not -(2**63) <= value < 2**64:
            return IntegerLiteral(literal)
        return value
    return int(literal)


class RawJson:
    """Stored resource bytes embedded in a response without re-encoding."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def parse(self) -> Any:
        return loads(self.data)


def materialize(value: Any) -> Any:
    """Replace every RawJson inside `value` with its parsed form (for XML, _pretty, shaping)."""
    if isinstance(value, RawJson):
        return value.parse()
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


class FhirJsonError(ValueError):
    """The body is not JSON a FHIR server can accept."""


# How deeply objects and arrays may nest in one body. Real FHIR stays far below (a Bundle of
# Questionnaires with items ten deep is about 30); past a few hundred levels the recursive
# code downstream (model validation, XML output) would overflow Python's stack.
MAX_DEPTH = 128


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse `value` if objects and arrays nest more than `limit` deep. The walk goes no
    deeper than `limit` + 1 levels, so any input can be measured."""
    if _deeper_than(value, limit):
        raise FhirJsonError(f"objects and arrays nest more than {limit} levels deep")


def _deeper_than(value: Any, levels: int) -> bool:
    """Does `value` (a dict or list) nest more than `levels` deep? Every body passes here, a
    100-entry Bundle has some 1,200 containers: exact type checks, no per-item tuples (an
    iterative walk cost 0.7 ms per such Bundle, this a fraction)."""
    if levels == 0:
        return True
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if (kind is dict or kind is list) and _deeper_than(item, levels - 1):
            return True
    return False


def _reject_constant(name: str) -> Any:
    raise FhirJsonError(f"{name} is not a valid JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose property names are unique: with a name twice, which value was meant
    is unknowable (RFC 8259 4: behaviour is unpredictable), so it is refused rather than
    silently keeping the last, which a client or another parser may read differently."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise FhirJsonError(f"invalid JSON: property '{twice}' appears twice in an object")
    return obj


_decoder = json.JSONDecoder(
    parse_float=DecimalLiteral,
    parse_int=parse_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_unique_keys,
)


# A \uD800-\uDFFF escape: half of a UTF-16 surrogate pair. JSON's grammar allows one alone,
# but that is no Unicode character: it cannot be stored as UTF-8 text nor written back.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unpaired_surrogate(value: Any) -> str | None:
    """The first string (or property name) holding a lone surrogate, shortened; or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()[:60]
        return None
    if isinstance(value, dict):
        items: Any = (x for pair in value.items() for x in pair)
    elif isinstance(value, list):
        items = value
    else:
        return None
    return next((found for x in items if (found := _unpaired_surrogate(x)) is not None), None)


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping decimal literals exactly."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FhirJsonError(f"body is not UTF-8: {exc}") from exc
    else:
        text = data
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise FhirJsonError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:  # the decoder recurses once per level
        raise FhirJsonError(f"objects and arrays nest more than {MAX_DEPTH} levels deep") from exc
    except ArithmeticError as exc:  # decimal.InvalidOperation: an exponent past 999999
        raise FhirJsonError("invalid JSON: a number's exponent is out of range") from exc
    if isinstance(value, dict | list):
        check_depth(value)
    # Paired escapes (an emoji written as two) decode to one character: only where the text
    # has a surrogate escape at all is the parsed value searched for a lone half.
    if _SURROGATE_ESCAPE.search(text) and (found := _unpaired_surrogate(value)) is not None:
        raise FhirJsonError(
            f"invalid JSON: '{found}' holds an unpaired UTF-16 surrogate escape (\\uD800-"
            "\\uDFFF alone), which is not a Unicode character"
        )
    return value


def loads_stored(content: bytes) -> Any:
    """Parse content this server stored, to look into it (references, codes), not to return
    or index it: numbers become floats. A third of `loads`' cost (orjson); what orjson
    refuses (a number beyond a double's range) is parsed by `loads`."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return loads(content)


def _default(value: Any) -> Any:
    if isinstance(value, RawJson):
        return orjson.Fragment(value.data)
    if isinstance(value, DecimalLiteral):
        return orjson.Fragment(value.literal)
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """Serialize to UTF-8 JSON bytes, decimals verbatim."""
    if pretty:  # a Fragment is copied verbatim, so expand stored bytes before indenting
        return orjson.dumps(materialize(value), default=_default, option=orjson.OPT_INDENT_2)
    return orjson.dumps(value, default=_default)
