"""EHR launch contexts: the EHR (or an operator) binds a patient, and optionally an
encounter, to a one-time `launch` value that the app passes to /auth/authorize."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

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


def get_launch(conn: Connection, launch_id: str) -> LaunchContext | None:
    row = conn.execute(
        select(launch_context).where(
            launch_context.c.launch_id == launch_id,
            launch_context.c.expires_at >= secrets.now(),
        )
    ).first()
    return LaunchContext(row.launch_id, row.patient, row.encounter) if row else None
