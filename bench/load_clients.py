"""The benchmarks' HTTP load generators: httpx (what fhirload.py uses) and a minimal raw
HTTP/1.1 keep-alive client that costs the machine far less per request (bench/run_core.py,
bench/search_scale.py). `HEADERS` carries the bearer token once a benchmark has one."""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx

FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}


class LoadClient(Protocol):
    name: str

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request relative to the FHIR base; return (status, body)."""
        ...

    async def aclose(self) -> None: ...


class HttpxClient:
    """The default load generator: one httpx AsyncClient with a connection per client."""

    name = "httpx"

    def __init__(self, base: str, connections: int, timeout: float = 60.0) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(
            base_url=base, headers=HEADERS, timeout=timeout, limits=limits
        )

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        r = await self._client.request(method, path, content=body)
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self._client.aclose()


class RawClient:
    """Minimal HTTP/1.1 keep-alive client on asyncio streams, for when httpx is the bottleneck.

    Speaks just what this benchmark needs: Content-Length or chunked responses, keep-alive
    unless the server says `Connection: close`. At most `connections` sockets are open.
    """

    name = "raw"

    def __init__(
        self, host: str, port: int, prefix: str, connections: int, timeout: float = 60.0
    ) -> None:
        self._host, self._port, self._timeout = host, port, timeout
        self._prefix = prefix.rstrip("/")
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        token = HEADERS.get("Authorization")
        auth = f"Authorization: {token}\r\n" if token else ""
        self._fixed = (
            f"Host: {host}:{port}\r\nAccept: {FHIR_JSON}\r\nUser-Agent: medisentinel-bench\r\n"
            + auth
        ).encode()

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                status, data, keep = await asyncio.wait_for(
                    self._roundtrip(conn, method, path, body), self._timeout
                )
            except BaseException:
                conn[1].close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn[1].close()
            return status, data

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self._host, self._port, limit=2**24)

    async def _roundtrip(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        path: str,
        body: bytes | None,
    ) -> tuple[int, bytes, bool]:
        reader, writer = conn
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode() + self._fixed
        if body is not None:
            head += f"Content-Type: {FHIR_JSON}\r\nContent-Length: {len(body)}\r\n".encode()
        writer.write(head + b"\r\n" + (body or b""))
        await writer.drain()
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers from our server
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(parts)
        elif status in (204, 304) or method == "HEAD":
            data = b""
        else:  # no length: body runs to the end of the connection
            data = await reader.read()
            return status, data, False
        keep = headers.get("connection", "").lower() != "close"
        return status, data, keep

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
