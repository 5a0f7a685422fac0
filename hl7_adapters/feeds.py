"""Wiring the HL7 v2 feeds into the server: who a feed acts as, the MLLP listener's life, and
the one call app.main makes (`install`).

Identity. An MLLP peer presents no token: the listener's protection is the address allowlist
(and TLS). Its messages act as a configured system identity, `hl7-mllp:<MSH-3>` on channel
"hl7", with the remote address recorded, holding only the system scopes the mapping needs
(create, read, update of the types it writes, and create of Provenance) instead of a wildcard:
a feed cannot search, delete or touch anything else, and the door enforces that like for any
token. The sending application named in MSH-3 is a label for the audit trail, not a proof.
Over HTTP the caller's own backend token is the identity (router.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from functools import lru_cache, partial

from fastapi import FastAPI

from app.auth.grant import Grant
from app.context import RequestContext
from app.settings import Settings
from hl7_adapters import checks, store
from hl7_adapters.er7 import Message
from hl7_adapters.ingest import ContextFor, Hl7Ingest, default_mapper
from hl7_adapters.mllp import Handler, MLLPServer, OversizeHandler, oversize_error

log = logging.getLogger(__name__)

# What the mapping writes (ADT, ORU, PCD-01): each may be read, created and updated.
WRITTEN_TYPES = (
    "Patient",
    "Encounter",
    "RelatedPerson",
    "AllergyIntolerance",
    "Condition",
    "Practitioner",
    "Location",
    "Organization",
    "DiagnosticReport",
    "Observation",
    "Specimen",
    "Device",
)
FEED_SCOPE = " ".join(f"system/{t}.cru" for t in WRITTEN_TYPES) + " system/Provenance.c"


@lru_cache(maxsize=1024)
def feed_grant(client_id: str) -> Grant:
    return Grant.system(client_id, FEED_SCOPE)


def feed_identity(
    prefix: str, *, address: str | None, base_url: str, request_line: str = ""
) -> ContextFor:
    """The context each message of a feed acts in: client `<prefix>:<sending application>`."""

    def context_for(msg: Message | None) -> RequestContext:
        app = ""
        if msg is not None:
            hd = msg.sending_application
            app = store.clean(hd.namespace_id or hd.universal_id, 100)
        client_id = f"{prefix}:{app or 'unknown'}"
        return RequestContext(
            channel="hl7",
            client_id=client_id,
            grant=feed_grant(client_id),
            remote_addr=address,
            base_url=base_url,
            request_line=request_line,
        )

    return context_for


def peer_address(peer: str) -> str:
    """'10.0.0.5:4312' -> '10.0.0.5'; '[::1]:4312' -> '::1'."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return host.strip("[]")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.mllp_tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key)
    return context


def allowlist(settings: Settings) -> list[str] | None:
    entries = [e.strip() for e in settings.mllp_allowlist.split(",") if e.strip()]
    return entries or None


class Hl7Feeds:
    """The ingest pipeline plus, when enabled, the MLLP listener feeding it."""

    def __init__(self, ingest: Hl7Ingest, settings: Settings) -> None:
        self.ingest = ingest
        self.settings = settings
        self.listener: MLLPServer | None = None

    def mllp_handler(self) -> Handler:
        base_url = self.settings.fhir_base_url

        async def handle(raw: bytes, peer: str) -> list[bytes]:
            identity = feed_identity(
                "hl7-mllp", address=peer_address(peer), base_url=base_url, request_line="MLLP"
            )
            return await asyncio.to_thread(
                self.ingest.respond, raw, channel="mllp", peer=peer, ctx=identity
            )

        return handle

    def oversize_handler(self) -> OversizeHandler:
        base_url = self.settings.fhir_base_url
        limit = self.settings.mllp_max_message_bytes

        async def refuse(head: bytes, size: int, peer: str) -> bytes:
            identity = feed_identity(
                "hl7-mllp", address=peer_address(peer), base_url=base_url, request_line="MLLP"
            )
            error = oversize_error(size, limit)
            return await asyncio.to_thread(
                self.ingest.refuse_oversize, head, size, error, channel="mllp", peer=peer,
                ctx=identity,
            )  # fmt: skip

        return refuse

    async def start(self) -> None:
        """Start the listener (if enabled).

        With several worker processes (`workers` > 1) every one of them binds the port with
        SO_REUSEPORT where the platform balances it (Linux), and the kernel spreads the
        connections over them. One process (`workers` 1, `medisentinel mllp`) binds it
        exclusively, so a second server on the same port fails loudly instead of silently
        taking half of the connections. A port that cannot be bound (held by another program,
        or by another worker where it cannot be shared) is logged, not fatal: HTTP keeps
        serving."""
        s = self.settings
        if not s.mllp_enabled:
            return
        shared = s.workers > 1
        if shared and s.mllp_port == 0:
            log.warning(
                "MLLP port 0 with %d workers: each worker listens on a port of its own "
                "(port 0 cannot be shared); set a fixed MEDISENTINEL_MLLP_PORT",
                s.workers,
            )
        listener = MLLPServer(
            self.mllp_handler(),
            s.mllp_host,
            s.mllp_port,
            max_frame_bytes=s.mllp_max_message_bytes,
            idle_timeout=s.mllp_idle_seconds or None,
            allowlist=allowlist(s),
            ssl_context=tls_context(s),
            reuse_port=shared,
            oversize=self.oversize_handler(),
        )
        try:
            await listener.start()
        except OSError as exc:
            log.error(
                "MLLP listener not started on %s:%s (pid %d): %s",
                s.mllp_host,
                s.mllp_port,
                os.getpid(),
                exc,
            )
            return
        self.listener = listener

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.close()
            self.listener = None

    @property
    def mllp_port(self) -> int | None:
        return self.listener.port if self.listener is not None else None


def install(app: FastAPI) -> Hl7Feeds:
    """Make the ingest pipeline on the app's door and audit trail, route POST /hl7/v2, and
    return the feeds (the app's lifespan starts and stops the listener)."""
    from hl7_adapters.router import routes

    settings: Settings = app.state.settings
    mapper = partial(default_mapper, default_offset=settings.hl7_default_offset)
    accepted = checks.processing_ids(settings.hl7_processing_ids)
    ingest = Hl7Ingest(app.state.service, app.state.audit, mapper=mapper, processing_ids=accepted)
    feeds = Hl7Feeds(ingest, settings)
    app.state.hl7 = feeds
    app.router.routes.extend(routes())
    return feeds
