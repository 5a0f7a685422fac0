"""Is this a valid R4 resource? The only module that imports fhir.resources (R4B models).

Five checks, each reporting element paths:
1. structure and datatypes, by the fhir.resources R4B pydantic models (cardinality, required
   elements, primitive formats, unknown elements);
2. JSON kinds pydantic's lax mode lets through ("active": "yes" is not a boolean) and
   required terminology bindings (fhir.resources checks neither), from tables generated from
   the official definitions (app.fhir.bindings);
3. the request-level rules: resourceType and id agree with the URL;
4. the core rules the models skip: JSON representation, ele-1, ext-1, narrative XHTML
   (app.fhir.core_rules);
5. the invariants of the R4 definitions (obs-6, pat-1, per-1 ...: app.fhir.constraints), on
   the elements the kind walk of check 2 finds.

The R4 types R4B dropped, and the two it redesigned (Evidence, EvidenceVariable: their R4B
models refuse valid R4 and demand R4B-only elements), have no model: checks 2-4, and their
required elements from the generated tables (app.fhir.cardinality). The
tables report unknown elements everywhere, so that what only R4B defines
(ActivityDefinition.subjectCanonical, Extension.valueRatioRange ...) is refused as it is in R4.
Nesting deeper than jsonio.MAX_DEPTH is refused before anything recurses.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class  # noqa: TID251 - the one place
from pydantic import ValidationError

from app.errors import Issue, ResourceInvalid
from app.fhir import bindings, constraints, extension_memo, jsonio
from app.fhir.cardinality import missing_required
from app.fhir.core_rules import core_rule_issues

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# FHIR strings "SHALL NOT contain Unicode character points below 32, except for u0009 (horizontal
# tab), u000D (carriage return) and u000A (line feed)"; fhir.resources lets them through, and
# PostgreSQL refuses a NUL in text or jsonb (a 500 instead of a 400).


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


@cache
def known_resource_types() -> frozenset[str]:
    return bindings.resource_types()


# R4 types R4B redesigned: the R4B model would judge an R4 resource by another definition.
REDESIGNED_IN_R4B = frozenset({"Evidence", "EvidenceVariable"})
_EXTENSION_KEYS = extension_memo.EXTENSION_KEYS
# Off only for the tests that compare the shortcut with the full model check.
USE_EXTENSION_MEMO = True


@cache
def _model_class(resource_type: str) -> Any | None:
    """The R4B model, or None for the R4 types R4B dropped or redesigned (table checks still
    apply)."""
    if resource_type in REDESIGNED_IN_R4B:
        return None
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError):  # fhir.resources raises ValueError for an unknown name
        return None


# What an R4-only resource nested in an R4B one stands in as for the model check: a type
# with no required elements, so the model judges everything around it. The nested resource
# itself still gets the table checks.
def _stand_in(nested: dict[str, Any]) -> dict[str, Any]:
    stand_in: dict[str, Any] = {"resourceType": "Parameters"}
    if isinstance(nested.get("id"), str):
        stand_in["id"] = nested["id"]
    return stand_in


# (path, value) pairs the model view set aside: stand-ins' originals
Partners = list[tuple[str, dict[str, Any]]]
# (path, value, type) of the elements the model view set aside, to be judged on their own
SetAside = list[tuple[str, dict[str, Any], str]]


@cache
def _open_type_gaps() -> dict[str, str]:
    """The elements of an R4 open type that the R4B models lack, by JSON name, with their
    type: R4's open types include Meta, R4B's do not, so `fixedMeta`, `patternMeta`,
    `defaultValueMeta` and `valueMeta` (Extension, ElementDefinition.example) were refused.
    Found from the tables and the Extension model (whose value[x] is the open type), not
    listed by hand. Where R4 has no such element the table check refuses it."""
    table = bindings.element_table()
    extension = _model_class("Extension")
    assert extension is not None
    known = set(extension.model_fields)
    types = {t for name, _, t, _ in table["Extension"] if name.startswith("value")}
    lacking = {t for t in types if f"value{t[:1].upper()}{t[1:]}" not in known}
    return {
        name: type_code
        for rows in table.values()
        for name, _, type_code, _ in rows
        if type_code in lacking and name.endswith(type_code[:1].upper() + type_code[1:])
    }


def _has_model(resource_type: str) -> bool:
    return _model_class(resource_type) is not None


def _model_view(
    value: Any, path: str, partners: SetAside, stood_in: Partners, *, root: bool = False
) -> Any:
    """`value` as the R4B model can judge it; `value` itself when nothing had to change.

    Every nested resource without an R4B model (an R4-only type, or no resource type at all)
    is replaced by a stand-in, and put in `stood_in` with its path. The "_valueX" partners
    of Extensions (the id and extensions of a primitive value, a translation for instance)
    are valid R4 JSON the R4B Extension model does not know: they are taken out and put in
    `partners` with their paths, to be judged as the Elements they are; so are the elements
    of R4 open types R4B dropped (`fixedMeta` ...), to be judged as their type.
    """
    if isinstance(value, dict):
        if not root and "resourceType" in value:
            rtype = value["resourceType"]
            if not isinstance(rtype, str) or _model_class(rtype) is None:
                stood_in.append((path, value))
                return _stand_in(value)
        items = {}
        gaps = _open_type_gaps()
        for key, item in value.items():
            if key in gaps and isinstance(item, dict):
                partners.append((f"{path}.{key}", item, gaps[key]))
                # The model sees a boolean of the same choice in its place: the choice may
                # be required (ElementDefinition.example.value[x]) and must stay single.
                items[key.removesuffix(gaps[key]) + "Boolean"] = True
                continue
            if key in _EXTENSION_KEYS and isinstance(item, list):
                item = [
                    _without_partners(e, f"{path}.{key}[{i}]", partners) for i, e in enumerate(item)
                ]
            items[key] = _model_view(item, f"{path}.{key}", partners, stood_in)
        changed = items.keys() != value.keys() or any(v is not value[k] for k, v in items.items())
        return items if changed else value
    if isinstance(value, list):
        copied = [_model_view(v, f"{path}[{i}]", partners, stood_in) for i, v in enumerate(value)]
        return copied if any(c is not v for c, v in zip(copied, value, strict=True)) else value
    return value


def _without_partners(extension: Any, path: str, partners: SetAside) -> Any:
    """An Extension without its "_valueX" key (recorded in `partners`), or as it is."""
    if not isinstance(extension, dict):
        return extension
    found = [k for k in extension if k.startswith("_value")]
    partners.extend(
        (f"{path}.{k}", extension[k], "Element") for k in found if isinstance(extension[k], dict)
    )
    if not found:
        return extension
    return {k: v for k, v in extension.items() if k not in found}


def validate_resource(
    resource: Any, *, expected_type: str | None = None, expected_id: str | None = None
) -> None:
    """Raise ResourceInvalid naming every problem found, or return quietly."""
    rtype = _check_envelope(resource, expected_type)
    try:  # a body was checked when parsed; a patch result was not
        jsonio.check_depth(resource)
    except jsonio.FhirJsonError as exc:
        raise ResourceInvalid(str(exc), expression=rtype) from exc
    issues: list[Issue] = []
    if expected_id is not None:
        body_id = resource.get("id")
        if body_id is None:
            issues.append(
                Issue("error", "required", "resource id is required for update", (f"{rtype}.id",))
            )
        elif body_id != expected_id:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"resource id '{body_id}' does not match the id in the URL '{expected_id}'",
                    (f"{rtype}.id",),
                )
            )
    if "id" in resource and not (isinstance(resource["id"], str) and is_valid_id(resource["id"])):
        issues.append(
            Issue("error", "value", "id must match [A-Za-z0-9-.]{1,64}", (f"{rtype}.id",))
        )
    issues.extend(core_rule_issues(resource, rtype))
    table_issues = _table_issues(resource)
    # A value of the wrong JSON kind upsets the model too; the kind check says it precisely.
    kind_paths = {i.expression for i in table_issues if i.code == "value"}
    # Two names of one choice: the table check names the element, the model only its parent.
    choice_parents = {
        (i.expression[0].rpartition(".")[0],)
        for i in table_issues
        if bindings.SECOND_CHOICE in i.diagnostics
    }
    issues.extend(
        i
        for i in _model_issues(rtype, resource)
        if i.expression not in kind_paths
        and not (i.expression in choice_parents and _MODEL_SECOND_CHOICE in i.diagnostics)
    )
    if not _has_model(rtype):  # the R4 types R4B dropped or redesigned
        issues.extend(missing_required(resource, rtype, _has_model))
    issues.extend(table_issues)
    if issues:
        raise ResourceInvalid(issues[0].diagnostics, issues=_dedupe(issues))


def _check_envelope(resource: Any, expected_type: str | None) -> str:
    if not isinstance(resource, dict):
        raise ResourceInvalid("a resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise ResourceInvalid("resourceType is missing", expression="resourceType")
    if expected_type is not None and rtype != expected_type:
        raise ResourceInvalid(
            f"resourceType '{rtype}' does not match the endpoint type '{expected_type}'",
            expression="resourceType",
        )
    if rtype not in known_resource_types():
        raise ResourceInvalid(f"'{rtype}' is not an R4 resource type", expression="resourceType")
    return rtype


def _model_issues(rtype: str, resource: dict[str, Any], path: str = "") -> list[Issue]:
    """The model's issues; `path` roots them (a contained resource checked on its own)."""
    path = path or rtype
    model = _model_class(rtype)
    if model is None:  # an R4-only type: its contained R4B resources are still checked
        return [
            issue
            for index, item in enumerate(resource.get("contained") or [])
            if isinstance(item, dict) and isinstance(item.get("resourceType"), str)
            for issue in _model_issues(item["resourceType"], item, f"{path}.contained[{index}]")
        ]
    if (
        USE_EXTENSION_MEMO
        and extension_memo.may_have_extensions(resource)
        and _clean_by_memo(model, resource)
    ):
        return []
    try:
        first: list[Issue] | None = _run_model(model, resource, path)
    except KeyError:  # fhir.resources met a nested resource type it has no model for
        first = None
    if first == []:  # the common case, so the view below is only made when needed
        return first
    partners: SetAside = []
    stood_in: Partners = []
    view = _model_view(resource, path, partners, stood_in, root=True)
    if view is resource and first is not None:
        return first
    try:
        issues = _run_model(model, view, path)
    except KeyError as exc:
        return [Issue("error", "invalid", f"cannot be validated: {exc}", (path,))]
    for partner_path, partner, type_code in partners:
        issues.extend(_run_model(_model_class(type_code), partner, partner_path))
    for nested_path, nested in stood_in:  # no model judged them: their required elements
        issues.extend(missing_required(nested, nested_path, _has_model))
    return issues


