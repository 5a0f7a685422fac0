"""The authorization server's parts, built once per process: keys, tokens, and the bearer
check at the edge of the FHIR API."""

from __future__ import annotations

from sqlalchemy import Engine

from app.auth import clients
from app.auth.enforcement import unauthorized
from app.auth.errors import OAuthError, invalid_scope
from app.auth.grant import Grant
from app.auth.keys import KeyStore, Sealer, load_master_key
from app.auth.scopes import narrow
from app.auth.tokens import InvalidToken, TokenService
from app.settings import Settings


class AuthServer:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        master = load_master_key(settings.master_key, settings.master_key_file)
        self.keys = KeyStore(engine, Sealer(master))
        self.tokens = TokenService(self.keys, settings)

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
        with self.engine.begin() as conn:
            client = clients.get_client_by_name(conn, client_name)
            if client is None:
                raise OAuthError("invalid_client", f"no client named {client_name!r}")
            granted, refused = narrow(scope, client.scope)
            if refused:
                raise invalid_scope(f"not registered for this client: {' '.join(refused)}")
            claims = {"scope": granted.text, "sub": client.client_id, "sub_kind": "client"}
            return self.tokens.issue(conn, client.client_id, claims)
