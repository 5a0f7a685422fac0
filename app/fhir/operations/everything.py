"""`Patient/[id]/$everything` (R4 OperationDefinition Patient-everything,
patient-operation-everything.html): the patient and everything in its compartment, as a
searchset Bundle, "plus whatever resources are needed to support the records - e.g. linked
practitioners, medications, locations, organizations etc.".

It is a compartment search through the door (FhirService.search, the same as
`GET Patient/[id]/*`): authorized as a search of the types it covers (the grant's row
filter applies, so a patient-confined token sees only its own patient; types the grant may
not search are left out, unless the client named them in `_type`), audited as a search
(BALP Query, the patient entity). The supporting resources come as `_include`s of the page's
matches (search.mode include), restricted to SUPPORTING: types that hold no patient's data,
so another patient's record is never brought in by a reference.

Parameters (GET query, or a POST Parameters body): `start` / `end` (dates: care dates,
applied to each type's clinical `date` search parameter; types without one, the Patient
itself included, are not narrowed), `_since` (an instant: changed since, `_lastUpdated`),
`_type` (the compartment types wanted) and `_count` (page size). Paging links repeat these
and a `_page` cursor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, or_, true

from app.errors import InvalidRequest, Issue, MethodNotAllowed, operation_outcome
from app.fhir import bundles, compartments
from app.fhir.exchange import FhirRequest, FhirResponse
from app.fhir.instants import parse_instant
from app.fhir.operations import parameters
from app.fhir.search import SearchParams
from app.fhir.search.params import (
    WILDCARD,
    WILDCARD_REVINCLUDE_SKIPS,
    Include,
    UnsupportedParameter,
    lookup,
    parse_criterion,
)
from app.fhir.search.sql import criterion_sql
from app.fhir.search.values import date_range
from app.fhir.storage import RowFilter, UnitOfWork
from app.fhir.validation import is_valid_id

if TYPE_CHECKING:
    from app.fhir.router import FhirRouter

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
METHODS = "GET, HEAD, POST"
TYPE_LEVEL_REFUSAL = (
    "Patient/$everything (every patient) is not supported: ask for one patient with "
    "Patient/[id]/$everything"
)
# Referenced resources returned along with the record: shared by everyone, no patient's data.
SUPPORTING = ("Device", "Location", "Medication", "Organization", "Practitioner",
              "PractitionerRole", "Substance")  # fmt: skip
NAMES = ("start", "end", "_since", "_type", "_count", "_page")


def run(
    router: FhirRouter, uow: UnitOfWork, request: FhirRequest, rtype: str, rid: str | None
) -> FhirResponse:
    if request.method not in ("GET", "POST"):
        message = "$everything is invoked with GET, or POST with Parameters"
        raise MethodNotAllowed(message, allow=METHODS)
    if (
        request.method == "POST"
        and request.body is not None
        and not parameters.is_parameters(request.body)
    ):
        raise InvalidRequest("the body of a POST $everything must be a Parameters resource")
    assert rid is not None  # instance level only (the dispatch refuses the type level)
    if not is_valid_id(rid):
        raise InvalidRequest(f"'{rid}' is not a valid Patient id")
    given = parameters.inputs(request, NAMES)
    held = [t for t in compartments.members("Patient") if t not in WILDCARD_REVINCLUDE_SKIPS]
    named = [t.strip() for t in given.get("_type", "").split(",") if t.strip()]
    router.service.check_listed_types(named)
    outside = [t for t in named if t not in compartments.members("Patient")]
    if outside:
        raise InvalidRequest(f"_type names types never in a Patient compartment: {outside}",
                             expression="_type")  # fmt: skip
    # _count and _page as a search reads them; _since is the search's _lastUpdated.
    pairs: list[tuple[str, str]] = [(k, given[k]) for k in ("_count", "_page") if k in given]
    if "_since" in given:
        pairs.append(("_lastUpdated", "ge" + _since(given["_since"])))
    params = SearchParams.parse(pairs, "Patient")
    count = router.default_count if params.count is None else params.count
    params = params.with_count(min(count, router.max_count))
    period = _period(given.get("start"), given.get("end"))
    result = router.service.search(
        uow, None, replace(params, includes=_supporting()), types=named or held,
        compartment=("Patient", rid), operation="$everything", types_named=bool(named),
        within=(lambda inner: CarePeriod(inner, period, uow.ctx.base_url)) if period else None,
    )  # fmt: skip
    echoed = [(k, given[k]) for k in NAMES[:4] if k in given]
    link_params = replace(params, criteria=())  # the links repeat the operation's parameters
    notes = [Issue("warning", "too-costly", note) for note in result.warnings]
    outcome = operation_outcome(notes) if notes else None
    bundle = bundles.searchset(
        uow.ctx.base_url, f"Patient/{rid}/$everything", link_params, result, outcome, echoed
    )
    return FhirResponse(200, bundle)


def _supporting() -> tuple[Include, ...]:
    return tuple(Include(WILDCARD, WILDCARD, t, False, False) for t in SUPPORTING)


def _since(value: str) -> str:
    """An instant; a space can only be a `+` of its zone the client left unencoded."""
    value = value.replace(" ", "+")
    try:
        parse_instant(value)
    except ValueError as exc:
        raise InvalidRequest("_since must be an instant", expression="_since") from exc
    return value


def _period(start: str | None, end: str | None) -> tuple[str | None, str | None] | None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and date_range(value) is None:
            raise InvalidRequest(f"{name} must be a date", expression=name)
    return (start, end) if start or end else None


@dataclass(frozen=True)
class CarePeriod:
    """A RowFilter: the compartment's rows (`inner`) whose care date (the type's `date`
    search parameter) falls in [start, end]; types without one are not narrowed."""

    inner: RowFilter
    period: tuple[str | None, str | None]
    base_url: str

    def sql(self, owner_type: Any, owner_id: Any) -> ColumnElement[bool]:
        if not isinstance(owner_type, str):
            types = compartments.members("Patient")
            dated = [t for t in types if _dated(t)]
            return and_(
                self.inner.sql(owner_type, owner_id),
                or_(
                    owner_type.not_in(dated),
                    *[and_(owner_type == t, self._dates(t, owner_id)) for t in dated],
                ),
            )
        return and_(self.inner.sql(owner_type, owner_id), self._dates(owner_type, owner_id))

    def _dates(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        if not _dated(rtype):
            return true()
        start, end = self.period
        bounds = [("ge", start), ("le", end)]
        return and_(
            true(),
            *[
                criterion_sql(
                    parse_criterion(rtype, "date", op + value),
                    (rtype, owner_id),
                    self.base_url,
                    top=False,
                    drive=False,
                )  # fmt: skip
                for op, value in bounds
                if value
            ],
        )

    def criteria_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        return self.inner.criteria_sql(rtype, owner_id)

    def included_sql(self, rtype: str, owner_id: Any) -> ColumnElement[bool]:
        return self.inner.included_sql(rtype, owner_id)


def _dated(rtype: str) -> bool:
    try:
        return lookup(rtype, "date")[0] == "date"
    except UnsupportedParameter:
        return False
