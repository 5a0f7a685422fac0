"""UCUM unit expressions: parse them and convert a value to its canonical form.

A UCUM code (``mg/dL``, ``10*3/uL``, ``mm[Hg]``, ``/min``, ``kg.m-2``, ``{cells}/uL``) is a
product of atoms, each with an optional metric prefix and an integer exponent, joined by
``.`` and ``/`` (left to right, one precedence; a leading ``/`` inverts what follows), with
parentheses, integer factors (``/100``) and annotations (``{...}``, which UCUM gives no
meaning: ``10*3{cells}/uL`` is ``10*3/uL``). Its canonical form is a factor and a product of
UCUM's base units (m, s, g, rad, K, C, cd) with exponents, written ``g.m-3``; two codes with the
same canonical unit are comparable, and ``value * factor`` is the value in that unit.

Only multiplicative conversions are made ("comparable units canonicalized where UCUM allows
simply", issue #3): special units (Cel, [degF], [pH], B, Np ...: affine or logarithmic) are
not convertible, and nor is any expression containing one. Arbitrary units ([IU], [arb'U],
[CFU] ...) are comparable only with themselves: each is a base of its own (``k[IU]`` is
1000 ``[IU]``; ``[IU]`` is defined as ``[iU]``, so those two are the same).

The atoms and prefixes are UCUM's own definitions (ucum-essence), resolved to base units by
``fhir_profiles/generate_ucum.py`` into ``fhir_profiles/ucum.json``; the same parser below
resolves the definitions there and parses codes here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Context, Decimal
from pathlib import Path

import fhir_profiles

UCUM_SYSTEM = "http://unitsofmeasure.org"
DATA_NAME = "ucum.json"  # in fhir_profiles/

# Definitions carry up to 64 digits ([pi]); 34 keep every exact one exact and round the
# rest (1/[lb_av] ...) far below any precision a search or a comparison asks for.
CONTEXT = Context(prec=34)

Dims = tuple[tuple[str, int], ...]  # (base unit, exponent), sorted by base, no zeros


@dataclass(frozen=True)
class Atom:
    """A unit atom as a factor times base units; `metric`: it takes prefixes."""

    factor: Decimal
    dims: Dims
    metric: bool


@dataclass(frozen=True)
class Canonical:
    """A code's canonical form: 1 code = `factor` `unit` (unit: base units, ``g.m-3``)."""

    factor: Decimal
    unit: str


AtomLookup = Callable[[str], Atom | None]

_EXPONENT = re.compile(r"^(.+?)([+-]?\d+)$")


def parse(code: str, atom: AtomLookup, prefixes: dict[str, Decimal]) -> tuple[Decimal, Dims] | None:
    """(factor, dims) of a UCUM expression; None when it is not valid UCUM, or holds a unit
    that `atom` does not know (special units are left out of the table: not convertible)."""
    if not code or code.strip() != code:
        return None
    try:
        return _term(code, atom, prefixes)
    except (ArithmeticError, ValueError):
        return None


def _term(text: str, atom: AtomLookup, prefixes: dict[str, Decimal]) -> tuple[Decimal, Dims] | None:
    parts = _split(text)
    if parts is None:
        return None
    factor, dims = Decimal(1), dict[str, int]()
    for sign, component in parts:
        parsed = _component(component, atom, prefixes)
        if parsed is None:
            return None
        part_factor, part_dims = parsed
        factor = CONTEXT.multiply(factor, CONTEXT.power(part_factor, sign))
        for base, exponent in part_dims:
            dims[base] = dims.get(base, 0) + sign * exponent
    return factor, tuple(sorted((b, e) for b, e in dims.items() if e))


