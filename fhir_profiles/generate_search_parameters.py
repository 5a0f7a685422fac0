"""Generate ``fhir_profiles/r4_core/search_parameters.json``: the R4 search parameter table.

Usage::

    python -m fhir_profiles.generate_search_parameters [--package-dir DIR]

Without ``--package-dir`` the official ``hl7.fhir.r4.examples@4.0.1`` npm package is fetched
with ``npm pack`` into a temporary directory (through ``generate_core_tables.generator_main``).

Source: the package's ``Bundle-searchParams.json`` (Bundle ``searchParams``), which holds the
complete core set (1375 SearchParameters, including the ``Resource``/``DomainResource`` ones).
The individual ``SearchParameter-*.json`` files are *not* used: they add 25 example and
extension parameters (``SearchParameter/example``, genetics extensions ...) that are not part
of core R4 and lack the bundle's core ones' consistency (some have no ``base``).

Output (compact, deterministic)::

    {"_special": [code, ...],
     "<ResourceType>": {"<code>": {"type", "expression", "targets", "modifiers",
                                   "comparators", "components", "url"}}}

``expression`` keeps only the union branches that apply to that resource type (text exact);
``components`` is ``[{"definition": <code of the component parameter>, "expression"}]``.
Resource-level parameters (``_id``, ``_lastUpdated``, ``_tag`` ...) appear under every type.
Parameters without an expression (``_content``, ``_text``, ``_query``), and ``_has``, ``_list``
and ``_type`` (defined only in the prose of the search page, not as SearchParameter
resources), are listed in ``_special``: the search engine implements them in code.

Note: no R4 core SearchParameter declares ``modifier`` (the element is for non-default
modifiers); the engine applies the per-type default modifiers of the search page.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from app.fhir.search.fhirpath import split_union  # the one union splitter
from fhir_profiles import generate_core_tables as core

OUT_FILE = core.OUT_DIR / "search_parameters.json"
BUNDLE_FILE = "Bundle-searchParams.json"
# Search parameters defined in the prose of the R4 search page, not as resources.
PROSE_SPECIAL = ("_has", "_list", "_type")

Json = dict[str, Any]


# --------------------------------------------------------------------------- loading


def load_search_parameters(package_dir: Path) -> list[Json]:
    bundle = json.loads((package_dir / BUNDLE_FILE).read_text(encoding="utf-8"))
    params = [
        entry["resource"]
        for entry in bundle.get("entry", [])
        if entry.get("resource", {}).get("resourceType") == "SearchParameter"
    ]
    if not params:
        raise SystemExit(f"no SearchParameter entries in {package_dir / BUNDLE_FILE}")
    return params


def load_resource_types(package_dir: Path) -> tuple[list[str], set[str]]:
    """All concrete R4 resource types, and those that derive from DomainResource."""
    resource_types: list[str] = []
    domain: set[str] = set()
    for sd in core.load_json_files(package_dir, "StructureDefinition-"):
        if not core.is_core_type(sd) or sd["kind"] != "resource" or sd.get("abstract"):
            continue
        resource_types.append(sd["type"])
        if sd.get("baseDefinition") == core.SD_BASE + "DomainResource":
            domain.add(sd["type"])
    if not resource_types:
        raise SystemExit(f"no resource StructureDefinitions found in {package_dir}")
    return sorted(resource_types), domain


# --------------------------------------------------------------------------- expressions


_LEADING_NAME = re.compile(r"\(*\s*([A-Za-z_][A-Za-z0-9_]*)")


def branch_applies(branch: str, resource_type: str, is_domain: bool) -> bool:
    """Whether one union branch is evaluated for ``resource_type``.

    A branch applies when its path starts with the type's name, with ``Resource`` (or
    ``DomainResource`` for domain resources), or with a lowercase name: a path relative to
    the resource itself (InsurancePlan's ``name | alias``).
    """
    match = _LEADING_NAME.match(branch)
    if match is None:
        return False
    name = match.group(1)
    if name == resource_type or name == "Resource":
        return True
    if name == "DomainResource":
        return is_domain
    return name[0].islower()


def expression_for(expression: str, resource_type: str, is_domain: bool) -> str | None:
    branches = [b for b in split_union(expression) if branch_applies(b, resource_type, is_domain)]
    return " | ".join(branches) if branches else None


# --------------------------------------------------------------------------- assembly


def bases_of(param: Json, resource_types: list[str], domain: set[str]) -> list[str]:
    bases: list[str] = []
    for base in param.get("base", []):
        if base == "Resource":
            bases.extend(resource_types)
        elif base == "DomainResource":
            bases.extend(t for t in resource_types if t in domain)
        else:
            bases.append(base)
    return bases


def entry_for(param: Json, expression: str, codes_by_url: dict[str, str]) -> Json:
    return {
        "type": param["type"],
        "expression": expression,
        "targets": sorted(param.get("target", [])),
        "modifiers": list(param.get("modifier", [])),
        "comparators": list(param.get("comparator", [])),
        "components": [
            {"definition": codes_by_url[c["definition"]], "expression": c["expression"]}
            for c in param.get("component", [])
        ],
        "url": param["url"],
    }


def build_table(package_dir: Path) -> tuple[Json, dict[str, int]]:
    params = load_search_parameters(package_dir)
    resource_types, domain = load_resource_types(package_dir)
    codes_by_url = {p["url"]: p["code"] for p in params}
    table: dict[str, dict[str, Json]] = {t: {} for t in resource_types}
    special = set(PROSE_SPECIAL)
    unmatched: list[str] = []

    for param in params:
        if not param.get("expression"):
            special.add(param["code"])
            continue
        for base in bases_of(param, resource_types, domain):
            expression = expression_for(param["expression"], base, base in domain)
            if expression is None:
                unmatched.append(f"{base}.{param['code']}")
                continue
            table.setdefault(base, {})[param["code"]] = entry_for(param, expression, codes_by_url)

    if unmatched:  # every official definition has a branch for each of its bases
        raise SystemExit(f"no expression branch for: {', '.join(sorted(unmatched))}")
    out: Json = {"_special": sorted(special)}
    for resource_type in sorted(table):
        out[resource_type] = dict(sorted(table[resource_type].items()))
    stats = {
        "definitions": len(params),
        "types": len(table),
        "entries": sum(len(v) for v in table.values()),
        "special": len(special),
    }
    return out, stats


def run(package_dir: Path, out_file: Path) -> str:
    table, stats = build_table(package_dir)
    core.write_json(out_file, table)
    return (
        f"search_parameters: {stats['definitions']} definitions, {stats['types']} resource "
        f"types, {stats['entries']} (type, code) entries, {stats['special']} special codes"
    )


def main(argv: list[str] | None = None) -> int:
    return core.generator_main(
        argv,
        description=__doc__.split("\n", 1)[0],
        run_generator=run,
        default_out=OUT_FILE,
        prefixes=(*core.NEEDED_PREFIXES, BUNDLE_FILE),
    )


if __name__ == "__main__":
    sys.exit(main())
