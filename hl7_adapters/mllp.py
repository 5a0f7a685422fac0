"""An asyncio MLLP listener and a small MLLP client.

Written by hand (not hl7apy's server, which answers one message per connection and dies on
one Latin-1 byte). Each connection is one task: it reads, deframes (``framing.py``) and hands
each complete frame to ``handler(raw_message, peer) -> ack bytes`` in arrival order, writing
the ACK before it looks at the next frame -- so the handler can commit first and ACK after,
and one connection's messages are applied in the order they were sent. Nothing a peer sends
can take down the listener or another connection:

* the handler raising -> a NAK (AE/CE, ERR 207) built by ``ack.py``; the connection stays;
* a frame over ``max_frame_bytes`` -> not processed; its head goes to ``oversize`` (which
  keeps it and builds the AR/CR, ERR 104) and the answer is sent if its MSH can be read,
  otherwise the connection is closed at once (memory stays bounded either way);
* a frame ending in ``0x1C`` without the ``0x0D`` -> ended after ``END_GRACE`` seconds of
  silence, or when the peer closes its side (then answered before closing);
* idle longer than ``idle_timeout`` -> closed; a peer vanishing mid-frame -> frame dropped;
* a peer outside ``allowlist`` -> closed before a byte is read or a TLS handshake is spent.

The handler may return ``b""`` to send nothing (MSH-15/16 asked for no acknowledgment).
Message content is never logged (it is PHI); peers, sizes and outcomes are.

Several processes, one port: with ``reuse_port`` (Linux, SO_REUSEPORT) every worker process
of a server binds the same host:port and the kernel hands each new *connection* to one of
them; a connection then stays with that process, so the order above holds per connection.
A port held by a socket that did not set SO_REUSEPORT, or by a process of another user,
still cannot be bound: ``start`` raises OSError as without the option.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

from hl7_adapters.ack import AckError, Outcome, build_nak, hl7_now, new_control_id
from hl7_adapters.er7 import Hl7ParseError, parse_messages
from hl7_adapters.framing import Frame, FrameDecoder, frame

log = logging.getLogger(__name__)

# (frame payload, peer) -> the reply, or replies each sent as a frame of its own (an
# enhanced-mode commit ACK, then the application ACK)
Handler = Callable[[bytes, str], Awaitable[bytes | list[bytes]]]
# (head of the frame, its size so far, peer) -> the reject to send
OversizeHandler = Callable[[bytes, int, str], Awaitable[bytes]]
END_GRACE = 0.5  # seconds after a trailing 0x1C without 0x0D before the frame counts as ended
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_READ_SIZE = 64 * 1024
HEAD_BYTES = 64 * 1024  # how much of an oversize frame is examined for its MSH
# Whether several processes can share one listening port with the kernel spreading the
# connections between them: Linux's SO_REUSEPORT. (macOS and the BSDs have the option but
# do not balance TCP connections over the sockets; there a port stays with one process.)
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def parse_allowlist(entries: Iterable[str]) -> list[Network]:
    """IP addresses and CIDR blocks ('10.0.0.0/8', '::1'); raises ValueError on a bad entry."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]


