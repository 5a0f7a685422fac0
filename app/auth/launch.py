"""EHR launch contexts: the EHR (or an operator) binds a patient, and optionally an
encounter, to a one-time `launch` value that the app passes to /auth/authorize. The first
authorization request that names it takes it (single use): a launch handed to one app and
user cannot give its patient context to any other, nor to the same one again."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert

from app.auth import secrets
from app.auth.tables import launch_context

LAUNCH_SECONDS = 3600


@dataclass(frozen=True)
class LaunchContext:
    launch_id: str
    patient: str | None
    encounter: str | None


def create_launch(
    conn: Connection, *, patient: str | None, encounter: str | None, created_by: str
) -> LaunchContext:
    if not patient and not encounter:
        raise ValueError("a launch needs a patient or an encounter")
    stamp = secrets.now()
    conn.execute(delete(launch_context).where(launch_context.c.expires_at < stamp))
    launch = LaunchContext(secrets.new_secret(16), patient, encounter)
    conn.execute(
        insert(launch_context).values(
            launch_id=launch.launch_id,
            patient=patient,
            encounter=encounter,
            created_by=created_by,
            expires_at=stamp + LAUNCH_SECONDS,
        )
    )
    return launch


def take_launch(conn: Connection, launch_id: str) -> LaunchContext | None:
    """The launch's context, removed in the same statement (None when unknown, expired or
    already taken): of two requests racing for one launch, only one gets it."""
    row = conn.execute(
        delete(launch_context)
        .where(launch_context.c.launch_id == launch_id)
        .returning(
            launch_context.c.launch_id,
            launch_context.c.patient,
            launch_context.c.encounter,
            launch_context.c.expires_at,
        )
    ).first()
    if row is None or row.expires_at < secrets.now():
        return None
    return LaunchContext(row.launch_id, row.patient, row.encounter)
