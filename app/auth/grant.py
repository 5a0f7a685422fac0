"""Who is acting and what they may do: built from a verified access token at the edge, or
given directly to in-process callers (CLI, agents, feeds) that have no token."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.scopes import Scopes, parse_scopes

ROLES = ("practitioner", "patient", "admin", "compliance")
SYSTEM_SCOPES = "system/*.cruds system/AuditEvent.rs"


@dataclass(frozen=True)
class Grant:
    client_id: str
    scopes: Scopes
    subject: str  # the user's username, or the client_id for a backend client
    role: str | None = None  # the user's role, None for a client acting on its own
    fhir_user: str | None = None  # Practitioner/123, Patient/456
    patient: str | None = None  # launch context
    encounter: str | None = None
    token_id: str | None = None  # jti of the access token; None for in-process identities
    expires_at: int | None = None

    @classmethod
    def system(cls, client_id: str = "medisentinel", scope: str = SYSTEM_SCOPES) -> Grant:
        """The server itself (or one of its in-process parts) acting with system scopes."""
        return cls(client_id=client_id, scopes=parse_scopes(scope), subject=client_id)