def _split(text: str) -> list[tuple[int, str]] | None:
    """The components of a term with their sign (1 after `.`, -1 after `/`), split where no
    bracket, brace or parenthesis is open (``[10.nV]``, ``{a/b}`` stay whole)."""
    parts: list[tuple[int, str]] = []
    depth = {"[": 0, "{": 0, "(": 0}
    closing = {"]": "[", "}": "{", ")": "("}
    sign, start = 1, 0
    for i, char in enumerate(text):
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return None
        elif char in "./" and not any(depth.values()):
            if i > 0:  # a leading "/" inverts what follows; any other empty part is invalid
                parts.append((sign, text[start:i]))
            elif char == ".":
                return None
            sign, start = (-1 if char == "/" else 1), i + 1
    if any(depth.values()):
        return None
    parts.append((sign, text[start:]))
    return parts if all(component for _, component in parts) else None


def _component(
    text: str, atom: AtomLookup, prefixes: dict[str, Decimal]
) -> tuple[Decimal, Dims] | None:
    if text.endswith("}"):  # an annotation means nothing to the unit (UCUM §12)
        opening = text.find("{")
        if opening < 0 or "}" in text[opening + 1 : -1]:
            return None
        text = text[:opening]
        if not text:
            return Decimal(1), ()
    if "{" in text or "}" in text:
        return None
    if text.startswith("(") and text.endswith(")"):
        return _term(text[1:-1], atom, prefixes)
    if text.isdigit():  # an integer factor: /100, 3937
        return Decimal(text), ()
    found = _prefixed(text, atom, prefixes)
    exponent = 1
    if found is None:
        match = _EXPONENT.match(text)
        if match is None:
            return None
        found, exponent = _prefixed(match.group(1), atom, prefixes), int(match.group(2))
        if found is None:
            return None
    factor, dims = found
    if exponent == 1:
        return factor, dims
    return CONTEXT.power(factor, exponent), tuple((b, e * exponent) for b, e in dims)


def _prefixed(
    text: str, atom: AtomLookup, prefixes: dict[str, Decimal]
) -> tuple[Decimal, Dims] | None:
    """An atom, or a prefix and a metric atom (the atom first: ``cd`` is candela, ``Pa``
    pascal, not centi-day or peta-year)."""
    unit = atom(text)
    if unit is not None:
        return unit.factor, unit.dims
    for length in (2, 1):  # "da" is the one two-letter prefix besides the binary Ki, Mi ...
        prefix = prefixes.get(text[:length])
        if prefix is None or len(text) <= length:
            continue
        unit = atom(text[length:])
        if unit is not None and unit.metric:
            return CONTEXT.multiply(prefix, unit.factor), unit.dims
    return None


def unit_text(dims: Dims) -> str:
    """``(("g", 1), ("m", -3))`` -> ``g.m-3``; no dimension at all -> ``1``."""
    return ".".join(f"{b}{'' if e == 1 else e}" for b, e in dims) or "1"


# ------------------------------------------------------------------ the table


def _data_file() -> Path:
    for entry in fhir_profiles.__path__:  # a package or a namespace package
        candidate = Path(entry) / DATA_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"fhir_profiles/{DATA_NAME} is missing (python -m fhir_profiles.generate_ucum)"
    )


@functools.cache
def _table() -> tuple[dict[str, Atom], dict[str, Decimal]]:
    data = json.loads(_data_file().read_text(encoding="utf-8"))
    prefixes = {code: Decimal(value) for code, value in data["prefixes"].items()}
    atoms = {
        code: Atom(Decimal(factor), tuple((b, e) for b, e in dims), bool(metric))
        for code, (metric, factor, dims) in data["units"].items()
    }
    return atoms, prefixes


@functools.lru_cache(maxsize=4096)
def canonical(code: str) -> Canonical | None:
    """The canonical form of a UCUM code, None when it does not convert (cached: devices
    send the same few codes over and over)."""
    atoms, prefixes = _table()
    parsed = parse(code, atoms.get, prefixes)
    if parsed is None:
        return None
    factor, dims = parsed
    return Canonical(factor.normalize(CONTEXT), unit_text(dims))


def to_canonical(value: Decimal, code: str) -> tuple[Decimal, str] | None:
    """`value` `code` in canonical units: (value, unit), or None when the code does not
    convert."""
    found = canonical(code)
    if found is None:
        return None
    return CONTEXT.multiply(value, found.factor), found.unit
