"""Generate ``choices.json`` and ``constraints.json`` in ``fhir_profiles/r4_core/`` from the
official R4 StructureDefinitions (the same package as generate_core_tables).

    python -m fhir_profiles.generate_constraints [--package-dir DIR]

``choices.json``
    ``{typeOrBackbonePath: {jsonName: choiceName}}``: the typed JSON names of every choice
    element (``valueQuantity`` -> ``value``), so that two of one choice can be refused (R4
    json.html: a choice element appears under exactly one of its names).

``constraints.json``
    ``{contextPath: [[key, human, expression, uncheckedReason | null], ...]}``: every
    constraint of severity error that a core type, resource or backbone element defines
    itself (inherited copies are left out: each is listed once, where it is defined).
    ``contextPath`` is a type or backbone path of elements.json; a constraint on another
    element (``Organization.telecom``: org-3) is moved to its parent as
    ``telecom.all(<expression>)``. ``uncheckedReason`` is set for the constraints that are
    not evaluated from here, and says why (KNOWN below); which expressions the FHIRPath
    engine cannot compile is decided at run time (app.fhir.constraints). The few R4
    expressions that are wrong for valid data are corrected (CORRECTED below).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fhir_profiles import generate_core_tables as core

OUT_DIR = Path(__file__).parent / "r4_core"

CHECKED_ELSEWHERE = "checked by app.fhir.core_rules / app.fhir.invariants"
# Constraints not evaluated from the table, with the reason. Keys are unique in R4.
KNOWN: dict[str, str] = {
    **dict.fromkeys(
        ["ele-1", "ext-1", "txt-1", "txt-2", "ref-1", "cpt-2"]
        + ["dom-2", "dom-3", "dom-4", "dom-5"],
        CHECKED_ELSEWHERE,
    ),
    # bdl-7 needs fullUrl & versionId pairs; app.fhir.bundles refuses duplicate fullUrls
    # of batches and transactions itself (400), and a history may repeat them.
    "bdl-7": "duplicate fullUrls are refused by the transaction/batch processing",
    # "abstract = true or baseDefinition.exists()": R4's own logical models (the official
    # StructureDefinition-Definition, -Event, -FiveWs, -Request examples) have no base.
    "sdf-4": "wrong in R4: its own logical models (Definition, Event ...) break it",
    # "answer is Boolean" asks for System.Boolean, which no FHIR boolean is (FHIRPath: a FHIR
    # primitive is of its FHIR type), so every enableWhen with operator 'exists' breaks it, the
    # official Questionnaire-bb example too. R4B corrects it to "answer is boolean".
    "que-7": "wrong in R4: 'answer is Boolean' is false for every answerBoolean (R4B: boolean)",
}


# R4 expressions that break valid data once an empty answer counts as a failure (a
# constraint holds only when it evaluates to true: app.fhir.constraints), corrected as the
# reference validator corrects them (org.hl7.fhir.validation FHIRPathExpressionFixer) and
# later releases do: key -> (the published R4 expression, the one checked). The published
# text is compared, so a changed package is noticed rather than silently overridden.
CORRECTED: dict[str, tuple[str, str]] = {
    # an entry without fullUrl made it empty (R4B: applied only where there is one)
    "bdl-8": (
        "fullUrl.contains('/_history/').not()",
        "fullUrl.exists() implies fullUrl.contains('/_history/').not()",
    ),
    # a prediction without probability made it empty (R5 adds probability.empty() or ...)
    "ras-2": (
        "probability is decimal implies (probability as decimal) <= 100",
        "(probability.exists() and (probability is decimal)) implies "
        "((probability as decimal) <= 100)",
    ),
    # the human text: "If there are more than one enableWhen, enableBehavior must be specified"
    "que-12": (
        "enableWhen.count() > 2 implies enableBehavior.exists()",
        "enableWhen.count() >= 2 implies enableBehavior.exists()",
    ),
}


def _checked_expression(key: str, expression: str) -> str:
    published, corrected = CORRECTED.get(key, (expression, expression))
    if published != expression:
        raise ValueError(f"{key}: the published expression changed: {expression!r}")
    return corrected


def choices(core_sds: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for sd in core_sds:
        if sd["kind"] == "primitive-type":
            continue
        for element in sd["snapshot"]["element"][1:]:
            if not element["path"].endswith("[x]") or "sliceName" in element:
                continue
            parent, rows = core.element_rows(sd, element)
            stem = element["path"].rsplit(".", 1)[1][:-3]
            table.setdefault(parent, {}).update({row[0]: stem for row, _ in rows})
    return dict(sorted(table.items()))


def constraints(core_sds: list[dict[str, Any]], types: set[str]) -> dict[str, list[list[Any]]]:
    table: dict[str, list[list[Any]]] = {}
    for sd in core_sds:
        own = core.SD_BASE + sd["type"]
        for element in sd["snapshot"]["element"]:
            for rule in element.get("constraint", ()):
                if rule.get("severity") != "error" or rule.get("source", own) != own:
                    continue
                checked = _checked_expression(rule["key"], rule["expression"])
                context, expression = _context(element["path"], checked, types)
                reason = KNOWN.get(rule["key"])
                if context is None:
                    context, reason = element["path"], "on a primitive element"
                row = [rule["key"], rule["human"], expression, reason]
                table.setdefault(context, []).append(row)
    return dict(sorted(table.items()))


def _context(path: str, expression: str, types: set[str]) -> tuple[str | None, str]:
    """Where the walker meets the constraint: the type itself, or the parent of an element
    whose type is not its own (its items are checked with all())."""
    if path in types:
        return path, expression
    parent, name = path.rsplit(".", 1)
    if parent not in types:
        return None, expression
    return parent, f"{name.removesuffix('[x]')}.all({expression})"


def run(package_dir: Path, out_dir: Path) -> str:
    sds = {sd["id"]: sd for sd in core.load_json_files(package_dir, "StructureDefinition-")}
    core_sds = [sds[k] for k in sorted(sds) if core.is_core_type(sds[k])]
    types = set(core.collect_types(core_sds))
    choice_table = choices(core_sds)
    constraint_table = constraints(core_sds, types)
    core.write_json(out_dir / "choices.json", choice_table)
    core.write_json(out_dir / "constraints.json", constraint_table)
    count = sum(len(rows) for rows in constraint_table.values())
    return f"choices: {len(choice_table)} types; constraints: {count} (severity error)"


def main(argv: list[str] | None = None) -> int:
    return core.generator_main(
        argv, description=__doc__.split("\n", 1)[0], run_generator=run, default_out=OUT_DIR
    )


if __name__ == "__main__":
    sys.exit(main())
