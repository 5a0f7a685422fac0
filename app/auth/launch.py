"""EHR launch contexts: the EHR (or an operator) binds a patient, and optionally an
encounter, to a one-time `launch` value that the app passes to /auth/authorize. The first
authorization request that names it takes it (single use): a launch handed to one app and
user cannot give its patient context to any other, nor to the same one again. A launch made
for a client (`client_id`) is taken only by that client's requests; another client's request
finds no such launch and leaves it for the right one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, or_

from app.auth import clients, secrets
from app.auth.tables import launch_context

LAUNCH_SECONDS = 3600
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # R4 id


@dataclass(frozen=True)
class LaunchContext:
    launch_id: str
    patient: str | None
    encounter: str | None
    client_id: str | None = None


def create_launch(
    conn: Connection,
    *,
    patient: str | None,
    encounter: str | None,
    created_by: str,
    client: str | None = None,
) -> LaunchContext:
    """`client`: the client_id (or registered name) of the only app that may use it. The
    values may come straight from a JSON body (`POST /auth/launch`): checked here, for the
    command line alike (a number, a list or `../x` became a launch, a list a 500)."""
    if not patient and not encounter:
        raise ValueError("a launch needs a patient or an encounter")
    for name, value in (("patient", patient), ("encounter", encounter)):
        if value is not None and not (isinstance(value, str) and FHIR_ID.match(value)):
            raise ValueError(f"{name} must be a FHIR id such as 123 (not Type/123)")
    if client is not None and not isinstance(client, str):  # from a JSON body
        raise ValueError("client_id must be a string")
    client_id = _client_id(conn, client) if client is not None else None
    stamp = secrets.now()
    conn.execute(delete(launch_context).where(launch_context.c.expires_at < stamp))
    launch = LaunchContext(secrets.new_secret(16), patient, encounter, client_id)
    conn.execute(
        insert(launch_context).values(
            launch_id=launch.launch_id,
            patient=patient,
            encounter=encounter,
            created_by=created_by,
            expires_at=stamp + LAUNCH_SECONDS,
            client_id=client_id,
        )
    )
    return launch


def _client_id(conn: Connection, client: str) -> str:
    found = clients.get_client(conn, client) or clients.get_client_by_name(conn, client)
    if found is None:
        raise ValueError(f"no registered client {client!r}")
    return found.client_id


def take_launch(conn: Connection, launch_id: str, client_id: str) -> LaunchContext | None:
    """The launch's context, removed in the same statement (None when unknown, expired,
    already taken or made for another client): of two requests racing for one launch, only
    one gets it."""
    row = conn.execute(
        delete(launch_context)
        .where(
            launch_context.c.launch_id == launch_id,
            or_(launch_context.c.client_id.is_(None), launch_context.c.client_id == client_id),
        )
        .returning(
            launch_context.c.launch_id,
            launch_context.c.patient,
            launch_context.c.encounter,
            launch_context.c.expires_at,
            launch_context.c.client_id,
        )
    ).first()
    if row is None or row.expires_at < secrets.now():
        return None
    return LaunchContext(row.launch_id, row.patient, row.encounter, row.client_id)
