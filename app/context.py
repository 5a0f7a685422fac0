"""Who is asking, through what: carried by every call into the FHIR service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.auth.grant import Grant


@dataclass(frozen=True)
class RequestContext:
    channel: str = "rest"  # rest | hl7 | device | agent | cli | system
    client_id: str | None = None
    user: str | None = None  # fhirUser reference, e.g. Practitioner/123
    grant: Grant | None = None  # None: nobody; the door refuses (fail closed)
    remote_addr: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    base_url: str = ""

    @classmethod
    def system(cls, base_url: str = "", channel: str = "system") -> RequestContext:
        """The server acting on its own behalf (CLI, migrations, tests)."""
        return cls(
            channel=channel, client_id="medisentinel", grant=Grant.system(), base_url=base_url
        )
