"""A stub HTTP server that answers every request at once with one fixed Observation: to
measure what a load generator itself can do on this machine (a benchmark tool, not a test).

    python bench/stub_fhir_server.py --port 58111 [--headers few|many] &
    python ../shared/bench/fhirload.py http://127.0.0.1:58111/fhir --phases read,search

Whatever rate the load generator reaches here is its ceiling: a real server can only be
measured below it (BENCHMARKS.md, session 11). HTTP/1.1 keep-alive, one request at a time per
connection (as fhirload and bench/run_core.py send them); only Content-Length bodies.
"""

from __future__ import annotations

import argparse
import asyncio

try:
    import uvloop
except ImportError:  # pragma: no cover - the server's own dependencies include it
    uvloop = None  # type: ignore[assignment]

BODY = (
    b'{"resourceType":"Observation","id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",'
    b'"meta":{"versionId":"1","lastUpdated":"2026-11-22T07:40:00.123Z"},"status":"final",'
    b'"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},'
    b'"subject":{"reference":"Patient/abc"},"effectiveDateTime":"2024-01-01T00:00:00Z",'
    b'"valueQuantity":{"value":80,"unit":"/min","system":"http://unitsofmeasure.org",'
    b'"code":"/min"}}'
)
FEW_HEADERS = [b"content-type: application/fhir+json"]
MANY_HEADERS = [  # what MediSentinel sends with a read or a create
    b"date: Sun, 22 Nov 2026 07:40:00 GMT",
    b"server: uvicorn",
    b"content-type: application/fhir+json; charset=utf-8",
    b'etag: W/"1"',
    b"last-modified: Sun, 22 Nov 2026 07:40:00 GMT",
    b"location: http://127.0.0.1/fhir/Observation/x/_history/1",
    b"x-request-id: 0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
]


def response(headers: list[bytes]) -> bytes:
    head = b"\r\n".join([b"HTTP/1.1 200 OK", *headers, b"content-length: %d" % len(BODY)])
    return head + b"\r\n\r\n" + BODY


class Answer(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCP transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still coming
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(self.reply)


async def serve(port: int, reply: bytes) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Answer(reply), "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--headers", choices=("few", "many"), default="many")
    args = parser.parse_args()
    reply = response(FEW_HEADERS if args.headers == "few" else MANY_HEADERS)
    if uvloop is not None:
        uvloop.run(serve(args.port, reply))
    else:  # pragma: no cover
        asyncio.run(serve(args.port, reply))


if __name__ == "__main__":
    main()
