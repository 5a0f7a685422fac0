"""The server's signing keys: generated on first start, private halves sealed under the master
key (AES-256-GCM, key derived with HKDF), rotated by `medisentinel keys rotate`.

A rotated key stops signing at once but stays in the JWKS, and keeps verifying, until every
token it signed has expired.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import Connection, Engine, insert, or_, select, update

from app.auth.secrets import now
from app.auth.tables import signing_key
from app.db import write_transaction

log = logging.getLogger(__name__)
ALGORITHM = "RS256"
RECHECK_SECONDS = 30  # SMART requires RS256 for id_tokens; access tokens use it too


class MasterKeyError(RuntimeError):
    pass


def load_master_key(value: str | None, path: Path) -> bytes:
    """The master secret: MEDISENTINEL_MASTER_KEY if set, else the secret file, created with
    32 random bytes (mode 0600) the first time so that `make run` needs no set-up."""
    if value:
        secret = value.encode()
    elif path.exists():
        secret = path.read_bytes().strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = base64.urlsafe_b64encode(os.urandom(32))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret + b"\n")
        log.warning("created a new master key in %s: back it up, keys are sealed with it", path)
    if len(secret) < 32:
        raise MasterKeyError("the master key must be at least 32 characters")
    return secret


class Sealer:
    """AES-256-GCM under a key derived from the master secret; the kid is bound as AAD."""

    def __init__(self, master: bytes) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"medisentinel-keys")
        self._aead = AESGCM(hkdf.derive(master))

    def seal(self, plaintext: bytes, aad: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, aad.encode())

    def open(self, sealed: bytes, aad: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], aad.encode())
        except Exception as exc:
            raise MasterKeyError("cannot unseal a signing key: wrong master key?") from exc


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: RSAKey


_ACTIVE_KEY = (
    select(signing_key)
    .where(signing_key.c.retired_at.is_(None))
    .order_by(signing_key.c.created_at.desc())
    .limit(1)
)


class KeyStore:
    """Signing keys, cached per process; verification keys reloaded when a kid is unknown."""

    def __init__(self, engine: Engine, sealer: Sealer) -> None:
        self.engine = engine
        self.sealer = sealer
        self._lock = threading.Lock()
        self._signing: SigningKey | None = None
        self._checked = 0.0
        self._public: dict[str, RSAKey] = {}
        self._genuine: dict[str, RSAKey] = {}  # kid -> key proven by unsealing

    def signing_key(self) -> SigningKey:
        """The active key; re-checked now and then, so that a `keys rotate` run by another
        process (the CLI, another worker) is followed without a restart."""
        if self._signing is None or time.monotonic() - self._checked > RECHECK_SECONDS:
            with self._lock:
                if self._signing is None or time.monotonic() - self._checked > RECHECK_SECONDS:
                    if self._signing is None or self._active_kid() != self._signing.kid:
                        self._signing = self._load_or_create()
                    self._checked = time.monotonic()
        return self._signing

    def _active_kid(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(signing_key.c.kid)
                .where(signing_key.c.retired_at.is_(None))
                .order_by(signing_key.c.created_at.desc())
            ).scalar()

    def verification_key(self, kid: str) -> RSAKey | None:
        key = self._public.get(kid)
        if key is None:
            self._reload_public()
            key = self._public.get(kid)
        return key

    def genuine_key(self, kid: str) -> RSAKey | None:
        """A key by kid, retired or not, proven ours: its private half opens under the master
        key (authenticated encryption), so a key row planted in the database is refused.
        Used to verify what the server signed long ago (audit checkpoints); cached, since a
        kid's key never changes and `audit verify` checks every checkpoint."""
        if kid in self._genuine:
            return self._genuine[kid]
        with self.engine.connect() as conn:
            sealed = conn.execute(
                select(signing_key.c.private_key).where(signing_key.c.kid == kid)
            ).scalar()
        if sealed is None:
            return None
        try:
            pem = self.sealer.open(sealed, kid)
        except Exception:
            return None
        key = RSAKey.import_key(pem, parameters={"kid": kid, "alg": ALGORITHM})
        self._genuine[kid] = key
        return key

    def jwks(self) -> dict[str, Any]:
        self._reload_public()
        return {"keys": [key.as_dict(private=False) for key in self._public.values()]}

    def key_set(self) -> KeySet:
        return KeySet(list(self._public.values()))

    def rotate(self, keep_for_seconds: int) -> str:
        """Retire the active key (it verifies for `keep_for_seconds` more) and make a new one."""
        with write_transaction(self.engine) as conn:
            stamp = now()
            conn.execute(
                update(signing_key)
                .where(signing_key.c.retired_at.is_(None))
                .values(retired_at=stamp, expires_at=stamp + keep_for_seconds)
            )
            kid = self._create(conn)
        with self._lock:
            self._signing = None
        self._reload_public()
        return kid

    # ------------------------------------------------------------------ internals

    def _load_or_create(self) -> SigningKey:
        # Read first: loading the existing key must not take SQLite's write lock (a caller
        # may already hold it, e.g. an audit archive signing its marker).
        with self.engine.connect() as conn:
            row = conn.execute(_ACTIVE_KEY).first()
        if row is None:
            with write_transaction(self.engine) as conn:
                row = conn.execute(_ACTIVE_KEY).first()
                if row is None:
                    self._create(conn)
                    row = conn.execute(_ACTIVE_KEY).first()
        assert row is not None
        pem = self.sealer.open(row.private_key, row.kid)
        private = RSAKey.import_key(pem, parameters={"kid": row.kid, "alg": ALGORITHM})
        return SigningKey(row.kid, private)

    def _create(self, conn: Connection) -> str:
        kid = uuid.uuid4().hex[:16]
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"})
        conn.execute(
            insert(signing_key).values(
                kid=kid,
                algorithm=ALGORITHM,
                public_jwk=json.dumps(key.as_dict(private=False)),
                private_key=self.sealer.seal(key.as_pem(private=True), kid),
                created_at=now(),
            )
        )
        log.info("created signing key %s", kid)
        return kid

    def _reload_public(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(signing_key.c.kid, signing_key.c.public_jwk).where(
                    or_(signing_key.c.expires_at.is_(None), signing_key.c.expires_at > now())
                )
            ).all()
        self._public = {row.kid: RSAKey.import_key(json.loads(row.public_jwk)) for row in rows}
