"""Access, refresh and id tokens: issued, verified, refreshed with rotation, introspected and
revoked.

Access tokens are RS256 JWTs (verifiable without the database) whose jti is also recorded,
so a revoked token stops working at once; refresh tokens are opaque and stored as digests.
Every token descends from a *family* (the code or grant that started it): reusing a rotated
refresh token or a spent authorization code revokes the whole family.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy import Connection, insert, select, update

from app.auth import secrets
from app.auth.errors import invalid_grant, invalid_scope
from app.auth.grant import Grant
from app.auth.keys import ALGORITHM, KeyStore
from app.auth.revocations import RevocationWatch, notify_revoked
from app.auth.scopes import narrow, parse_scopes
from app.auth.tables import issued_token
from app.settings import Settings

CACHE_SIZE = 10_000


class InvalidToken(Exception):
    """The bearer token is not one we issued, or it expired or was revoked (HTTP 401)."""


@dataclass(frozen=True)
class Lifetimes:
    access: int
    backend: int  # client_credentials access tokens (SMART Backend Services: five minutes)
    offline: int
    online: int


class TokenService:
    def __init__(self, keys: KeyStore, settings: Settings) -> None:
        self.keys = keys
        self.issuer = settings.fhir_base_url
        self.audience = settings.fhir_base_url
        self.lifetimes = Lifetimes(
            settings.access_token_seconds,
            settings.backend_access_token_seconds,
            settings.refresh_token_seconds,
            settings.online_refresh_seconds,
        )
        self._verified: OrderedDict[str, Grant] = OrderedDict()
        # Set by the app on PostgreSQL: revocations pushed to this process (revocations.py).
        self.watch: RevocationWatch | None = None

    # ------------------------------------------------------------------ issuing

    def issue(
        self,
        conn: Connection,
        client_id: str,
        claims: dict[str, Any],
        *,
        family: str | None = None,
        with_id_token: bool = False,
        refresh_claims: dict[str, Any] | None = None,
        backend: bool = False,
    ) -> dict[str, Any]:
        """A token response (SMART App Launch 2.x, "access token response"). The refresh
        token carries `refresh_claims` when given (a refresh that narrowed the access token
        keeps the grant's whole scope in the new refresh token), else `claims`. `backend`:
        a client_credentials grant, whose access token lives `backend_access_token_seconds`."""
        family = family or uuid.uuid4().hex
        scopes = parse_scopes(claims["scope"])
        refresh_claims = refresh_claims or claims
        lasting = parse_scopes(refresh_claims["scope"])
        lifetime = self.lifetimes.backend if backend else self.lifetimes.access
        access_token = self._access_token(conn, client_id, claims, family, lifetime)
        response: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": claims["scope"],
        }
        for name in ("patient", "encounter"):
            if claims.get(name):
                response[name] = claims[name]
        if claims.get("patient") or claims.get("encounter"):
            response["need_patient_banner"] = bool(claims.get("need_patient_banner", True))
            response["smart_style_url"] = f"{self.issuer}/.well-known/smart-style.json"
        refresh = "offline" if "offline_access" in lasting else None
        refresh = refresh or ("online" if "online_access" in lasting else None)
        if refresh and claims.get("sub_kind") == "user":
            response["refresh_token"] = self._refresh_token(
                conn, client_id, refresh_claims, family, refresh
            )
        if with_id_token and "openid" in scopes and claims.get("sub_kind") == "user":
            response["id_token"] = self.id_token(client_id, claims, "fhirUser" in scopes)
        return response

    def id_token(self, client_id: str, claims: dict[str, Any], fhir_user: bool) -> str:
        """OpenID Connect: for every user granted `openid`; the fhirUser claim only with the
        `fhirUser` scope (SMART App Launch) and for a user who has a FHIR resource."""
        stamp = secrets.now()
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": claims["sub"],
            "aud": client_id,
            "iat": stamp,
            "exp": stamp + self.lifetimes.access,
        }
        if fhir_user and claims.get("fhirUser"):
            body["fhirUser"] = _absolute(self.issuer, claims["fhirUser"])
        if claims.get("nonce"):
            body["nonce"] = claims["nonce"]
        return self._sign(body)

    def _access_token(
        self, conn: Connection, client_id: str, claims: dict[str, Any], family: str, lifetime: int
    ) -> str:
        stamp, jti = secrets.now(), uuid.uuid4().hex
        body = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": claims["sub"],
            "client_id": client_id,
            "scope": claims["scope"],
            "iat": stamp,
            "exp": stamp + lifetime,
            "jti": jti,
        }
        for name in ("patient", "encounter", "fhirUser", "role"):
            if claims.get(name):
                body[name] = claims[name]
        self._record(conn, jti, "access", client_id, family, claims, stamp + lifetime)
        return self._sign(body)

    def _refresh_token(
        self, conn: Connection, client_id: str, claims: dict[str, Any], family: str, kind: str
    ) -> str:
        token, stamp = secrets.new_secret(), secrets.now()
        # An online_access family ends a fixed time after the sign-in (SMART: usable while
        # the user is online; here a working day), however often it is rotated; an offline
        # one lives on while it is used.
        signed_in = int(claims.get("signed_in_at", stamp))
        record = {**claims, "refresh_kind": kind, "signed_in_at": signed_in}
        if kind == "offline":
            expires_at = stamp + self.lifetimes.offline
        else:
            expires_at = signed_in + self.lifetimes.online
        self._record(conn, secrets.digest(token), "refresh", client_id, family, record, expires_at)
        return token

    def _record(
        self,
        conn: Connection,
        key: str,
        kind: str,
        client_id: str,
        family: str,
        claims: dict[str, Any],
        expires_at: int,
    ) -> None:
        conn.execute(
            insert(issued_token).values(
                token_hash=key, kind=kind, client_id=client_id, family=family,
                claims=json.dumps(claims), issued_at=secrets.now(), expires_at=expires_at,
            )
        )  # fmt: skip

    def _sign(self, body: dict[str, Any]) -> str:
        key = self.keys.signing_key()
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}, body, key.private)

    # ------------------------------------------------------------------ refreshing

    def refresh(
        self, conn: Connection, client_id: str, token: str, scope: str | None
    ) -> dict[str, Any]:
        """Rotate a refresh token: the old one is spent; using it again revokes the family."""
        # Locked while this transaction decides (as codes are): concurrent refreshes with one
        # token each saw it unspent and rotated it on PostgreSQL; now they queue, and all but
        # the first find it spent, a reuse.
        row = self._live_row(conn, secrets.digest(token), "refresh", lock=True)
        if row is None or row.client_id != client_id:
            raise invalid_grant("the refresh token is not valid for this client")
        if row.rotated_at is not None:
            self.revoke_family(conn, row.family)
            raise invalid_grant("the refresh token was already used; its grant is revoked")
        claims = json.loads(row.claims)
        # RFC 6749 section 6: a narrower scope is for this access token only; the new refresh
        # token's scope MUST be the one it replaces (the next refresh may ask for all again).
        access = {**claims, "scope": _narrowed(claims["scope"], scope)} if scope else claims
        conn.execute(
            update(issued_token)
            .where(issued_token.c.token_hash == row.token_hash)
            .values(rotated_at=secrets.now())
        )
        return self.issue(
            conn, client_id, access, family=row.family, with_id_token=True, refresh_claims=claims
        )

    # ------------------------------------------------------------------ checking

    def verify(self, token: str) -> Grant:
        """Signature, issuer, audience and expiry (no database: revocation is checked by
        :meth:`is_live` inside the request's transaction)."""
        grant = self._verified.get(token)
        if grant is None:
            grant = self._decode(token)
            self._remember(token, grant)
        if grant.expires_at is not None and grant.expires_at <= secrets.now():
            raise InvalidToken("the access token has expired")
        return grant

    def is_live(self, conn: Connection, token_id: str) -> bool:
        """Not revoked and not expired: known to this process (revocations.py), or looked up."""
        now = secrets.now()
        watch = self.watch
        if watch is not None and watch.is_known_live(token_id, now):
            return True
        generation = watch.generation() if watch is not None else None
        row = conn.execute(
            select(issued_token.c.revoked_at, issued_token.c.expires_at).where(
                issued_token.c.token_hash == token_id
            )
        ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return False
        if watch is not None:
            watch.note_live(token_id, row.expires_at, generation)
        return True

    def _decode(self, token: str) -> Grant:
        try:
            header = jws.extract_compact(token.encode()).protected
            key = self.keys.verification_key(str(header.get("kid", "")))
            if key is None:
                raise InvalidToken("the access token was not signed by this server")
            claims = jwt.decode(token, key, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the access token is malformed or its signature is wrong") from exc
        if claims.get("iss") != self.issuer or claims.get("aud") != self.audience:
            raise InvalidToken("the access token was issued for another server")
        if not claims.get("jti") or not isinstance(claims.get("exp"), int):
            raise InvalidToken("the access token lacks jti or exp")
        return Grant(
            client_id=claims["client_id"],
            scopes=parse_scopes(claims.get("scope", "")),
            subject=claims["sub"],
            role=claims.get("role"),
            fhir_user=claims.get("fhirUser"),
            patient=claims.get("patient"),
            encounter=claims.get("encounter"),
            token_id=claims["jti"],
            expires_at=claims["exp"],
        )

    def _remember(self, token: str, grant: Grant) -> None:
        self._verified[token] = grant
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)

    # ------------------------------------------------------------------ introspection

    def introspect(self, conn: Connection, token: str, client_id: str) -> dict[str, Any]:
        """RFC 7662: details of an active token issued to `client_id` (the authenticated
        caller), `{"active": false}` and nothing else otherwise: section 2.2 answers a token
        the caller may not introspect exactly as an unknown one, so no client learns about
        another's tokens."""
        row = self._live_row(conn, *self._stored_key(token))
        if row is None or row.rotated_at is not None or row.client_id != client_id:
            return {"active": False}
        claims = json.loads(row.claims)
        out: dict[str, Any] = {
            "active": True,
            "scope": claims["scope"],
            "client_id": row.client_id,
            "exp": row.expires_at,
            "iat": row.issued_at,
            "iss": self.issuer,
            "sub": claims["sub"],
            "token_type": "Bearer" if row.kind == "access" else "refresh_token",
        }
        for name in ("patient", "encounter", "fhirUser"):
            if claims.get(name):
                out[name] = claims[name]
        return out

    def revoke(self, conn: Connection, token: str, client_id: str | None = None) -> str | None:
        """RFC 7009: revoke the token and everything of its family; unknown tokens are fine.
        With `client_id` (the authenticated caller at /auth/revoke) only a token issued to that
        client is revoked; another client's is left alone, and the caller is answered as for
        an unknown token (section 2.2), so revocation is no oracle on other clients' tokens.
        Returns the client the token was issued to, None when it is unknown."""
        key, _kind = self._stored_key(token)
        row = conn.execute(
            select(issued_token.c.family, issued_token.c.client_id).where(
                issued_token.c.token_hash == key
            )
        ).first()
        if row is None:
            return None
        if client_id is None or row.client_id == client_id:
            self.revoke_family(conn, row.family)
        return str(row.client_id)

    def owner(self, conn: Connection, token: str) -> str | None:
        """The client a token was issued to (whatever its state), None when unknown."""
        key, _kind = self._stored_key(token)
        found = conn.execute(
            select(issued_token.c.client_id).where(issued_token.c.token_hash == key)
        ).scalar()
        return str(found) if found is not None else None

    def revoke_family(self, conn: Connection, family: str) -> None:
        """Revoke every token of the family; every process hears of it on commit."""
        revoked = conn.execute(
            update(issued_token)
            .where(issued_token.c.family == family, issued_token.c.revoked_at.is_(None))
            .values(revoked_at=secrets.now())
            .returning(issued_token.c.token_hash, issued_token.c.kind)
        ).all()
        access_ids = [row.token_hash for row in revoked if row.kind == "access"]
        if not access_ids:
            return
        if self.watch is not None:
            self.watch.mark_revoked(access_ids)  # only ever makes this process ask the database
        notify_revoked(conn, access_ids)

    def _stored_key(self, token: str) -> tuple[str, str]:
        """Where a presented token is recorded: an access token (a valid JWT of ours) by its
        jti, anything else as a refresh token, by its digest."""
        try:
            return self.verify(token).token_id or "", "access"
        except InvalidToken:
            return secrets.digest(token), "refresh"

    def _live_row(self, conn: Connection, key: str, kind: str, *, lock: bool = False) -> Any:
        query = select(issued_token).where(issued_token.c.token_hash == key)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None or row.kind != kind:
            return None
        if row.revoked_at is not None or row.expires_at <= secrets.now():
            return None
        return row


def _narrowed(granted: str, requested: str) -> str:
    """A refresh may ask for less than was granted, never more: each scope asked for is one
    granted or within one (`patient/Observation.rs` of `patient/*.rs`)."""
    _within, beyond = narrow(requested, granted)
    if beyond:
        raise invalid_scope(f"a refresh cannot add scopes: {' '.join(beyond)}")
    return " ".join(dict.fromkeys(requested.split()))


def _absolute(base: str, reference: str) -> str:
    return reference if "://" in reference else f"{base}/{reference}"
