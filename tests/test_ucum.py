"""UCUM codes to canonical units (app/fhir/ucum.py), table-driven: known factors between
comparable units, units that are not comparable, codes that do not convert."""

from __future__ import annotations

from decimal import Context, Decimal

import pytest

from app.fhir import ucum


def _in(value: str, code: str, target: str) -> Decimal:
    """`value` `code` expressed in `target` (both must convert, to the same base units)."""
    source, goal = ucum.canonical(code), ucum.canonical(target)
    assert source is not None and goal is not None, (code, target)
    assert source.unit == goal.unit, (code, target)
    # factors with a division in them (/min) are rounded in their 34th digit
    exact = ucum.CONTEXT.divide(ucum.CONTEXT.multiply(Decimal(value), source.factor), goal.factor)
    return exact.normalize(Context(prec=24))


@pytest.mark.parametrize(
    ("value", "code", "target", "expected"),
    [
        ("1", "mg/dL", "g/L", "0.01"),
        ("1", "mmol/L", "umol/mL", "1"),
        ("1", "[lb_av]", "kg", "0.45359237"),
        ("2", "h", "min", "120"),
        ("60", "/min", "/s", "1"),
        ("1", "10*3/uL", "10*9/L", "1"),
        ("1", "10^3/uL", "10*9/L", "1"),
        ("1", "mm[Hg]", "kPa", "0.133322"),  # multiplicative in UCUM: 133.3220 kPa per m[Hg]
        ("1", "[in_i]", "cm", "2.54"),
        ("5", "%", "1", "0.05"),
        ("1", "k[IU]/L", "[IU]/mL", "1"),
        ("1", "[IU]", "[iU]", "1"),  # [IU] is defined as [iU]
        ("1", "kg.m-2", "g/cm2", "0.1"),
        ("1", "kg/m2", "kg.m-2", "1"),
        ("1", "/[HPF]", "1", "1"),  # a leading / inverts; [HPF] is dimensionless 1
        ("3", "10*3{cells}/uL", "10*3/uL", "3"),  # annotations mean nothing to the unit
        ("1", "mL/min/{1.73_m2}", "L/h", "0.06"),
        ("1", "m/s/s", "m.s-2", "1"),  # left to right: (m/s)/s
        ("1", "(m/s)", "m/s", "1"),
        ("1", "cd", "cd", "1"),  # candela, not centi-day
        ("1", "Pa", "N/m2", "1"),  # pascal, not peta-year
        ("1", "dam", "m", "10"),  # the two-letter prefix
        ("1", "KiBy", "By", "1024"),  # binary prefixes
        ("1", "mol/L", "mmol/mL", "1"),
        ("1", "kcal", "cal", "1000"),
        ("1", "[ft_i]", "[in_i]", "12"),
        ("1", "a", "d", "365.25"),  # the mean Julian year
    ],
)
def test_comparable_units_convert_by_their_factor(
    value: str, code: str, target: str, expected: str
) -> None:
    assert _in(value, code, target) == Decimal(expected).normalize()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("mg", "mL"),
        ("kg", "m"),
        ("[IU]", "mg"),  # arbitrary units compare with themselves only
        ("[IU]", "[arb'U]"),
        ("[IU]", "1"),
        ("/min", "min"),
        ("mg/dL", "mmol/L"),  # a mass and an amount of substance
    ],
)
def test_incomparable_units_have_different_canonical_units(first: str, second: str) -> None:
    a, b = ucum.canonical(first), ucum.canonical(second)
    assert a is not None and b is not None
    assert a.unit != b.unit


@pytest.mark.parametrize(
    "code",
    [
        "Cel",  # affine: not a multiplication
        "[degF]",
        "[pH]",  # logarithmic
        "B[SPL]",
        "mCel",
        "Cel/s",  # an expression holding a special unit
        "",
        "m..g",
        "/",
        "mg/",
        ".mg",
        "{x}}",
        "m{a",
        "[lb_av",
        "xyz",
        "mg ",
        "kmin",  # min is not metric: no prefixes
    ],
)
def test_codes_that_do_not_convert(code: str) -> None:
    assert ucum.canonical(code) is None


def test_canonical_units_are_written_in_base_units() -> None:
    assert ucum.canonical("mg/dL") == ucum.Canonical(Decimal(10), "g.m-3")
    assert ucum.canonical("kg") == ucum.Canonical(Decimal(1000), "g")
    assert ucum.canonical("{score}") == ucum.Canonical(Decimal(1), "1")
    assert ucum.to_canonical(Decimal("5.4"), "mg") == (Decimal("0.0054"), "g")
    assert ucum.to_canonical(Decimal("5.4"), "Cel") is None


def test_the_table_is_ucums_every_non_special_unit() -> None:
    """fhir_profiles/ucum.json holds UCUM's definitions resolved: 290 of its 311 atoms, the
    21 special units (Cel, [degF], B..., Np, [pH] ...) left out."""
    atoms, prefixes = ucum._table()
    assert len(atoms) == 290 and len(prefixes) == 24
    assert not {"Cel", "[degF]", "[pH]", "Np", "B"} & set(atoms)
    assert atoms["[lb_av]"] == ucum.Atom(Decimal("453.59237"), (("g", 1),), False)
