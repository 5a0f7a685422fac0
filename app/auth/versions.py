"""Whether a confined grant may see one stored version, judged on that version's own content.

The row filter (enforcement.py) is SQL over the search index, which holds only the current
version of each resource. History and vread also return older versions: an Observation that
was Patient/B's before it was moved to Patient/A, or a `vital-signs` one re-filed as
`laboratory`, would otherwise show Patient A (or a `?category=laboratory` grant) what it
never had access to. So each version a history or vread returns is checked against the
grant's rules on its own index rows, computed in memory (no database round trip): the
Patient compartment on its references, a granular restriction on its tokens. A restriction
of another kind (a date, a string, a chain) cannot be judged that way; such a version is
shown only when it is the current one, which the SQL filter has already judged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.auth import compartment
from app.fhir import jsonio
from app.fhir.search.criteria import split_token
from app.fhir.search.indexer import index_rows
from app.fhir.search.params import parse_criterion
from app.fhir.storage import StoredVersion, UnitOfWork, get_current
from app.fhir.tables import search_reference, search_token

if TYPE_CHECKING:  # the filter's module calls this one
    from app.auth.enforcement import AccessFilter, Rule

Rows = dict[Any, list[dict[str, Any]]]


def version_visible(uow: UnitOfWork, access: AccessFilter, version: StoredVersion) -> bool:
    rules = access.rules(version.resource_type)
    if rules is None or version.content is None:
        return True  # unconfined for the type; a deletion carries no content to show
    rows = index_rows(version.resource_type, version.id, jsonio.loads(version.content))
    verdicts = [_rule_allows(version, rule, rows, access.base_url) for rule in rules]
    if True in verdicts:
        return True
    if None not in verdicts:
        return False
    current = get_current(uow, version.resource_type, version.id)
    return current is not None and current.version_id == version.version_id


def _rule_allows(version: StoredVersion, rule: Rule, rows: Rows, base_url: str) -> bool | None:
    """True or False, or None when the rule's restriction cannot be judged in memory."""
    if rule.patient is not None and not _in_compartment(version, rule.patient, rows, base_url):
        return False
    verdict: bool | None = True
    for key, value in rule.query:
        matched = _token_matches(version.resource_type, key, value, rows)
        if matched is False:
            return False
        if matched is None:
            verdict = None
    return verdict


def _in_compartment(version: StoredVersion, patient: str, rows: Rows, base_url: str) -> bool:
    params = compartment.patient_compartment().get(version.resource_type)
    if not params:
        return True
    if version.resource_type == "Patient" and version.id == patient:
        return True
    return any(
        row["param"] in params
        and row.get("target_type") == "Patient"
        and row.get("target_id") == patient
        and _is_local(row.get("url"), base_url)
        for row in rows.get(search_reference, [])
    )


def _is_local(url: str | None, base_url: str) -> bool:
    """As sql.is_local: a relative reference, or an absolute one under our base."""
    return url is None or not base_url or url.startswith(base_url + "/")


def _token_matches(rtype: str, key: str, value: str, rows: Rows) -> bool | None:
    criterion = parse_criterion(rtype, key, value)
    if criterion.kind != "token" or criterion.modifier or criterion.chain is not None:
        return None
    tokens = [r for r in rows.get(search_token, []) if r["param"] == criterion.name]
    return any(_token_equal(raw, row) for raw in criterion.values for row in tokens)


def _token_equal(raw: str, row: dict[str, Any]) -> bool:
    """As criteria._token: `code`, `system|code`, `|code` (no system), `system|`."""
    parts = split_token(raw)
    if len(parts) == 1:
        return bool(row.get("code") == parts[0])
    system, code = parts[0], "|".join(parts[1:])
    if row.get("system") != (system or None):
        return False
    return not code or row.get("code") == code
