"""Which patients a resource concerns: the BALP patient entity of an audit record.

Derived from data, not per-type code: the R4 Patient compartment (fhir_profiles/r4_core/
compartments.json) names each type's patient parameters, and their search expressions name the
elements that hold the references (`Observation.subject`, `Encounter.subject`, ...).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from app.auth.compartment import patient_compartment
from app.fhir.search.definitions import params_for

# `Observation.subject.where(resolve() is Patient)` -> Observation.subject
_WHERE_PATIENT = re.compile(r"\.where\(resolve\(\) is Patient\)$")


@cache
def reference_paths(rtype: str) -> tuple[tuple[str, ...], ...]:
    """Element paths (below the resource) whose references may point at a Patient."""
    paths: set[tuple[str, ...]] = set()
    definitions = params_for(rtype)
    for code in patient_compartment().get(rtype, ()):
        param = definitions.get(code)
        if param is None:
            continue
        for branch in param.expression.split("|"):
            branch = _WHERE_PATIENT.sub("", branch.strip())
            if not branch.startswith(f"{rtype}.") or "(" in branch:
                continue
            paths.add(tuple(branch.split(".")[1:]))
    return tuple(sorted(paths))


def patients_of(rtype: str, resource: dict[str, Any]) -> list[str]:
    """Patient ids the resource belongs to (its own id for a Patient)."""
    if rtype == "Patient":
        rid = resource.get("id")
        return [rid] if isinstance(rid, str) else []
    found: list[str] = []
    for path in reference_paths(rtype):
        for node in _walk(resource, path):
            ref = node.get("reference") if isinstance(node, dict) else None
            patient = _patient_id(ref) if isinstance(ref, str) else None
            if patient and patient not in found:
                found.append(patient)
    return found


def _walk(node: Any, path: tuple[str, ...]) -> list[Any]:
    nodes = [node]
    for name in path:
        step: list[Any] = []
        for current in nodes:
            value = current.get(name) if isinstance(current, dict) else None
            if isinstance(value, list):
                step.extend(value)
            elif value is not None:
                step.append(value)
        nodes = step
    return nodes


def _patient_id(reference: str) -> str | None:
    """`Patient/123`, `Patient/123/_history/2` or an absolute URL ending in Patient/123."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None
