"""Generate fhir_profiles/r4_core/compartments.json from the R4 CompartmentDefinitions.

For each compartment (Patient, Encounter, RelatedPerson, Practitioner, Device): resource type
-> the search parameters that put a resource of that type in the compartment. The Patient
compartment confines `patient/` scopes (app/auth/compartment.py).

    python -m fhir_profiles.generate_compartments [--package-dir DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fhir_profiles import generate_core_tables as core

OUT_FILE = Path(__file__).parent / "r4_core" / "compartments.json"
PREFIX = "CompartmentDefinition-"


def build_table(package_dir: Path) -> dict[str, dict[str, list[str]]]:
    table: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package_dir.glob(f"{PREFIX}*.json")):
        definition = json.loads(path.read_text())
        if definition.get("code") is None or path.stem == f"{PREFIX}example":
            continue
        table[definition["code"]] = {
            entry["code"]: sorted(entry["param"])
            for entry in definition.get("resource", [])
            if entry.get("param")
        }
    return table


def run(package_dir: Path, out_file: Path) -> str:
    table = build_table(package_dir)
    core.write_json(out_file, table)
    sizes = ", ".join(f"{code} {len(types)} types" for code, types in table.items())
    return f"compartments: {sizes}"


def main(argv: list[str] | None = None) -> int:
    return core.generator_main(
        argv,
        description=__doc__.split("\n", 1)[0],
        run_generator=run,
        default_out=OUT_FILE,
        prefixes=(PREFIX,),
    )


if __name__ == "__main__":
    sys.exit(main())
