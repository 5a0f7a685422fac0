"""Transport-free FHIR router: one FhirRequest in, one FhirResponse out.

`dispatch` decides the transaction boundaries (one per request; one per batch entry; one for a
whole transaction Bundle); `handle` maps a single request onto the service inside a given unit
of work. Bundle entries re-enter `handle`, so they behave exactly like standalone requests.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.context import RequestContext
from app.digits import whole_number
from app.errors import (
    InvalidRequest,
    Issue,
    MethodNotAllowed,
    NotFound,
    information_outcome,
    operation_outcome,
)
from app.fhir import bundles, capability, compartments, operations
from app.fhir.exchange import FhirRequest, FhirResponse
from app.fhir.history import HistoryCursor
from app.fhir.instants import parse_http_date, parse_instant, to_instant
from app.fhir.nul import refuse_nul
from app.fhir.search import SearchParams
from app.fhir.search.params import (
    RESULT_PARAMS,
    WILDCARD_REVINCLUDE_SKIPS,
    UnsupportedParameter,
    decode_cursor,
    encode_cursor,
    parse_criterion,
)
from app.fhir.search.values import date_range
from app.fhir.service import FhirService, WriteOutcome
from app.fhir.storage import StoredVersion, UnitOfWork
from app.fhir.validation import is_valid_id

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class FhirRouter:
    def __init__(
        self, service: FhirService, *, default_count: int = 50, max_count: int = 1000
    ) -> None:
        self.service = service
        self.default_count = default_count
        self.max_count = max_count

    def dispatch(self, ctx: RequestContext, request: FhirRequest) -> FhirResponse:
        """Run one top-level request in the transaction(s) it needs."""
        if request.method == "POST" and not request.segments:
            from app.fhir import transaction

            return transaction.process_bundle(self, ctx, request)
        # An operation stores nothing ($validate, $everything): a read unit, even for a POST;
        # but $validate of a create or update by a confined token tries the write in a
        # savepoint, undone.
        write = request.method in WRITE_METHODS and (
            not operations.is_operation(request.path)
            or operations.stages_write(self.service, ctx, request)
        )
        with self.service.unit_of_work(ctx, write=write) as uow:
            return self.handle(uow, request)

    def handle(self, uow: UnitOfWork, request: FhirRequest) -> FhirResponse:
        segments = request.segments
        refuse_nul("/".join(segments), request.path)
        method = request.method
        if not segments:
            if method != "GET":
                raise MethodNotAllowed(f"{method} is not supported at the base URL")
            return self._search(uow, request, None)
        if segments[0] == "metadata" and len(segments) == 1:
            if method != "GET":
                raise MethodNotAllowed("metadata is read-only")
            mode = dict(request.query).get("mode")
            return FhirResponse(200, capability.capability_statement(uow.ctx.base_url, mode))
        if segments == ["_search"]:  # system search by POST: GET [base]?... with a form body
            if method != "POST":
                raise MethodNotAllowed("use GET on the base URL or POST on _search")
            return self._search(uow, request, None)
        if segments[0] == "_history" and len(segments) == 1:
            return self._history(uow, request, None, None)
        if operations.is_operation(request.path):
            return operations.dispatch(self, uow, request)
        rtype = segments[0]
        self.service.check_type(rtype)
        if len(segments) == 1:
            return self._type_level(uow, request, rtype)
        if len(segments) == 2 and segments[1] == "_search":
            if method != "POST":
                raise MethodNotAllowed("use GET on the type or POST on _search")
            return self._search(uow, request, rtype)
        if len(segments) == 2 and segments[1] == "_history":
            return self._history(uow, request, rtype, None)
        if len(segments) == 2:
            return self._instance_level(uow, request, rtype, segments[1])
        if len(segments) == 3 and segments[2] == "_history":
            return self._history(uow, request, rtype, segments[1])
        if len(segments) == 3 and not segments[2].startswith("_"):
            if method != "GET":
                raise MethodNotAllowed("a compartment search is read-only: use GET")
            return self._compartment_search(uow, request, rtype, segments[1], segments[2])
        if len(segments) == 4 and segments[2] == "_history":
            if method != "GET":
                raise MethodNotAllowed("a version is read-only")
            version = self.service.vread(uow, rtype, segments[1], segments[3])
            return _read_response(uow.ctx.base_url, request, version)
        raise NotFound(f"no FHIR endpoint at '{request.path}'")

    # ------------------------------------------------------------ type level

    def _type_level(self, uow: UnitOfWork, request: FhirRequest, rtype: str) -> FhirResponse:
        base = uow.ctx.base_url
        match request.method:
            case "GET":
                return self._search(uow, request, rtype)
            case "POST":
                outcome = self.service.create(
                    uow,
                    rtype,
                    request.body,
                    if_none_exist=request.header("if-none-exist"),
                    assigned_id=request.assigned_id,
                    fresh_id=request.fresh_id,
                )
                return _write_response(base, outcome)
            case "PUT":
                query = self._condition(request)
                outcome = self.service.conditional_update(
                    uow,
                    rtype,
                    query,
                    request.body,
                    if_match=request.header("if-match"),
                    if_none_match=request.header("if-none-match"),
                )
                return _write_response(base, outcome)
            case "PATCH":
                outcome = self.service.conditional_patch(
                    uow,
                    rtype,
                    self._condition(request),
                    request.body,
                    if_match=request.header("if-match"),
                )
                return _write_response(base, outcome)
            case "DELETE":
                deleted = self.service.conditional_delete(
                    uow, rtype, self._condition(request), if_match=request.header("if-match")
                )
                if deleted is None:
                    return FhirResponse(
                        200, information_outcome("no resource matched; nothing deleted")
                    )
                return FhirResponse(
                    204, None, {"ETag": f'W/"{deleted.version_id}"'}, version=deleted
                )
        raise MethodNotAllowed(f"{request.method} is not supported on {rtype}")

    @staticmethod
    def _condition(request: FhirRequest) -> str:
        if not request.query:
            raise MethodNotAllowed(
                f"{request.method} on a type needs search criteria (conditional)"
            )
        return request.query_string

    # ------------------------------------------------------------ instance level

    def _instance_level(
        self, uow: UnitOfWork, request: FhirRequest, rtype: str, rid: str
    ) -> FhirResponse:
        base = uow.ctx.base_url
        if_match = request.header("if-match")
        match request.method:
            case "GET":
                return _read_response(base, request, self.service.read(uow, rtype, rid))
            case "PUT":
                outcome = self.service.update(
                    uow, rtype, rid, request.body, if_match=if_match,
                    if_none_match=request.header("if-none-match"),
                    prefetched=request.prefetched, current=request.current,
                )  # fmt: skip
                return _write_response(base, outcome)
            case "PATCH":
                outcome = self.service.patch(uow, rtype, rid, request.body, if_match=if_match)
                return _write_response(base, outcome)
            case "DELETE":
                deleted = self.service.delete(uow, rtype, rid, if_match=if_match)
                headers = {"ETag": f'W/"{deleted.version_id}"'} if deleted else {}
                return FhirResponse(204, None, headers, version=deleted)
        raise MethodNotAllowed(f"{request.method} is not supported on {rtype}/{rid}")

    # ------------------------------------------------------------ search and history

    def _compartment_search(
        self, uow: UnitOfWork, request: FhirRequest, ctype: str, cid: str, target: str
    ) -> FhirResponse:
        """GET [base]/Patient/123/Observation?... (R4 http.html#search): a search whose matches
        are confined to one compartment; `*` searches every type the compartment can hold."""
        if ctype not in compartments.definitions():
            defined = ", ".join(sorted(compartments.definitions()))
            raise NotFound(f"{ctype} is not a compartment (R4 defines {defined})")
        if not is_valid_id(cid):
            raise InvalidRequest(f"'{cid}' is not a valid {ctype} id")
        held = compartments.members(ctype)
        path = f"{ctype}/{cid}/{target}"
        if target == "*":
            return self._search(uow, request, None, compartment=(ctype, cid), path=path, held=held)
        self.service.check_type(target)
        if target not in held:
            raise InvalidRequest(f"{target} resources are never in a {ctype} compartment")
        return self._search(uow, request, target, compartment=(ctype, cid), path=path)

    def _search(
        self,
        uow: UnitOfWork,
        request: FhirRequest,
        rtype: str | None,
        *,
        compartment: tuple[str, str] | None = None,
        path: str | None = None,
        held: list[str] | None = None,
    ) -> FhirResponse:
        """A search; `held`: the types a compartment's `*` search covers (`_type` narrows)."""
        strict = "handling=strict" in (request.header("prefer") or "")
        pairs = list(request.query)
        if request.method == "POST" and isinstance(request.body, list):
            pairs += request.body  # form-encoded parameters of POST _search
        types: list[str] | None = None
        ignored: list[str] = []
        listed: list[str] = []
        if rtype is None:  # system search: a parameter must mean the same on every type
            listed = [t for v in dict(pairs).get("_type", "").split(",") for t in [v.strip()] if t]
            self.service.check_listed_types(listed)
            outside = [t for t in listed if held is not None and t not in held]
            if outside:
                raise InvalidRequest(f"_type names types never in this compartment: {outside}")
            # `*` leaves out the audit trail, as `_revinclude=*` does (one AuditEvent per
            # access would swamp the patient's record); `_type=AuditEvent` asks for it.
            types = listed or [t for t in held or [] if t not in WILDCARD_REVINCLUDE_SKIPS]
            pairs, ignored = _shared_parameters(
                [(k, v) for k, v in pairs if k != "_type"], types, strict
            )
        params = SearchParams.parse(
            pairs, rtype or (types[0] if types else "Patient"), strict=strict
        )
        if ignored:
            params = replace(params, ignored=params.ignored + tuple(ignored))
        if params.count is None:
            params = params.with_count(self.default_count)
        params = params.with_count(min(params.count or 0, self.max_count))
        result = self.service.search(uow, rtype, params, types=types, compartment=compartment)
        notes = list(result.warnings)
        if result.ignored:
            notes.append("ignored unsupported search parameters: " + ", ".join(result.ignored))
        issues = None
        if notes:  # Issue quotes the names as printable text (U+FFFF is no XML character)
            issues = operation_outcome([Issue("warning", "not-supported", n) for n in notes])
        path = path or rtype or ""
        extra = [("_type", ",".join(listed))] if listed else []
        return FhirResponse(
            200, bundles.searchset(uow.ctx.base_url, path, params, result, issues, extra)
        )

    def _history(
        self, uow: UnitOfWork, request: FhirRequest, rtype: str | None, rid: str | None
    ) -> FhirResponse:
        if request.method != "GET":
            raise MethodNotAllowed("history is read-only")
        query = dict(request.query)
        since = _instant_param(query, "_since")
        at = _period_param(query, "_at")
        count = _count(query.get("_count"), self.default_count, self.max_count)
        cursor = _history_cursor(query.get("_page"))
        result = self.service.history(
            uow, rtype, rid, since=since, at=at, cursor=cursor, count=count
        )
        nxt = result.next_cursor
        token = (
            encode_cursor({"at": [nxt.last_updated, nxt.resource_type, nxt.id, nxt.version_id]})
            if nxt
            else None
        )
        path = "/".join(p for p in (rtype, rid, "_history") if p)
        pairs = [(k, v) for k, v in request.query if k in ("_since", "_at", "_count", "_page")]
        return FhirResponse(
            200, bundles.history(uow.ctx.base_url, path, pairs, result.versions, token)
        )


def _shared_parameters(
    pairs: list[tuple[str, str]], types: list[str], strict: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """Keep the criteria every searched type understands the same way; the rest are ignored
    (lenient) or refused (strict). Without _type only resource-level parameters qualify."""
    kept, ignored = [], []
    for key, value in pairs:
        name = key.split(":")[0].split(".")[0]
        if name in RESULT_PARAMS or name.startswith("_") and name != "_has":
            kept.append((key, value))
            continue
        kinds, errors = set(), []
        for rtype in types or [""]:
            try:
                kinds.add(parse_criterion(rtype, key, value).kind if rtype else None)
            except UnsupportedParameter:
                kinds.add(None)
            except InvalidRequest as exc:  # known, but a bad modifier or value: never ignored
                errors.append(exc)
        if errors and None not in kinds:
            raise errors[0]
        if len(kinds) == 1 and None not in kinds:
            kept.append((key, value))
        elif strict:
            raise InvalidRequest(f"'{key}' is not a parameter shared by every type searched")
        else:
            ignored.append(key)
    return kept, ignored


def _write_response(base: str, outcome: WriteOutcome) -> FhirResponse:
    if outcome.matched_existing:
        response = FhirResponse.for_version(base, outcome.version, 200)
        response.headers["Location"] = (
            f"{base}/{outcome.version.resource_type}/{outcome.version.id}"
        )
        if outcome.content_withheld:  # a create-only grant learns that it exists, not what
            response.body = information_outcome(
                "a matching resource exists; this token may not read it"
            )
        return response
    return FhirResponse.for_version(base, outcome.version, 201 if outcome.created else 200)


def _read_response(base: str, request: FhirRequest, version: StoredVersion) -> FhirResponse:
    """A read or vread: 304 when the client's copy is this version (RFC 9110 13.1.2, 13.1.3;
    a version never changes, so a vread answers conditional requests as a read does)."""
    if _not_modified(request, version.version_id, version.last_updated):
        return FhirResponse(304, None, {"ETag": f'W/"{version.version_id}"'})
    return FhirResponse.for_version(base, version)


def _not_modified(request: FhirRequest, version_id: int, last_updated: int) -> bool:
    if_none_match = request.header("if-none-match")
    if if_none_match:  # RFC 9110 13.1.2: a list of entity tags, or "*" (it exists)
        tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")}
        return "*" in tags or str(version_id) in tags
    since = request.header("if-modified-since")
    if since:
        moment = parse_http_date(since)
        return moment is not None and last_updated // 1_000_000 <= moment // 1_000_000
    return False


def _instant_param(query: dict[str, str], name: str) -> int | None:
    """`_since`: an instant (a date is taken as its first moment)."""
    if name not in query:
        return None
    try:
        moment = parse_instant(_unencoded_plus(query[name]))
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an instant", expression=name) from exc
    return _in_range(name, (moment, moment + 1))[0]


def _period_param(query: dict[str, str], name: str) -> tuple[int, int] | None:
    """`_at`: a date(Time) stands for the period its precision spans, [low, high) in µs."""
    if name not in query:
        return None
    period = date_range(_unencoded_plus(query[name]))
    if period is None:
        raise InvalidRequest(f"{name} must be a date, dateTime or instant", expression=name)
    return _in_range(name, period)


def _unencoded_plus(value: str) -> str:
    """A space in an instant can only be a `+` the client left unencoded in the URL
    (`T10:00:00+05:00` arrives as `T10:00:00 05:00`): read it as one."""
    return value.replace(" ", "+")


def _in_range(name: str, period: tuple[int, int]) -> tuple[int, int]:
    """Refuse moments no instant can name (UTC years 1-9999: `9999-12-31T23:59:59-14:00` is
    in year 10000), which the audit trail could not write back (a 500 otherwise)."""
    try:
        to_instant(period[0]), to_instant(period[1] - 1)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{name} is out of range", expression=name) from exc
    return period


def _count(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    number = whole_number(raw, maximum)
    if number is None:
        raise InvalidRequest("_count must be a non-negative integer", expression="_count")
    # 0 is a page of nothing: a server "cannot return more" than _count (R4 http.html#history)
    return number


def _history_cursor(token: str | None) -> HistoryCursor | None:
    if not token:
        return None
    position: Any = decode_cursor(token).get("at")
    try:
        last_updated, rtype, rid, version_id = position
        return HistoryCursor(int(last_updated), str(rtype), str(rid), int(version_id))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            "_page is not a valid history paging token", expression="_page"
        ) from exc