def _clean_by_memo(model: Any, resource: dict[str, Any]) -> bool:
    """Does the model accept `resource`, found the cheap way (app.fhir.extension_memo)? False
    also when that cannot tell: a nested type without a model, an issue anywhere."""
    extension = _model_class("Extension")

    def accepts(judged: Any, value: Any) -> bool:
        try:
            return not _run_model(judged, value, "")
        except KeyError:  # a nested resource type without a model: the full check says how
            return False

    return extension_memo.all_clean(
        resource, lambda view: accepts(model, view), lambda ext: accepts(extension, ext)
    )


def _run_model(model: Any, resource: dict[str, Any], path: str) -> list[Issue]:
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            _issue_from_pydantic(path, err) for err in exc.errors() if not _fhir_regex_match(err)
        ]
    except (TypeError, ValueError) as exc:  # a validator raising outside pydantic
        return [Issue("error", "invalid", str(exc), (path,))]
    except AttributeError as exc:
        # fhir.resources reads a primitive's `_name` partner as an object without checking
        # ("'float' object has no attribute 'get'"): name the element it could not read.
        return _malformed_partners(resource, path) or [
            Issue("error", "structure", f"cannot be validated: {exc}", (path,))
        ]
    return []


def _malformed_partners(value: Any, path: str) -> list[Issue]:
    """`_name` elements that are neither an object nor (for a repeating primitive) an array
    of objects and nulls: json.html, a primitive's id and extensions go in an object."""
    issues: list[Issue] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            issues.extend(_malformed_partners(item, f"{path}[{index}]"))
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key.startswith("_") and not _is_partner(item):
                message = f"{where}: must be an object holding the value's id and extensions"
                issues.append(Issue("error", "structure", message, (where,)))
            else:
                issues.extend(_malformed_partners(item, where))
    return issues


