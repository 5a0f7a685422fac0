"""The one table look-up of the HL7 mapping (hl7_adapters/mapping/lookups.py): a hit is the
table's value, a miss an ERR 103 warning, an empty required code an ERR 101 warning, each
at the field (and component) the caller names, with the caller's text."""

from __future__ import annotations

from hl7_adapters.er7 import parse_message
from hl7_adapters.mapping.context import MapContext, Where
from hl7_adapters.mapping.lookups import look_up

TABLE = {"Y": True, "N": False}


def where() -> tuple[MapContext, Where]:
    msg = parse_message(b"MSH|^~\\&|A|B|C|D|20261122+0000||ADT^A01|1|P|2.5\rPV1|1|I\rPV1|2|O\r")
    ctx = MapContext(msg)
    second = msg.segment_list[2]
    return ctx, ctx.at(second, 22)


def warnings(ctx: MapContext) -> list[tuple[int, str, str, int, int | None, int | None]]:
    return [(w.code, w.text, w.severity, w.sequence, w.field, w.component) for w in ctx.warnings]


def test_a_hit_is_the_value_upper_cased_and_silent() -> None:
    ctx, at = where()
    assert look_up(TABLE, "n", at, "never") is False  # a falsy value is still found
    assert look_up(frozenset({"AB"}), "ab", at, "never") == "AB"  # a set: the code itself
    assert ctx.warnings == [] and ctx.errors == []


def test_a_miss_is_a_103_warning_with_the_callers_text_and_location() -> None:
    ctx, at = where()
    unknown = "{name}: '{code}' is not Y or N; left out"
    assert look_up(TABLE, "maybe", at, unknown, component=2) is None
    assert look_up(frozenset({"AB"}), "{x}", at, "'{code}' unknown") is None  # sent literally
    assert warnings(ctx) == [
        (103, "PV1-22: 'maybe' is not Y or N; left out", "W", 2, 22, 2),
        (103, "'{x}' unknown", "W", 2, 22, None),
    ]


def test_an_empty_code_is_101_only_when_the_caller_needs_one() -> None:
    ctx, at = where()
    assert look_up(TABLE, "", at, "'{code}' unknown", empty="PV1-22 is empty") is None
    assert look_up(TABLE, "", at, "'{code}' unknown") is None  # looked up like any code
    assert warnings(ctx) == [
        (101, "PV1-22 is empty", "W", 2, 22, None),
        (103, "'' unknown", "W", 2, 22, None),
    ]
