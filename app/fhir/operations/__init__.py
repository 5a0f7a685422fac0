"""FHIR operations (`$name`, R4 operations.html), one module each, dispatched from the router.

Each operation is a function of the router's unit of work and the request; it reaches data
only through the door (FhirService), which authorizes and audits it like any interaction.
An operation the server does not define, or one asked for at a level or on a type it is not
defined for, is answered 404 (or 400 where its definition names the level but we do not
serve it) with an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import InvalidRequest, Issue, NotFound
from app.fhir.exchange import FhirRequest, FhirResponse
from app.fhir.operations import everything, validate
from app.fhir.storage import UnitOfWork

if TYPE_CHECKING:
    from app.context import RequestContext
    from app.fhir.router import FhirRouter
    from app.fhir.service import FhirService

# (router, unit of work, request, type, id or None) -> response
Handler = Callable[["FhirRouter", UnitOfWork, FhirRequest, str, "str | None"], FhirResponse]


@dataclass(frozen=True)
class Operation:
    name: str  # "$validate"
    definition: str  # the canonical URL of its OperationDefinition
    handler: Handler
    types: frozenset[str] | None  # None: every resource type
    type_level: bool
    instance_level: bool
    # Why a level its definition has is not served (answered 400 not-supported).
    unsupported_type_level: str = ""


OPERATIONS = {
    op.name: op
    for op in (
        Operation(
            "$validate", validate.DEFINITION, validate.run, None,
            type_level=True, instance_level=True,
        ),
        Operation(
            "$everything", everything.DEFINITION, everything.run, frozenset({"Patient"}),
            type_level=False, instance_level=True,
            unsupported_type_level=everything.TYPE_LEVEL_REFUSAL,
        ),
    )
}  # fmt: skip


def dispatch(router: FhirRouter, uow: UnitOfWork, request: FhirRequest) -> FhirResponse:
    """`[type]/$name` or `[type]/[id]/$name`; anything else with a `$` segment is unknown."""
    segments = request.segments
    name = segments[-1]
    op = OPERATIONS.get(name)
    if op is None or len(segments) not in (2, 3) or any(s.startswith("$") for s in segments[:-1]):
        raise NotFound(f"operation '{request.path}' is not supported")
    rtype = segments[0]
    router.service.check_type(rtype)
    if op.types is not None and rtype not in op.types:
        raise NotFound(f"operation {name} is not defined on {rtype}")
    rid = segments[1] if len(segments) == 3 else None
    if rid is None and not op.type_level:
        message = op.unsupported_type_level or f"{name} is invoked on an instance only"
        raise InvalidRequest(message, issues=[Issue("error", "not-supported", message)])
    if rid is not None and not op.instance_level:
        raise NotFound(f"{name} is not defined on a {rtype} instance")
    return op.handler(router, uow, request, rtype, rid)


def is_operation(path: str) -> bool:
    """Does the request path (below the FHIR base) name an operation? (A string test: it is
    asked for every write, and no type or id holds a `$`.)"""
    return "/$" in path or path.startswith("$")


def stages_write(service: FhirService, ctx: RequestContext, request: FhirRequest) -> bool:
    """Does an operation request try a write (undone) and so need a write unit of work?"""
    return request.segments[-1:] == ["$validate"] and validate.stages_write(service, ctx, request)


def for_type(rtype: str) -> list[Operation]:
    """The operations a type's CapabilityStatement entry lists."""
    return [op for op in OPERATIONS.values() if op.types is None or rtype in op.types]
