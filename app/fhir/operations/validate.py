"""`$validate` (R4 OperationDefinition Resource-validate, resource-operation-validate.html).

`POST [base]/[type]/$validate` and `POST [base]/[type]/[id]/$validate`, with the resource as
the body or a Parameters resource (`resource`, `mode`, `profile`). The answer is always 200
with an OperationOutcome when the request itself is sound: the issues the write path would
raise (app.fhir.validation, the same checks a create or update runs), or one information
issue when there are none. Nothing is stored.

- mode absent (or `profile`): the content is checked; the grant needs read on the type.
- `create`: as a create would check it (a server-written type refuses it); needs create.
- `update` (instance level only): as a PUT to that id would (the id must be the URL's);
  needs update, on that resource when it exists.
- `delete` (instance level only): the content is ignored; the resource must exist and be of
  a type clients may delete; needs delete on it.

`profile`: we validate against the core definitions only. The spec says a server that cannot
validate against a nominated profile SHALL return an error, so any profile other than the
type's core StructureDefinition gives an error issue (not-supported); the content is still
checked against the core definition and those issues listed too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.errors import (
    FhirError,
    Forbidden,
    InvalidRequest,
    Issue,
    MethodNotAllowed,
    ResourceInvalid,
    operation_outcome,
)
from app.fhir.capability import SERVER_WRITTEN_TYPES
from app.fhir.exchange import FhirRequest, FhirResponse
from app.fhir.hooks import Interaction
from app.fhir.operations import parameters
from app.fhir.storage import StoredVersion, UnitOfWork
from app.fhir.validation import is_valid_id, validate_resource

if TYPE_CHECKING:
    from app.context import RequestContext
    from app.fhir.router import FhirRouter
    from app.fhir.service import FhirService

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
METHODS = "POST"
CORE = "http://hl7.org/fhir/StructureDefinition/"
# The permission each mode needs (R4 ValueSet resource-validation-mode; absent: read).
PERMISSIONS = {None: "r", "profile": "r", "create": "c", "update": "u", "delete": "d"}
INSTANCE_MODES = ("update", "delete")


def run(
    router: FhirRouter, uow: UnitOfWork, request: FhirRequest, rtype: str, rid: str | None
) -> FhirResponse:
    if request.method != "POST":
        raise MethodNotAllowed("$validate takes the resource in a POST body", allow=METHODS)
    resource, mode, profile = _inputs(request, rtype)
    if mode not in PERMISSIONS:
        raise InvalidRequest(
            f"mode must be create, update, delete or profile, not '{mode}'", expression="mode"
        )
    if mode in INSTANCE_MODES and rid is None:
        raise InvalidRequest(
            f"mode={mode} needs the resource's id in the URL: [type]/[id]/$validate",
            expression="mode",
        )
    if rid is not None and not is_valid_id(rid):
        raise InvalidRequest(f"'{rid}' is not a valid resource id")
    if resource is None and mode != "delete":
        raise InvalidRequest("$validate needs a resource (the body, or parameter 'resource')",
                             expression="resource")  # fmt: skip
    interaction = _interaction(rtype, rid, mode)
    # A PUT to an id not there (or deleted) is an update-as-create: its validation goes on.
    current = router.service.operation(uow, interaction, must_exist=mode != "update")
    issues = _profile_issues(profile, rtype)
    if mode in ("create", "update", "delete") and rtype in SERVER_WRITTEN_TYPES:
        message = f"{rtype} is written by the server only: no {mode} is accepted"
        issues.append(Issue("error", "not-supported", message))
    if mode != "delete":  # (the resource to delete is there: `operation` saw to it)
        issues += _content_issues(resource, rtype, rid if mode == "update" else None)
    if mode in ("create", "update") and not _has_errors(issues):
        issues += _reach_issues(router, uow, rtype, rid if mode == "update" else None,
                                resource, current)  # fmt: skip
    if not _has_errors(issues):
        what = f"a {mode}" if mode in ("create", "update", "delete") else "the content"
        issues.append(Issue("information", "informational", f"no errors: {what} is valid"))
    return FhirResponse(200, operation_outcome(issues))


def stages_write(service: FhirService, ctx: RequestContext, request: FhirRequest) -> bool:
    """Does this request try a write in a savepoint (_reach_issues): mode create or update
    for a token whose scopes confine what it may write? Its unit of work must then be a
    write transaction, which a read unit cannot hold (autocommit on PostgreSQL; a SQLite read
    must not write). Any other validation reads only, so on SQLite it neither waits for the
    write lock behind other writers nor holds it. Never raises: a bad request is refused by
    `run`, inside its unit of work (and so audited)."""
    if request.method != "POST":
        return False
    try:
        _, mode, _ = _inputs(request, "")
    except FhirError:
        return False
    if mode not in ("create", "update"):
        return False
    segments = request.segments
    rid = segments[1] if len(segments) == 3 else None
    return service.confines(ctx, _interaction(segments[0], rid, mode))


def _interaction(rtype: str, rid: str | None, mode: str | None) -> Interaction:
    return Interaction("operation", rtype, rid, operation="$validate",
                       permission=PERMISSIONS.get(mode, "r"))  # fmt: skip


def _has_errors(issues: list[Issue]) -> bool:
    return any(i.severity in ("error", "fatal") for i in issues)


def _reach_issues(
    router: FhirRouter, uow: UnitOfWork, rtype: str, rid: str | None, resource: Any,
    current: StoredVersion | None,
) -> list[Issue]:  # fmt: skip
    """The write's own refusal of a result outside a confined token's reach (a patient token
    creating another patient's Observation): the same 403 issue, as an error of the
    validation. R4 $validate: "200 OK whether or not the resource is valid"; a 4xx means the
    validation could not be done, and here it was (the token may ask it)."""
    try:
        router.service.try_write(uow, rtype, rid, resource, current)
    except Forbidden as exc:
        return list(exc.issues)
    return []


def _inputs(request: FhirRequest, rtype: str) -> tuple[Any, str | None, str | None]:
    """(resource, mode, profile): a Parameters body carries all three; otherwise the body is
    the resource and mode and profile come from the URL. (Validating a Parameters resource
    itself: a body with a `resource` parameter is taken as the operation's input.)"""
    body = request.body
    as_input = parameters.is_parameters(body) and (
        rtype != "Parameters" or bool(parameters.named(body, "resource"))
    )
    given = parameters.inputs(request, ("mode", "profile")) if as_input else {
        k: v for k in ("mode", "profile") if (v := parameters.query_value(request, k)) is not None
    }  # fmt: skip
    resource = body
    if as_input:
        entries = parameters.named(body, "resource")
        if len(entries) > 1:
            message = "parameter 'resource' is given more than once"
            raise InvalidRequest(message, expression="resource")
        resource = entries[0].get("resource") if entries else None
    return resource, given.get("mode"), given.get("profile")


def _profile_issues(profile: str | None, rtype: str) -> list[Issue]:
    if profile is None or profile.split("|")[0] == CORE + rtype:
        return []
    return [
        Issue(
            "error", "not-supported",
            f"profile '{profile}' is not supported: this server validates against the core "
            f"R4 definitions only ({CORE}{rtype}); the content was checked against those",
            ("profile",),
        )
    ]  # fmt: skip


def _content_issues(resource: Any, rtype: str, update_id: str | None) -> list[Issue]:
    try:
        validate_resource(resource, expected_type=rtype, expected_id=update_id)
    except ResourceInvalid as exc:
        return list(exc.issues)
    return []