def _peer_ip(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = address[0] if isinstance(address, tuple) and address else None
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _peer_name(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _nak(raw: bytes, error: AckError, outcome: Outcome = "error") -> bytes:
    """A NAK for ``raw``; should building it fail, a fixed reject, so an answer always goes."""
    try:
        return build_nak(raw, error, outcome)
    except Exception:
        log.exception("MLLP could not build a NAK; sending a bare reject")
        return f"MSH|^~\\&|||||{hl7_now()}||ACK|{new_control_id()}|P|2.5\rMSA|AR|\r".encode()


def readable_head(head: bytes) -> bool:
    """Whether an MSH can be tokenized from the start of a frame (or HTTP body)."""
    try:
        return bool(parse_messages(head[:HEAD_BYTES]))
    except Hl7ParseError:
        return False
    except Exception:  # a tokenizer bug must not take the connection down
        log.exception("MLLP could not examine a frame head")
        return False


class MLLPServer:
    """The listener. Use ``async with MLLPServer(handler, port=0) as server: server.port``.

    ``allowlist``: None admits every peer; otherwise only addresses in the listed IPs/CIDRs
    (an empty list admits nobody). ``ssl_context``: a server-side context turns TLS on.
    ``idle_timeout``: seconds without a byte before a connection is closed (None: never).
    ``max_frame_bytes``: the largest message accepted; ``max_connections``: beyond it, new
    connections are refused like a peer outside the allowlist. ``reuse_port``: bind with
    SO_REUSEPORT where the platform balances it (``REUSE_PORT``), so that the other worker
    processes of the same server can bind the same fixed port; ignored elsewhere. Port 0
    cannot be shared: each listener asking for it gets a port of its own.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        max_frame_bytes: int = 16 * 1024 * 1024,
        idle_timeout: float | None = 300.0,
        allowlist: Iterable[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        max_connections: int = 1024,
        reuse_port: bool = False,
        oversize: OversizeHandler | None = None,
    ) -> None:
        self.handler = handler
        self.oversize = oversize
        self.host = host
        self.requested_port = port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.allowlist = parse_allowlist(allowlist) if allowlist is not None else None
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.reuse_port = reuse_port and REUSE_PORT
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._in_handler = 0
        self._handlers_done = asyncio.Event()
        self._handlers_done.set()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _GuardedProtocol(self),
            self.host,
            self.requested_port,
            reuse_port=self.reuse_port,
        )
        shared = ", port shared (SO_REUSEPORT)" if self.reuse_port else ""
        log.info("MLLP listening on %s:%s (pid %d%s)", self.host, self.port, os.getpid(), shared)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening and end every connection.

        Handlers already running get up to ``grace`` seconds to finish (their commit and ACK
        should not be cut in half); no new frame is handed over meanwhile. Then the remaining
        connection tasks are cancelled.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._in_handler and grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._handlers_done.wait(), grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MLLPServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def admits(self, address: object) -> bool:
        """Whether a new connection from ``address`` is allowed in (allowlist, capacity)."""
        if len(self._tasks) >= self.max_connections:
            return False
        if self.allowlist is None:
            return True
        ip = _peer_ip(address)
        return ip is not None and any(ip in net for net in self.allowlist)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer.get_extra_info("peername"))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.ssl_context is not None:
                await asyncio.wait_for(writer.start_tls(self.ssl_context), self.handshake_timeout)
            await self._converse(reader, writer, peer)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("MLLP connection %s ended: %s", peer, type(exc).__name__)
        except asyncio.CancelledError:
            writer.transport.close()  # flushes an ACK already written, without waiting here
            raise
        except Exception:  # a bug here must end this connection only, and be seen
            log.exception("MLLP connection %s failed", peer)
        finally:
            self._tasks.discard(task)
            await self._hang_up(writer)

    @staticmethod
    async def _hang_up(writer: asyncio.StreamWriter) -> None:
        """Close after flushing what was written (the last ACK), but never wait long."""
        if writer.transport.is_closing():
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        except (OSError, ssl.SSLError, TimeoutError):
            writer.transport.abort()

    async def _read(self, reader: asyncio.StreamReader, timeout: float | None) -> bytes | None:
        """The next chunk; None when the peer stayed silent for `timeout` seconds."""
        try:
            return await asyncio.wait_for(reader.read(_READ_SIZE), timeout)
        except TimeoutError:
            return None

    async def _answer(self, writer: asyncio.StreamWriter, reply: bytes | list[bytes]) -> None:
        replies = reply if isinstance(reply, list) else [reply]
        if any(replies):
            for one in replies:
                if one:
                    writer.write(frame(one))
            await writer.drain()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        decoder = FrameDecoder(self.max_frame_bytes)
        checked = 0  # the oversize frame whose head was already examined
        while True:
            pending = decoder.end_pending
            waited = min(END_GRACE, self.idle_timeout or END_GRACE) if pending else None
            chunk = await self._read(reader, waited or self.idle_timeout)
            if pending and not chunk and not self._closing:  # 0x1C, then silence or close
                log.info("MLLP peer %s ended a frame without 0x0D", peer)
                reply = await self._respond(decoder.end_frame(), peer)
                if reply is None:
                    return
                await self._answer(writer, reply)
                if chunk is None:
                    continue  # silence: the sender waits for this ACK on an open connection
            if chunk is None:
                log.info("MLLP connection %s idle for %ss; closed", peer, self.idle_timeout)
                return
            if not chunk:
                if decoder.in_frame:
                    log.warning("MLLP peer %s left mid-frame; partial frame dropped", peer)
                return
            for complete in decoder.feed(chunk):
                if self._closing:
                    return
                reply = await self._respond(complete, peer)
                if reply is None:
                    return
                await self._answer(writer, reply)
            if decoder.oversize and checked != decoder.frames_started:
                checked = decoder.frames_started
                if not readable_head(decoder.head):
                    log.warning("MLLP peer %s: oversize frame, no readable MSH; closed", peer)
                    await self._refuse(decoder.head, decoder.size, peer)
                    return

    async def _respond(self, complete: Frame, peer: str) -> bytes | list[bytes] | None:
        """The ACK/NAK bytes for one frame; None to close the connection."""
        if complete.oversize:
            if not readable_head(complete.payload):
                return None
            log.warning("MLLP peer %s: frame of %d bytes over the limit", peer, complete.size)
            return await self._refuse(complete.payload, complete.size, peer)
        self._in_handler += 1
        self._handlers_done.clear()
        try:
            reply = await self.handler(complete.payload, peer)
        except Exception:
            log.exception("MLLP handler failed for a %d-byte message from %s", complete.size, peer)
            return _nak(complete.payload, AckError(207, "Application internal error"))
        finally:
            self._in_handler -= 1
            if not self._in_handler:
                self._handlers_done.set()
        if isinstance(reply, list) and all(isinstance(r, bytes | bytearray) for r in reply):
            return [bytes(r) for r in reply]
        if not isinstance(reply, bytes | bytearray):
            log.error("MLLP handler returned %s, not bytes", type(reply).__name__)
            return _nak(complete.payload, AckError(207, "Application internal error"))
        return bytes(reply)

    async def _refuse(self, head: bytes, size: int, peer: str) -> bytes:
        """The reject for a frame over the limit (kept by `oversize` when one is set)."""
        head = head[:HEAD_BYTES]
        if self.oversize is not None:
            try:
                return await self.oversize(head, size, peer)
            except Exception:
                log.exception("MLLP oversize handler failed for a frame from %s", peer)
        return _nak(head, oversize_error(size, self.max_frame_bytes), "reject")


def oversize_error(size: int, limit: int) -> AckError:
    """ERR for a message over the size limit: 104 (value too long) is the nearest HL7 table
    0357 has; it points at the message's header, there being no one field at fault."""
    text = f"message of {size} bytes exceeds the {limit}-byte limit; not processed"
    return AckError(104, text, "E", "MSH", 1)


class _GuardedProtocol(asyncio.StreamReaderProtocol):
    """Stream protocol that refuses a peer in ``connection_made``, before anything is read.

    It also stops reading at once when TLS is on: a client's ClientHello that arrived before
    ``start_tls`` would otherwise land in the plain stream buffer and stall the handshake.
    ``loop.start_tls`` resumes reading under the TLS layer.
    """

    def __init__(self, server: MLLPServer) -> None:
        super().__init__(asyncio.StreamReader(limit=_READ_SIZE), server._accept)
        self._mllp = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = transport.get_extra_info("peername")
        if not self._mllp.admits(address):
            log.warning("MLLP connection from %s refused", _peer_name(address))
            if isinstance(transport, asyncio.Transport):
                transport.abort()  # a reset, not a polite close: nothing is owed to the peer
            else:  # pragma: no cover - TCP transports are Transports
                transport.close()
            return
        if self._mllp.ssl_context is not None and isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
        super().connection_made(transport)


class MLLPClient:
    """A minimal MLLP client: send a framed message, read the framed ACK."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        self._decoder = FrameDecoder(max_frame_bytes)
        self._frames: list[Frame] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.server_hostname if self.ssl_context else None,
            ),
            self.timeout,
        )

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use it for split, joined and garbage frames)."""
        if self._writer is None:
            raise RuntimeError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def read_frame(self, timeout: float | None = None) -> bytes:
        """The next frame's payload. ConnectionError if the server closes first."""
        if self._reader is None:
            raise RuntimeError("not connected")
        while not self._frames:
            chunk = await asyncio.wait_for(self._reader.read(_READ_SIZE), timeout or self.timeout)
            if not chunk:
                raise ConnectionError("connection closed before a complete frame")
            self._frames.extend(self._decoder.feed(chunk))
        return self._frames.pop(0).payload

    async def send(self, message: bytes) -> bytes:
        """Send one message and return its ACK payload."""
        await self.send_raw(frame(message))
        return await self.read_frame()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def __aenter__(self) -> MLLPClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def send_message(
    host: str,
    port: int,
    message: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> bytes:
    """Connect, send one message, return its ACK payload, disconnect."""
    async with MLLPClient(host, port, ssl_context=ssl_context, timeout=timeout) as client:
        return await client.send(message)
