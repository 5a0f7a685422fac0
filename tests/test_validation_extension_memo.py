"""The Extension shortcut of the model check (app.fhir.extension_memo) never changes an answer.

Every official example of the common types, and mutations that break their Extensions, give
the same issues (paths, codes, messages) with the shortcut as with the full model check. Each
resource is judged twice with the shortcut, so that the second time its Extensions are
remembered.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.errors import ResourceInvalid
from app.fhir import extension_memo, jsonio, validation
from tests.fhir_package import core_example_files, require_examples_dir

Mutation = Callable[[dict[str, Any]], None]


def _issues(resource: dict[str, Any], memo: bool) -> list[tuple[str, str, str, tuple[str, ...]]]:
    validation.USE_EXTENSION_MEMO = memo
    try:
        validation.validate_resource(copy.deepcopy(resource))
    except ResourceInvalid as exc:
        return [(i.severity, i.code, i.diagnostics, i.expression) for i in exc.issues]
    finally:
        validation.USE_EXTENSION_MEMO = True
    return []


def _assert_same(resource: dict[str, Any]) -> list[Any]:
    slow = _issues(resource, memo=False)
    assert _issues(resource, memo=True) == slow
    assert _issues(resource, memo=True) == slow  # now with its Extensions remembered
    return slow


def _extension_lists(value: Any) -> Iterator[list[Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("extension", "modifierExtension") and isinstance(item, list):
                yield item
            yield from _extension_lists(item)
    elif isinstance(value, list):
        for item in value:
            yield from _extension_lists(item)


def _first_extension(resource: dict[str, Any]) -> dict[str, Any]:
    for found in _extension_lists(resource):
        if found and isinstance(found[0], dict):
            return found[0]
    resource.setdefault("extension", []).append({"url": "urn:x:y", "valueString": "a"})
    return resource["extension"][-1]


def _value_key(extension: dict[str, Any]) -> str:
    return next((k for k in extension if k.startswith("value")), "valueString")


def _wrong_kind(r: dict[str, Any]) -> None:
    e = _first_extension(r)
    e[_value_key(e)] = 12


def _two_values(r: dict[str, Any]) -> None:
    e = _first_extension(r)
    e["valueString"], e["valueBoolean"] = "a", True


def _no_url(r: dict[str, Any]) -> None:
    _first_extension(r).pop("url", None)


def _bad_date(r: dict[str, Any]) -> None:
    e = _first_extension(r)
    e.pop(_value_key(e), None)
    e["valueDate"] = "2020-13-45"


def _unknown_element(r: dict[str, Any]) -> None:
    _first_extension(r)["colour"] = "blue"


def _bad_nested(r: dict[str, Any]) -> None:
    e = _first_extension(r)
    e.pop(_value_key(e), None)
    e["extension"] = [{"url": "inner", "valueDate": "yesterday"}, {"valueString": "x"}]


def _good_nested(r: dict[str, Any]) -> None:
    e = _first_extension(r)
    e.pop(_value_key(e), None)
    e["extension"] = [{"url": "inner", "valueDate": "2020-01-02"}, {"url": "b", "valueInteger": 1}]


def _modifier(r: dict[str, Any]) -> None:
    r["modifierExtension"] = [{"url": "urn:m", "valueCode": "a b"}, {"url": "urn:n"}]


def _not_a_list(r: dict[str, Any]) -> None:
    r["extension"] = {"url": "urn:x", "valueString": "a"}


def _not_an_object(r: dict[str, Any]) -> None:
    r["extension"] = ["urn:x"]


def _partner(r: dict[str, Any]) -> None:
    # An id on the value is fine (ele-1: the value is there); an id that is no string is not.
    r["extension"] = [{"url": "urn:x", "valueString": "a", "_valueString": {"id": 7}}]


def _decimal(r: dict[str, Any]) -> None:
    r["extension"] = [{"url": "urn:x", "valueInteger": jsonio.loads("1e0")}]


def _contained(r: dict[str, Any]) -> None:
    r["contained"] = [
        {"resourceType": "Basic", "id": "b", "code": {"text": "t"}, "extension": [{"url": 5}]}
    ]


def _primitive_extension(r: dict[str, Any]) -> None:
    r["_id"] = {"extension": [{"url": "urn:x", "valueDate": "2020-02-30"}]}


MUTATIONS: dict[str, Mutation] = {
    "wrong-kind": _wrong_kind,
    "two-values": _two_values,
    "no-url": _no_url,
    "bad-date": _bad_date,
    "unknown-element": _unknown_element,
    "bad-nested": _bad_nested,
    "good-nested": _good_nested,
    "modifier": _modifier,
    "not-a-list": _not_a_list,
    "not-an-object": _not_an_object,
    "partner": _partner,
    "decimal": _decimal,
    "contained": _contained,
    "primitive-extension": _primitive_extension,
}


def _examples() -> list[tuple[str, dict[str, Any]]]:
    directory = require_examples_dir()
    return [(n, jsonio.loads((directory / n).read_bytes())) for n in core_example_files()]


def test_official_examples_give_the_same_issues_with_and_without_the_shortcut() -> None:
    examples = _examples()
    assert len(examples) > 100
    with_extensions = 0
    for name, resource in examples:
        with_extensions += bool(next(_extension_lists(resource), None))
        assert _assert_same(resource) is not None, name
    assert with_extensions > 10


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_broken_extensions_give_the_same_issues(mutation: str) -> None:
    broken = 0
    for name, resource in _examples():
        mutated = copy.deepcopy(resource)
        MUTATIONS[mutation](mutated)
        issues = _assert_same(mutated)
        assert issues is not None, name
        broken += bool(issues)
    # Every mutation but the good one breaks most examples (a 12 is a fine valueDecimal).
    assert broken > 100 or mutation == "good-nested"


def test_a_patient_with_remembered_extensions_is_still_checked_everywhere_else() -> None:
    marker = {"url": "urn:medisentinel:hl7v2-field", "valueString": "PID-5"}
    good = {
        "resourceType": "Patient",
        "name": [{"family": f"F{i}", "extension": [dict(marker)]} for i in range(5)],
    }
    assert _assert_same(good) == []
    bad = copy.deepcopy(good)
    bad["birthDate"] = "1970-02-31"
    assert [i[3] for i in _assert_same(bad)] == [("Patient.birthDate",)]
    bad["name"][3]["extension"][0]["valueString"] = 7
    assert ("Patient.name[3].extension[0].valueString",) in [i[3] for i in _assert_same(bad)]


def test_remembered_extensions_are_not_judged_again() -> None:
    marker = {"url": "urn:test:memo-marker", "valueString": "PID-13"}
    patient = {"resourceType": "Patient", "name": [{"family": "F", "extension": [marker]}]}
    judged: list[Any] = []

    def extension_accepts(extension: Any) -> bool:
        judged.append(extension)
        return True

    assert extension_memo.all_clean(
        patient, lambda view: "extension" not in view, extension_accepts
    )
    assert extension_memo.all_clean(patient, lambda view: True, extension_accepts)
    assert judged == [marker]  # the second time it was remembered
    # Anything wrong, or nothing to take out, is "not known": the full model check runs.
    assert not extension_memo.all_clean(patient, lambda view: False, extension_accepts)
    assert not extension_memo.may_have_extensions({"resourceType": "Patient", "text": "extension"})
    assert extension_memo.may_have_extensions(patient)
    assert extension_memo.may_have_extensions({"resourceType": "Patient", "n": 2**70})
    fresh = {"resourceType": "Patient", "extension": [{"url": "urn:test:never-seen"}]}
    assert not extension_memo.all_clean(fresh, lambda view: True, lambda ext: False)


def test_the_memo_forgets_the_oldest_beyond_its_size() -> None:
    def patient(i: int) -> dict[str, Any]:
        return {"resourceType": "Patient", "extension": [{"url": f"urn:test:size-{i}"}]}

    for i in range(extension_memo.MEMO_SIZE + 1):
        assert extension_memo.all_clean(patient(i), lambda v: True, lambda e: True)
    assert len(extension_memo._accepted) == extension_memo.MEMO_SIZE
    assert not extension_memo.all_clean(patient(0), lambda v: True, lambda e: False)
    assert extension_memo.all_clean(patient(1), lambda v: True, lambda e: False)


def test_an_element_of_extensions_only_still_takes_the_shortcut() -> None:
    birth_time = {"url": "urn:test:birth-time", "valueDateTime": "1974-12-25T14:35:45-05:00"}
    patient = {"resourceType": "Patient", "birthDate": "1974-12-25", "_birthDate": {}}
    patient["_birthDate"] = {"extension": [birth_time]}
    assert _assert_same(patient) == []
    assert validation._clean_by_memo(validation._model_class("Patient"), patient)
