"""Generate ``fhir_profiles/ucum.json``: UCUM's prefixes and unit atoms resolved to base units.

Usage::

    python -m fhir_profiles.generate_ucum [--package-dir DIR]

Without ``--package-dir`` the npm package ``@lhncbc/ucum-lhc`` (the National Library of
Medicine's UCUM library) is fetched with ``npm pack``; its ``data/ucumDefs.min.json`` carries
UCUM's definitions (ucum-essence.xml) as JSON. Only the rows whose source is ``UCUM`` are
used (the package adds LOINC's combinations, such as ``mm[Hg]``, which the parser forms from
the prefix and the atom anyway), and of each only what the essence says: the code, whether it
is a base unit, metric, special or arbitrary, and its definition (a value times a unit
expression: ``[lb_av]`` is 7000 ``[gr]``). The package's own computed magnitudes (floating
point) are not used.

Each atom is resolved, through the definitions it names, to a factor (exact decimal arithmetic,
34 digits) times base units, with app.fhir.ucum's own parser. Special units (Cel, [degF],
[pH], B, Np ...) are left out: their conversions are not multiplications, so expressions with
them do not convert. An arbitrary unit defined as ``1`` is a base of its own.

Output (compact, deterministic)::

    {"source": "...", "prefixes": {code: factor},
     "units": {code: [metric (0|1), factor, [[base, exponent], ...]]}}
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.fhir import ucum
from fhir_profiles import generate_core_tables as core

NPM_PACKAGE = "@lhncbc/ucum-lhc@7.1.10"
DEFS_FILE = "ucumDefs.min.json"
OUT_FILE = Path(__file__).resolve().parent / "ucum.json"
BASE_UNITS = ("m", "s", "g", "rad", "K", "C", "cd")

Json = dict[str, Any]


def load_definitions(package_dir: Path) -> tuple[dict[str, Decimal], dict[str, Json]]:
    """(prefix -> factor, code -> essence row) of the UCUM rows of the package's table."""
    data = json.loads((package_dir / DEFS_FILE).read_text(encoding="utf-8"))
    prefix_columns = data["prefixes"]["config"]
    prefixes: dict[str, Decimal] = {}
    for raw in data["prefixes"]["data"]:
        row = dict(zip(prefix_columns, raw, strict=True))
        # decimal prefixes by their exponent (the values are floating point: 1e-24 ...)
        exp = row["exp_"]
        prefixes[row["code_"]] = Decimal(1).scaleb(int(exp)) if exp else Decimal(row["value_"])
    unit_columns = [c if isinstance(c, str) else c[0] for c in data["units"]["config"]]
    units = {}
    for raw in data["units"]["data"]:
        row = dict(zip(unit_columns, raw, strict=True))
        if row["source_"] == "UCUM":
            units[row["csCode_"]] = row
    return prefixes, units


def resolve(prefixes: dict[str, Decimal], rows: dict[str, Json]) -> dict[str, ucum.Atom]:
    """Every convertible atom as a factor times base units."""
    done: dict[str, ucum.Atom | None] = {}

    def atom(code: str) -> ucum.Atom | None:
        if code not in done:
            done[code] = None  # a definition that names itself (none does) would not loop
            done[code] = _resolve_one(code)
        return done[code]

    def _resolve_one(code: str) -> ucum.Atom | None:
        row = rows.get(code)
        if row is None or row["isSpecial_"]:
            return None
        metric = bool(row["isMetric_"])
        if row["isBase_"]:  # every base unit is metric (the essence's <base-unit> has no flag)
            return ucum.Atom(Decimal(1), ((code, 1),), True)
        if row["isArbitrary_"] and row["csUnitString_"] == "1":
            return ucum.Atom(Decimal(1), ((code, 1),), metric)
        parsed = ucum.parse(row["csUnitString_"], atom, prefixes)
        if parsed is None:
            return None
        factor, dims = parsed
        value = Decimal(row["baseFactorStr_"])
        return ucum.Atom(ucum.CONTEXT.multiply(value, factor), dims, metric)

    resolved = {code: atom(code) for code in sorted(rows)}
    return {code: found for code, found in resolved.items() if found is not None}


def run(package_dir: Path, out: Path) -> str:
    prefixes, rows = load_definitions(package_dir)
    missing = [b for b in BASE_UNITS if not rows.get(b, {}).get("isBase_")]
    if missing:
        raise SystemExit(f"the package's table lacks the base units {missing}")
    atoms = resolve(prefixes, rows)
    table = {
        "source": f"UCUM definitions (ucum-essence) from the npm package {NPM_PACKAGE}",
        "prefixes": {code: _text(value) for code, value in sorted(prefixes.items())},
        "units": {
            code: [int(a.metric), _text(a.factor), [list(d) for d in a.dims]]
            for code, a in sorted(atoms.items())
        },
    }
    core.write_json(out, table)
    left_out = sorted(set(rows) - set(atoms))
    return f"ucum: {len(prefixes)} prefixes, {len(atoms)} units; not convertible: {left_out}"


def _text(value: Decimal) -> str:
    return str(value.normalize(ucum.CONTEXT))


def main(argv: list[str] | None = None) -> int:
    return core.generator_main(
        argv,
        description=__doc__.split("\n", 1)[0],
        run_generator=run,
        default_out=OUT_FILE,
        prefixes=(DEFS_FILE,),
        package=NPM_PACKAGE,
    )


if __name__ == "__main__":
    sys.exit(main())
