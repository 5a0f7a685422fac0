"""Rules every R4 resource follows that the models do not check (validation.py's fourth
check): the JSON representation's own rules, ele-1, ext-1, and the narrative's txt-1/txt-2.
One walk over the resource, which also finds the control characters FHIR strings may not hold.

- http://hl7.org/fhir/R4/json.html: arrays are never empty; `null` in an array of primitives
  only holds a place where the `_name` partner array carries the element's id or extensions.
- ele-1: "All FHIR elements must have a @value or children" (an `id` alone is not a child).
- ext-1: "Must have either extensions or value[x], not both".
- txt-1 / txt-2: the narrative div is XHTML with the allowed elements and attributes only
  (no scripts, no event attributes) and some non-whitespace content.
The invariants that need the elements' types (dom-2..5, ref-1, cpt-2) are app.fhir.invariants',
run when this walk sees something they could be about.
"""

from __future__ import annotations

import re
from typing import Any

from app.errors import Issue
from app.fhir.invariants import invariant_issues, may_break_cpt_2
from app.fhir.xml.narrative import div_problems

EXTENSION_KEYS = ("extension", "modifierExtension")
# Below U+0020 only tab, CR and LF may appear in a string (datatypes.html#string), keys too;
# and U+FFFE / U+FFFF, which XML 1.0 cannot carry (its Char production leaves them out): a
# resource holding one could be stored from JSON but never read back as FHIR XML.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
NOT_IN_XML = frozenset("\ufffe\uffff")


def core_rule_issues(resource: dict[str, Any], rtype: str) -> list[Issue]:
    issues: list[Issue] = []
    suspect = [False]
    _walk(resource, rtype, issues, suspect)
    if suspect[0]:  # the typed walk costs as much again: only where an invariant may break
        issues.extend(invariant_issues(resource))
    return issues


def _walk(
    value: Any, path: str, out: list[Issue], suspect: list[bool], primitive: Any = None
) -> None:
    """`suspect[0]` is set where app.fhir.invariants has something to look at: a value
    starting with '#' (a local reference), contained resources, a ContactPoint-like object
    with a value and no system. `primitive` is the value a `_name` partner belongs to."""
    if isinstance(value, str):
        found = CONTROL_CHARACTER.search(value)
        if found:
            _control_characters(path, found.group(), out)
        if value.startswith("#"):
            suspect[0] = True
    elif isinstance(value, dict):
        _check_object(value, path, out, has_value=primitive is not None)
        if "contained" in value or (
            ("value" in value or "_value" in value) and may_break_cpt_2(value)
        ):
            suspect[0] = True
        for key, item in value.items():
            found = CONTROL_CHARACTER.search(key)
            if found:
                _control_characters(f"{path}.{key}", found.group(), out)
            # `"_family": {"id": "f1"}` next to `"family": "Lee"` is <family id="f1"
            # value="Lee"/>: the element has its value (ele-1), the partner only its id.
            if key[:1] == "_":
                _walk(item, f"{path}.{key}", out, suspect, value.get(key[1:]))
            else:
                _walk(item, f"{path}.{key}", out, suspect)
    elif isinstance(value, list):
        if not value:
            out.append(Issue("error", "structure", f"{path}: an array may not be empty", (path,)))
        if not isinstance(primitive, list):
            for index, item in enumerate(value):
                _walk(item, f"{path}[{index}]", out, suspect)
            return
        for index, item in enumerate(value):  # a `_given` array, aligned with `given`
            aligned = primitive[index] if index < len(primitive) else None
            _walk(item, f"{path}[{index}]", out, suspect, aligned)


def _control_characters(path: str, character: str, out: list[Issue]) -> None:
    if character in NOT_IN_XML:
        message = f"{path}: U+FFFE and U+FFFF are not allowed (XML cannot hold them)"
    else:
        message = f"{path}: control characters (below U+0020, except tab, CR, LF) are not allowed"
    out.append(Issue("error", "value", message, (path,)))


def _check_object(obj: dict[str, Any], path: str, out: list[Issue], *, has_value: bool) -> None:
    if not has_value and "resourceType" not in obj and not set(obj) - {"id"}:
        message = f"{path}: an element must have a value or children (ele-1)"
        out.append(Issue("error", "invariant", message, (path,)))
    for key, value in obj.items():
        if isinstance(value, list) and None in value:
            _check_placeholders(obj, key, value, path, out)
        # Every element named text that is an object is a Narrative (elements.json: the
        # others are strings), and div is the only xhtml element.
        if key == "text" and isinstance(value, dict) and isinstance(value.get("div"), str):
            _check_div(value["div"], f"{path}.text.div", out)
        if key in EXTENSION_KEYS and isinstance(value, list):
            for index, extension in enumerate(value):
                if isinstance(extension, dict):
                    _check_extension(extension, f"{path}.{key}[{index}]", out)


def _check_placeholders(
    obj: dict[str, Any], key: str, values: list[Any], path: str, out: list[Issue]
) -> None:
    """A null in `name` (or `_name`) is a placeholder: the partner must fill that place."""
    partner_key = key[1:] if key.startswith("_") else f"_{key}"
    partner = obj.get(partner_key)
    for index, value in enumerate(values):
        filled = isinstance(partner, list) and index < len(partner) and partner[index] is not None
        if value is None and not filled:
            where = f"{path}.{key}[{index}]"
            message = f"{where}: null is only allowed where {partner_key}[{index}] has content"
            out.append(Issue("error", "structure", message, (where,)))


def _check_extension(extension: dict[str, Any], path: str, out: list[Issue]) -> None:
    has_value = any(k.startswith(("value", "_value")) for k in extension)
    has_children = bool(extension.get("extension"))
    if has_value == has_children:
        message = f"{path}: an extension must have either extensions or value[x], not both (ext-1)"
        out.append(Issue("error", "invariant", message, (path,)))


def _check_div(div: str, path: str, out: list[Issue]) -> None:
    for problem in div_problems(div):
        code = "invariant" if "(txt-" in problem else "structure"
        out.append(Issue("error", code, f"{path}: {problem}", (path,)))
