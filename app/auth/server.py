"""The authorization server's parts, built once per process: keys, tokens, and the bearer
check at the edge of the FHIR API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from app.auth import clients
from app.auth.enforcement import unauthorized
from app.auth.errors import OAuthError
from app.auth.grant import Grant
from app.auth.keys import KeyStore, Sealer, load_master_key
from app.auth.token_endpoint import backend_claims
from app.auth.tokens import InvalidToken, TokenService
from app.db import write_transaction
from app.settings import Settings


@dataclass(frozen=True)
class AuthEvent:
    """Something the authorization server did, for the audit trail."""

    what: str  # login | consent | token-issued | token-refreshed | token-refused
    #            token-introspected | token-revoked
    ok: bool
    client_id: str | None = None
    username: str | None = None
    fhir_user: str | None = None
    patient: str | None = None
    address: str | None = None
    detail: str = ""


class AuthServer:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        # Where authorization events go (the audit trail, wired in app.main). Unset, the
        # endpoints that produce events refuse to work rather than go unrecorded.
        self.events: Callable[[AuthEvent], None] | None = None
        master = load_master_key(settings.master_key, settings.master_key_file)
        self.keys = KeyStore(engine, Sealer(master))
        self.tokens = TokenService(self.keys, settings)

    def record(self, event: AuthEvent) -> None:
        if self.events is None:
            raise RuntimeError("authorization events have nowhere to go: no audit trail wired")
        self.events(event)

    def authenticate(self, authorization: str | None) -> Grant | None:
        """The grant a request's Authorization header carries; None when it has none.
        A header that is not a valid bearer token of ours is a 401."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("use the Bearer scheme with an access token")
        try:
            return self.tokens.verify(token.strip())
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from exc

    def local_token(self, client_name: str, scope: str) -> dict[str, object]:
        """A token for a registered backend client, issued without the OAuth round trip:
        `medisentinel token` for local operators (it reads the database directly)."""
        self.keys.signing_key()  # created (in its own transaction) before ours begins
        with write_transaction(self.engine) as conn:
            client = clients.get_client_by_name(conn, client_name)
            if client is None:
                raise OAuthError("invalid_client", f"no client named {client_name!r}")
            # The same rules as client_credentials, minus the signed assertion: the operator
            # at the console is trusted as the key holder would be. The lifetime stays the
            # longer one of people's tokens (a `medisentinel load` of a big file outlives 300 s).
            return self.tokens.issue(conn, client.client_id, backend_claims(client, scope))
