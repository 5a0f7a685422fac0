"""Running the HTTP server: uvicorn, and with several workers one listening socket per worker.

uvicorn's own multi-worker mode binds one socket in the supervisor and every worker accepts
from it. A worker that wakes accepts every connection queued at that moment (asyncio takes up
to the backlog per wake-up), so a client that opens its keep-alive connections at once often
lands all of them on one process, which then runs out of its one core (its GIL) while the
other idles. The benchmark saw exactly that: 16 connections all on one of two workers gave
910-990 reads/s, spread over both 1,340-1,455 (BENCHMARKS.md, session 9).

So on Linux every worker binds a socket of its own to the port with SO_REUSEPORT, and the
kernel spreads new connections over the workers' sockets by a hash of the peer's address, as
the MLLP listeners do (hl7_adapters/mllp.py). uvicorn's supervisor is kept (it restarts a
worker that dies, and handles the signals); only the socket each worker listens on changes.
The supervisor still binds the port first, with the option and without listening on it: a
port already in use still fails at start, and a socket that never listens is given no
connections.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from hl7_adapters.mllp import REUSE_PORT

log = logging.getLogger("uvicorn.error")


def serve(**options: Any) -> None:
    """`uvicorn.run(**options)`, each worker on a socket of its own when there are several."""
    if (
        (options.get("workers") or 1) <= 1
        or not REUSE_PORT
        or options.get("uds")
        or options.get("fd") is not None
    ):
        uvicorn.run(**options)
        return
    config = uvicorn.Config(**options)
    try:
        reserved = _bind(config.host, config.port)
    except OSError as exc:
        log.error(exc)
        sys.exit(STARTUP_FAILURE)
    log.info("Uvicorn running on http://%s:%d, a socket per worker", config.host, config.port)
    # uvicorn's supervisor makes its workers from the module's `Process`; ours replaces the
    # socket inside the worker, where `target` runs.
    default, multiprocess.Process = multiprocess.Process, WorkerProcess  # type: ignore[misc]
    try:
        multiprocess.Multiprocess(config, sockets=[reserved]).run()
    finally:
        multiprocess.Process = default  # type: ignore[misc]
        reserved.close()


class WorkerProcess(multiprocess.Process):
    def target(self, sockets: list[socket.socket] | None = None) -> None:
        own = [_bind(*sock.getsockname()[:2]) for sock in sockets or []]
        for sock in sockets or []:
            sock.close()  # the supervisor's: it keeps its own copy
        super().target(own)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