def _is_partner(item: Any) -> bool:
    if isinstance(item, list):
        return all(x is None or isinstance(x, dict) for x in item)
    return isinstance(item, dict)


# FHIR's regexes are XML Schema regexes, where \s is only space, tab, CR and LF; in Python's
# it is any Unicode space, so the models refuse the valid code "CHEST\u00a0" (official example
# CodeSystem-v2-0550).
_XML_SPACE = " \\t\\r\\n"


def _fhir_regex_match(err: Any) -> bool:
    """Does the value of a pattern mismatch match its pattern read as an XML Schema regex?"""
    pattern = (err.get("ctx") or {}).get("pattern")
    value = err.get("input")
    if err.get("type") != "string_pattern_mismatch" or not isinstance(pattern, str):
        return False
    if not isinstance(value, str):
        return False
    xml_pattern = pattern.replace("[^\\s]", f"[^{_XML_SPACE}]").replace("\\s", f"[{_XML_SPACE}]")
    return xml_pattern != pattern and re.fullmatch(xml_pattern, value) is not None


def _issue_from_pydantic(rtype: str, err: Any) -> Issue:
    path = _loc_to_path(rtype, err.get("loc", ()))
    kind = err.get("type", "")
    message = str(err.get("msg", "invalid"))
    # fhir.resources reports a missing required element from a model validator.
    missing = kind == "missing" or message.endswith("is required.")
    code = "required" if missing else "structure" if kind == "extra_forbidden" else "value"
    # One line (patterns hold control characters), nothing cut.
    message = message.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    if kind == "extra_forbidden":
        message = "unknown element"
    return Issue("error", code, f"{path}: {message}", (path,))


