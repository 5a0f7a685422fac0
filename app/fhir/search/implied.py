"""The code system a search parameter on a `code` element implies.

R4 search, token: for an element of type code the system is "implicit", "defined in the
value set". Such values are indexed without a system (the resource holds none), so
`Patient?gender=http://hl7.org/fhir/administrative-gender|male` must also find the rows of
`Patient?gender=male`: the parameter's path leads to a code element whose required value set
draws on exactly that one code system.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from app.fhir import bindings
from app.fhir.search.definitions import data_file, params_for

# A plain path (`Patient.gender`, `Patient.contact.gender`): the only shape followed here.
_PATH = re.compile(r"^[A-Z][A-Za-z]+(\.[a-z][A-Za-z]*)+$")


@functools.cache
def implied_system(rtype: str, code: str) -> str | None:
    """The one code system every branch of the token parameter `code` of rtype implies, or
    None (not a code element, no required binding, a value set over several systems)."""
    param = params_for(rtype).get(code)
    if param is None or param.type != "token":
        return None
    systems = set()
    for branch in param.expression.split("|"):
        value_set = _code_binding(branch.strip())
        found = _value_set_systems().get(value_set or "", [])
        if len(found) != 1:
            return None
        systems.add(found[0])
    return systems.pop() if len(systems) == 1 else None


def _code_binding(path: str) -> str | None:
    """The value set bound to the code element at path, if path is a plain one to a code."""
    if not _PATH.match(path):
        return None
    table = bindings.element_table()
    owner, *names = path.split(".")
    for name in names[:-1]:
        row = _row(table, owner, name)
        if row is None:
            return None
        owner = row[2]  # a backbone element's rows are under its path, a type's under its name
    row = _row(table, owner, names[-1])
    if row is None or row[2] != "code" or not row[3]:
        return None
    return str(row[3]).split("|")[0]


def _row(table: Any, owner: str, name: str) -> list[Any] | None:
    return next((r for r in table.get(owner, ()) if r[0] == name), None)


@functools.cache
def _value_set_systems() -> dict[str, list[str]]:
    doc = json.loads(data_file("r4_core", "valuesets.json").read_text(encoding="utf-8"))
    return {url: list(systems) for url, systems in doc["systems"].items()}
