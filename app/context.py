"""Who is asking, through what: carried by every call into the FHIR service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.auth.grant import Grant

if TYPE_CHECKING:
    from starlette.requests import Request


@dataclass
class Trail:
    """Per-request notes of the audit hook: interactions awaiting their audit record, and
    whether a failure has been recorded (so the edge does not record it twice)."""

    pending: list[Any] = field(default_factory=list)
    failure_recorded: bool = False
    # Set by a caller that commits read units' records itself before it answers (the FHIR
    # endpoint: audit/async_commit.py); they wait in `deferred` until then.
    may_defer: bool = False
    deferred: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class RequestContext:
    channel: str = "rest"  # rest | hl7 | device | agent | cli | system
    client_id: str | None = None
    user: str | None = None  # fhirUser reference, e.g. Practitioner/123
    grant: Grant | None = None  # None: nobody; the door refuses (fail closed)
    remote_addr: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    base_url: str = ""
    request_line: str = ""  # e.g. "GET /fhir/Patient?name=x": what the caller asked for
    trail: Trail = field(default_factory=Trail, compare=False, repr=False)

    @classmethod
    def system(cls, base_url: str = "", channel: str = "system") -> RequestContext:
        """The server acting on its own behalf (CLI, migrations, tests)."""
        return cls(
            channel=channel, client_id="medisentinel", grant=Grant.system(), base_url=base_url
        )


def http_context(
    request: Request, grant: Grant | None = None, *, channel: str = "rest"
) -> RequestContext:
    """The context of an HTTP request: its caller (no grant: anonymous, refused at the door),
    address and request line, for the FHIR endpoint, the console and the HL7 endpoint alike."""
    client = request.client
    query = request.url.query
    return RequestContext(
        channel=channel,
        client_id=grant.client_id if grant else None,
        user=grant.fhir_user if grant else None,
        grant=grant,
        remote_addr=client.host if client else None,
        base_url=request.app.state.settings.fhir_base_url,
        request_line=f"{request.method} {request.url.path}" + (f"?{query}" if query else ""),
    )