def _loc_to_path(rtype: str, loc: tuple[Any, ...]) -> str:
    path = rtype
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("__root__", "resource_type"):
            continue
        else:
            path += f".{part}"
    return path


# How the models word two names of one choice element.
_MODEL_SECOND_CHOICE = "but got multiple"
# The table checks' messages that are about structure, not a value.
_STRUCTURE_MESSAGES = (bindings.UNKNOWN_ELEMENT, bindings.SECOND_CHOICE)


def _table_issues(resource: dict[str, Any]) -> list[Issue]:
    issues = [
        Issue(
            "error",
            "code-invalid",
            f"{v.path}: '{v.code}' is not in the required value set {v.value_set}",
            (v.path,),
        )
        for v in bindings.check_required_bindings(resource)
    ]
    # Every type: the R4B models know elements R4 does not have.
    kinds, targets = bindings.check_json_kinds_and_find(
        resource, known_resource_types(), constraints.constrained_types()
    )
    issues.extend(
        Issue(
            "error",
            "structure" if message.startswith(_STRUCTURE_MESSAGES) else "value",
            f"{path}: {message}",
            (path,),
        )
        for path, message in kinds
    )
    if not kinds:  # the invariants read values of the kinds their elements have
        issues.extend(constraints.constraint_issues(targets, resource))
    return issues


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    unique = []
    for issue in issues:
        key = (issue.diagnostics, issue.expression)
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    return unique
