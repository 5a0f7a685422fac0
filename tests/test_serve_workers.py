"""`medisentinel serve --workers 2`: every worker listens on a socket of its own (SO_REUSEPORT,
Linux) and the kernel spreads HTTP connections over them (app/serving.py), real processes and
sockets. Which worker holds which connection is read from /proc, as the kernel sees it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.procnet import ESTABLISHED, LISTEN, held, socket_inodes, sockets_on
from hl7_adapters.mllp import REUSE_PORT
from tests.conftest import TEST_MASTER_KEY
from tests.helpers import server_env
from tests.test_hl7_mllp_workers import _free_port, _wait_for_listeners

pytestmark = pytest.mark.skipif(not REUSE_PORT, reason="SO_REUSEPORT balancing is Linux's")

CONNECTIONS = 20


def _get(sock: socket.socket, path: str) -> bytes:
    """The status line of one keep-alive GET (the answer is read to its end)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    reader = sock.makefile("rb")
    status = reader.readline()
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reader.read(length)
    return status.strip()


def test_two_workers_each_listen_on_their_own_socket_and_both_take_connections(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = server_env(database_url, TEST_MASTER_KEY, port=str(port), mllp_enabled="false")
    argv = [sys.executable, "-m", "app.cli", "serve", "--workers", "2"]
    with (tmp_path / "stderr").open("wb") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            workers = _wait_for_listeners(port, process, 2)
            states = sockets_on(port)
            listening = {
                pid: {i for i in socket_inodes(pid) if states.get(i) == LISTEN} for pid in workers
            }
            connections = [
                socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)
            ]
            try:
                answers = [_get(sock, "/fhir/metadata") for sock in connections]
                holding = held(port, process.pid)  # while the connections are open
            finally:
                for sock in connections:
                    sock.close()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    log = (tmp_path / "stderr").read_text()

    assert answers == [b"HTTP/1.1 200 OK"] * CONNECTIONS, log
    # one listening socket per worker (uvicorn's own mode shares the supervisor's one)
    first, second = (listening[pid] for pid in workers)
    assert len(first) == len(second) == 1 and not first & second, listening
    counts = {pid: holding.get(pid, Counter())[ESTABLISHED] for pid in workers}
    assert sum(counts.values()) == CONNECTIONS, counts
    # 20 connections all hashed to one of two sockets: odds 2 in a million
    assert all(count > 0 for count in counts.values()), counts
    assert process.returncode in (0, -signal.SIGTERM), log
