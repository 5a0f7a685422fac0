"""People who log in: practitioners, patients, administrators and compliance officers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from app.auth import secrets
from app.auth.errors import OAuthError
from app.auth.grant import ROLES
from app.auth.tables import app_user

_FHIR_USER = re.compile(r"^(Practitioner|Patient|PractitionerRole|RelatedPerson|Person)/"
                        r"[A-Za-z0-9\-.]{1,64}$")  # fmt: skip
# Verified against when the username is unknown, so that both cases cost the same time.
_DUMMY_HASH = secrets.hash_password("no such user")


@dataclass(frozen=True)
class UserRecord:
    username: str
    role: str
    fhir_user: str | None


def create_user(
    conn: Connection, username: str, role: str, password: str, fhir_user: str | None = None
) -> UserRecord:
    if role not in ROLES:
        raise OAuthError("invalid_request", f"role must be one of {', '.join(ROLES)}")
    if fhir_user is not None and not _FHIR_USER.match(fhir_user):
        raise OAuthError("invalid_request", "fhirUser must look like Practitioner/123")
    if role == "patient" and not (fhir_user or "").startswith("Patient/"):
        raise OAuthError("invalid_request", "a patient user needs --fhir-user Patient/ID")
    if len(password) < 8:
        raise OAuthError("invalid_request", "the password must have at least 8 characters")
    if get_user(conn, username) is not None:
        raise OAuthError("invalid_request", f"user {username!r} already exists")
    conn.execute(
        insert(app_user).values(
            username=username,
            role=role,
            fhir_user=fhir_user,
            password_hash=secrets.hash_password(password),
            created_at=secrets.now(),
        )
    )
    return UserRecord(username, role, fhir_user)


def get_user(conn: Connection, username: str) -> UserRecord | None:
    row = conn.execute(select(app_user).where(app_user.c.username == username)).first()
    return _record(row) if row else None


def authenticate(conn: Connection, username: str, password: str) -> UserRecord | None:
    row = conn.execute(select(app_user).where(app_user.c.username == username)).first()
    if row is None:
        secrets.verify_password(_DUMMY_HASH, password)
        return None
    return _record(row) if secrets.verify_password(row.password_hash, password) else None


def _record(row: Any) -> UserRecord:
    return UserRecord(row.username, row.role, row.fhir_user)
