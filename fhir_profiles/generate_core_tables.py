"""Generate the compact FHIR R4 core tables in ``fhir_profiles/r4_core/``.

Usage::

    python -m fhir_profiles.generate_core_tables [--package-dir DIR]

Without ``--package-dir`` the official ``hl7.fhir.r4.examples@4.0.1`` npm package is fetched
with ``npm pack`` into a temporary directory. Four files are written:

``elements.json``
    ``{"fhirVersion", "resourceTypes", "primitiveTypes", "types"}`` where ``types`` maps every
    core complex type, resource type and backbone element path to its child elements in
    snapshot order: ``[jsonName, isArray, typeCode, requiredValueSetUrlOrNull]``.

``valuesets.json``
    ``{"codes": {url: [code, ...]}, "systems": {url: [system, ...]}}`` for every value set that
    a required binding in the core types points at and that can be expanded fully offline.

``summary.json``
    ``{resourceType: {"summary": [...], "mandatory": [...], "backbones": {path: [...]}}}`` for
    every concrete resource type: the JSON names of its top-level elements that are
    ``isSummary`` (always starting with ``id`` and ``meta``) and that have ``min >= 1``, and
    for each backbone element (``Observation.component``) the names of its children that are
    ``isSummary``, in snapshot order, with choice elements expanded to their typed names
    (``value[x]`` -> ``valueQuantity``, ``valueString`` ...).

``required.json``
    ``{typeOrBackbonePath: [[elementName, [jsonName, ...]], ...]}``: the elements with
    ``min >= 1`` of every complex type, resource type and backbone element, each with the JSON
    names that satisfy it (a choice: any of its typed names). The validator checks them in
    the R4 types that have no R4B model.

Output is compact and deterministic so regenerating produces byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

FHIR_VERSION = "4.0.1"
NPM_PACKAGE = f"hl7.fhir.r4.examples@{FHIR_VERSION}"
OUT_DIR = Path(__file__).resolve().parent / "r4_core"
SD_BASE = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."

# Only these element types can carry a code we check against a required binding.
BINDABLE_TYPES = frozenset({"code", "Coding", "CodeableConcept", "string", "uri"})
# Inline element groups whose "type" is one of these get the backbone path as type code.
BACKBONE_TYPES = frozenset({"BackboneElement", "Element"})
CORE_KINDS = frozenset({"primitive-type", "complex-type", "resource"})
# The file prefixes we need out of the (large) npm tarball.
NEEDED_PREFIXES = ("StructureDefinition-", "ValueSet-", "CodeSystem-")

Json = dict[str, Any]
Row = list[Any]  # [jsonName, isArray, typeCode, valueSetUrl | None]
Code = tuple[str, str]  # (system, code)


# --------------------------------------------------------------------------- package loading


def fetch_package(
    dest: Path, prefixes: tuple[str, ...] = NEEDED_PREFIXES, package: str = NPM_PACKAGE
) -> Path:
    """Download an npm package (the examples package unless told) with ``npm pack`` and
    unpack the files we need (those whose names start with one of ``prefixes``)."""
    proc = subprocess.run(
        ["npm", "pack", package, "--silent", "--pack-destination", str(dest)],
        check=True,
        capture_output=True,
        text=True,
    )
    tgz_name = proc.stdout.strip().splitlines()[-1]
    tgz = dest / tgz_name
    out = dest / "package"
    out.mkdir()
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            # Copy by basename only: never trust archive paths, and skip the examples we
            # don't need (the tarball holds thousands of them).
            if not member.isfile() or not name.startswith(prefixes):
                continue
            src = tar.extractfile(member)
            if src is not None:
                (out / name).write_bytes(src.read())
    return out


def load_json_files(package_dir: Path, prefix: str) -> Iterator[Json]:
    for path in sorted(package_dir.glob(f"{prefix}*.json")):
        with path.open(encoding="utf-8") as fh:
            yield json.load(fh)


def strip_version(canonical: str) -> str:
    return canonical.split("|", 1)[0]


# --------------------------------------------------------------------------- structure defs


def is_core_type(sd: Json) -> bool:
    """Core types are specializations (or the derivation-less bases Element/Resource).

    Constraint profiles (vitalsigns, SimpleQuantity, extensions ...) and logical models are
    excluded: they never define a type code of their own.
    """
    return (
        sd.get("kind") in CORE_KINDS
        and sd.get("derivation", "specialization") == "specialization"
        and sd.get("url") == SD_BASE + sd.get("type", "")
    )


def primitive_json_kind(name: str, sds: dict[str, Json]) -> str:
    """JSON kind of a primitive, found by walking its baseDefinition chain.

    The 4.0.1 snapshots wrongly give positiveInt/unsignedInt a System.String value, so the
    derivation chain (positiveInt -> integer) is the reliable signal.
    """
    current: str | None = name
    while current is not None:
        if current == "boolean":
            return "boolean"
        if current in ("integer", "decimal"):
            return "number"
        base = sds[current].get("baseDefinition", "")
        current = base.removeprefix(SD_BASE) if base.startswith(SD_BASE) else None
        if current not in sds:
            current = None
    return "string"


def type_code(element_type: Json) -> str:
    """Type code of one ``ElementDefinition.type`` entry, mapping FHIRPath system types."""
    code: str = element_type["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code
    for ext in element_type.get("extension", ()):
        if ext.get("url") == FHIR_TYPE_EXT and ext.get("valueUrl"):
            return str(ext["valueUrl"])
    # Element.id / Extension.url style system types without the extension: plain strings.
    return "string"


def required_binding(element: Json) -> str | None:
    binding = element.get("binding") or {}
    if binding.get("strength") != "required" or not binding.get("valueSet"):
        return None
    return strip_version(binding["valueSet"])


def element_rows(sd: Json, element: Json) -> tuple[str, list[tuple[Row, str | None]]]:
    """Rows for one snapshot element plus the parent path they belong to.

    Each row comes with its candidate required value set (checked for expandability later).
    """
    path: str = element["path"]
    parent, name = path.rsplit(".", 1)
    is_array = element.get("max", "1") != "1"
    vs_url = required_binding(element)

    if "contentReference" in element:
        ref = element["contentReference"].split("#", 1)[-1]
        return parent, [([name, is_array, ref, None], None)]

    types = element.get("type") or []
    rows: list[tuple[Row, str | None]] = []
    if name.endswith("[x]"):
        stem = name[:-3]
        for t in types:
            code = type_code(t)
            json_name = stem + code[0].upper() + code[1:]
            rows.append(([json_name, is_array, code, None], _bindable(code, vs_url)))
        return parent, rows

    code = type_code(types[0]) if types else "string"
    if code in BACKBONE_TYPES:
        code = path
    elif sd["kind"] == "resource" and path.count(".") == 1 and name == "id":
        # The logical id of a resource is an ``id`` (the 4.0.1 snapshot says System.String).
        code = "id"
    rows.append(([name, is_array, code, None], _bindable(code, vs_url)))
    return parent, rows


def _bindable(code: str, vs_url: str | None) -> str | None:
    return vs_url if code in BINDABLE_TYPES else None


def collect_types(core_sds: Iterable[Json]) -> dict[str, list[tuple[Row, str | None]]]:
    """Map every complex type / resource / backbone path to its rows (snapshot order)."""
    types: dict[str, list[tuple[Row, str | None]]] = {}
    for sd in core_sds:
        if sd["kind"] == "primitive-type":
            continue
        types.setdefault(sd["type"], [])
        for element in sd["snapshot"]["element"][1:]:
            if "sliceName" in element:  # core snapshots have none; be safe anyway
                continue
            parent, rows = element_rows(sd, element)
            types.setdefault(parent, []).extend(rows)
    return types


def collect_summaries(core_sds: Iterable[Json]) -> dict[str, Json]:
    """Summary and mandatory top-level element names of every concrete resource type."""
    summaries: dict[str, Json] = {}
    for sd in core_sds:
        if sd["kind"] != "resource" or sd.get("abstract"):
            continue
        summary = ["id", "meta"]  # always part of a summary (resourceType is implicit)
        mandatory: list[str] = []
        # The summary children of every backbone element (a _summary=true trims inside too).
        backbones: dict[str, list[str]] = {}
        for element in sd["snapshot"]["element"][1:]:
            if "sliceName" in element:
                continue
            parent, rows = element_rows(sd, element)
            names = [row[0] for row, _ in rows]
            if element["path"].count(".") != 1:
                if element.get("isSummary"):
                    backbones.setdefault(parent, []).extend(names)
                else:
                    backbones.setdefault(parent, [])
                continue
            if element.get("isSummary"):
                summary.extend(name for name in names if name not in summary)
            if element.get("min", 0) >= 1:
                mandatory.extend(names)
        summaries[sd["type"]] = {
            "summary": summary,
            "mandatory": mandatory,
            "backbones": backbones,
        }
    return dict(sorted(summaries.items()))


def collect_required(core_sds: Iterable[Json]) -> dict[str, list[Json]]:
    """The required (min >= 1) child elements of every type and backbone path."""
    required: dict[str, list[Json]] = {}
    for sd in core_sds:
        if sd["kind"] == "primitive-type":
            continue
        for element in sd["snapshot"]["element"][1:]:
            if "sliceName" in element or element.get("min", 0) < 1:
                continue
            parent, rows = element_rows(sd, element)
            name = element["path"].rsplit(".", 1)[1]
            required.setdefault(parent, []).append([name, [row[0] for row, _ in rows]])
    return dict(sorted(required.items()))


# --------------------------------------------------------------------------- value sets


class Expander:
    """Expands value sets from the package alone; ``None`` means "not fully expandable"."""

    def __init__(self, valuesets: dict[str, Json], codesystems: dict[str, Json]) -> None:
        self.valuesets = valuesets
        self.codesystems = codesystems
        self._cache: dict[str, frozenset[Code] | None] = {}
        self._in_progress: set[str] = set()

    def expand(self, url: str) -> frozenset[Code] | None:
        if url in self._cache:
            return self._cache[url]
        if url in self._in_progress:  # recursive definition: refuse rather than loop
            return None
        self._in_progress.add(url)
        try:
            result = self._expand_uncached(url)
        finally:
            self._in_progress.discard(url)
        self._cache[url] = result
        return result

    def _expand_uncached(self, url: str) -> frozenset[Code] | None:
        vs = self.valuesets.get(url)
        if vs is None or "compose" not in vs:
            return None
        codes: set[Code] = set()
        for include in vs["compose"].get("include", []):
            part = self._component(include)
            if part is None:
                return None
            codes |= part
        for exclude in vs["compose"].get("exclude", []):
            part = self._component(exclude)
            if part is None:  # an exclude we cannot evaluate makes the result unknowable
                return None
            codes -= part
        return frozenset(codes) if codes else None

    def _component(self, comp: Json) -> set[Code] | None:
        """Codes of one include/exclude; its system part and value sets are intersected."""
        if comp.get("filter"):
            return None
        parts: list[set[Code]] = []
        system = comp.get("system")
        if system:
            if comp.get("concept"):
                parts.append({(system, c["code"]) for c in comp["concept"]})
            else:
                whole = self._whole_system(system)
                if whole is None:
                    return None
                parts.append(whole)
        for vs_url in comp.get("valueSet", []):
            sub = self.expand(strip_version(vs_url))
            if sub is None:
                return None
            parts.append(set(sub))
        if not parts:
            return None
        result = parts[0]
        for other in parts[1:]:
            result &= other
        return result

    def _whole_system(self, system: str) -> set[Code] | None:
        cs = self.codesystems.get(system)
        if cs is None or cs.get("content") != "complete":
            return None
        return {(system, code) for code in _concept_codes(cs.get("concept", []))}


def _concept_codes(concepts: list[Json]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _concept_codes(concept.get("concept", []))


# --------------------------------------------------------------------------- assembly


def build_tables(package_dir: Path) -> tuple[Json, Json, Json, Json, dict[str, int]]:
    sds = {sd["id"]: sd for sd in load_json_files(package_dir, "StructureDefinition-")}
    core = [sds[k] for k in sorted(sds) if is_core_type(sds[k])]
    if not core:
        raise SystemExit(f"no core StructureDefinitions found in {package_dir}")

    resource_types = sorted(
        sd["type"] for sd in core if sd["kind"] == "resource" and not sd.get("abstract")
    )
    primitive_types = {
        sd["type"]: primitive_json_kind(sd["id"], sds)
        for sd in core
        if sd["kind"] == "primitive-type"
    }
    raw_types = collect_types(core)

    expander = Expander(
        {strip_version(vs["url"]): vs for vs in load_json_files(package_dir, "ValueSet-")},
        {cs["url"]: cs for cs in load_json_files(package_dir, "CodeSystem-")},
    )
    wanted = sorted({url for rows in raw_types.values() for _, url in rows if url})
    expansions = {url: expander.expand(url) for url in wanted}
    usable = {url: codes for url, codes in expansions.items() if codes is not None}

    types: dict[str, list[Row]] = {}
    for key in sorted(raw_types):
        types[key] = [row[:3] + [url if url in usable else None] for row, url in raw_types[key]]

    elements = {
        "fhirVersion": FHIR_VERSION,
        "resourceTypes": resource_types,
        "primitiveTypes": dict(sorted(primitive_types.items())),
        "types": types,
    }
    valuesets = {
        "codes": {url: sorted({c for _, c in codes}) for url, codes in sorted(usable.items())},
        "systems": {url: sorted({s for s, _ in codes}) for url, codes in sorted(usable.items())},
    }
    summaries = collect_summaries(core)
    required = collect_required(core)
    stats = {
        "types": len(types),
        "elements": sum(len(rows) for rows in types.values()),
        "valuesets": len(usable),
        "skipped": len(wanted) - len(usable),
        "summaries": len(summaries),
    }
    return elements, valuesets, summaries, required, stats


def write_json(path: Path, data: Json) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    path.write_text(text + "\n", encoding="utf-8")


def run(package_dir: Path, out_dir: Path) -> str:
    elements, valuesets, summaries, required, stats = build_tables(package_dir)
    write_json(out_dir / "elements.json", elements)
    write_json(out_dir / "valuesets.json", valuesets)
    write_json(out_dir / "summary.json", summaries)
    write_json(out_dir / "required.json", required)
    return (
        f"r4_core: {stats['types']} types, {stats['elements']} elements, "
        f"{stats['valuesets']} value sets, {stats['skipped']} skipped value sets, "
        f"{stats['summaries']} resource summaries"
    )


def generator_main(
    argv: list[str] | None,
    *,
    description: str,
    run_generator: Callable[[Path, Path], str],
    default_out: Path,
    prefixes: tuple[str, ...] = NEEDED_PREFIXES,
    package: str = NPM_PACKAGE,
) -> int:
    """The command line shared by the table generators: --package-dir, or fetch with npm."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--package-dir",
        type=Path,
        help=f"an unpacked {package} package/ folder (default: fetch with npm pack)",
    )
    parser.add_argument("--out", type=Path, default=default_out, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.package_dir is not None:
        print(run_generator(args.package_dir, args.out))
        return 0
    with tempfile.TemporaryDirectory(prefix="fhir-r4-") as tmp:
        print(run_generator(fetch_package(Path(tmp), prefixes, package), args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    return generator_main(
        argv, description=__doc__.split("\n", 1)[0], run_generator=run, default_out=OUT_DIR
    )


if __name__ == "__main__":
    sys.exit(main())
