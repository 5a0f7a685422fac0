"""MLLP in every worker process: one port shared with SO_REUSEPORT (Linux), real sockets.

The kernel hands each new connection to one of the listeners bound to the port; a
connection stays with the process that accepted it. These tests check that several
listeners bind one fixed port at once and answer every connection, that a port held without
the option is still refused (and `medisentinel mllp` still exits 2), and that `medisentinel
serve --workers 2` accepts MLLP connections in both workers, with the per-connection order
and the cross-process ordering (locks, event-time clock) intact. Which process holds which
socket is read from /proc, as the kernel sees it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bench.procnet import ESTABLISHED, LISTEN
from bench.procnet import held as _held
from hl7_adapters.feeds import Hl7Feeds
from hl7_adapters.framing import frame
from hl7_adapters.mllp import REUSE_PORT, Handler, MLLPClient, MLLPServer
from tests.conftest import TEST_MASTER_KEY, LiveServer
from tests.helpers import server_env
from tests.test_hl7_ingest import err_fields, msa, rows_for, unique_id
from tests.test_hl7_mllp_server import a01, patients, run, send_all

pytestmark = pytest.mark.skipif(not REUSE_PORT, reason="SO_REUSEPORT balancing is Linux's")

CONNECTIONS = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _handler(live_server: LiveServer) -> Handler:
    """The server's own MLLP handler: the real ingest pipeline on the test database."""
    return Hl7Feeds(live_server.app.state.hl7.ingest, live_server.settings).mllp_handler()


# ---------------------------------------------------------------- who holds a socket (/proc)


def _wait_for_listeners(port: int, process: subprocess.Popen[bytes], count: int) -> list[int]:
    """The pids of the `count` worker processes once each listens on `port`."""
    deadline = time.monotonic() + 60
    while True:
        listening = [pid for pid, s in _held(port, process.pid).items() if s[LISTEN]]
        if len(listening) >= count:
            return sorted(listening)
        assert process.poll() is None, f"the server exited ({process.returncode})"
        assert time.monotonic() < deadline, f"{len(listening)} of {count} workers listen"
        time.sleep(0.2)


# ---------------------------------------------------------------- listeners in one process


def test_two_listeners_bind_one_port_and_every_connection_is_answered(
    live_server: LiveServer,
) -> None:
    port, handler = _free_port(), _handler(live_server)
    served: dict[str, set[str]] = {"first": set(), "second": set()}

    def noting(name: str) -> Handler:
        async def handle(raw: bytes, peer: str) -> bytes:
            served[name].add(peer)
            return await handler(raw, peer)

        return handle

    controls = [[unique_id(), unique_id()] for _ in range(CONNECTIONS)]

    async def scenario() -> list[list[bytes]]:
        async with (
            MLLPServer(noting("first"), port=port, reuse_port=True) as first,
            MLLPServer(noting("second"), port=port, reuse_port=True) as second,
        ):
            assert first.port == second.port == port
            return await asyncio.gather(
                *(send_all(port, [a01(c, unique_id("P")) for c in pair]) for pair in controls)
            )

    for pair, acks in zip(controls, run(scenario()), strict=True):
        assert [msa(a) for a in acks] == [("AA", c) for c in pair], [err_fields(a) for a in acks]
    # every connection was served by exactly one listener, and both listeners got some
    # (20 connections all hashed to one of two sockets: odds 2 in a million)
    assert served["first"] and served["second"]
    assert not served["first"] & served["second"]
    assert len(served["first"] | served["second"]) == CONNECTIONS


def test_port_0_is_not_shared_each_listener_gets_its_own(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    handler = _handler(live_server)

    async def scenario() -> None:
        async with (
            MLLPServer(handler, port=0, reuse_port=True) as first,
            MLLPServer(handler, port=0, reuse_port=True) as second,
        ):
            assert first.port != second.port
        feeds = Hl7Feeds(
            live_server.app.state.hl7.ingest,
            live_server.settings.model_copy(update={"mllp_port": 0, "workers": 2}),
        )
        await feeds.start()
        try:
            assert feeds.mllp_port
        finally:
            await feeds.stop()

    with caplog.at_level(logging.WARNING, logger="hl7_adapters.feeds"):
        run(scenario())
    assert "each worker listens on a port of its own" in caplog.text


def test_a_port_held_without_so_reuseport_is_not_taken_over(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    handler, ingest = _handler(live_server), live_server.app.state.hl7.ingest
    with socket.socket() as holder:  # another program: no SO_REUSEPORT
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = live_server.settings.model_copy(update={"mllp_port": port, "workers": 2})
        shared = Hl7Feeds(ingest, settings)

        async def scenario() -> None:
            with pytest.raises(OSError):
                await MLLPServer(handler, port=port, reuse_port=True).start()
            await shared.start()  # logged, not raised: HTTP would keep serving
            assert shared.listener is None and shared.mllp_port is None

        with caplog.at_level(logging.ERROR, logger="hl7_adapters.feeds"):
            run(scenario())
    assert f"MLLP listener not started on 127.0.0.1:{port}" in caplog.text


def test_one_process_binds_exclusively_and_the_mllp_command_still_exits_2(
    live_server: LiveServer, database_url: str
) -> None:
    """A port that the workers of a server share is not joined by a single-process
    listener: `workers` 1 binds without SO_REUSEPORT, and `medisentinel mllp` is one process
    whatever MEDISENTINEL_WORKERS says."""
    port, handler, ingest = _free_port(), _handler(live_server), live_server.app.state.hl7.ingest
    alone = Hl7Feeds(
        ingest, live_server.settings.model_copy(update={"mllp_port": port, "workers": 1})
    )
    env = server_env(database_url, TEST_MASTER_KEY, mllp_port=str(port), workers="2")

    async def scenario() -> tuple[int | None, bytes]:
        async with MLLPServer(handler, port=port, reuse_port=True):
            await alone.start()
            assert alone.listener is None
            command = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.cli", "mllp",
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            _, err = await command.communicate()
            return command.returncode, err

    returncode, err = run(scenario())
    assert returncode == 2, err
    assert b"the MLLP listener could not start" in err


# ---------------------------------------------------------------- `serve --workers 2`


def test_serve_with_two_workers_takes_mllp_in_both_and_keeps_the_order(
    database_url: str, client: httpx.Client, live_server: LiveServer, tmp_path: Path
) -> None:
    engine = live_server.app.state.engine
    mllp_port, http_port = _free_port(), _free_port()
    env = server_env(database_url, TEST_MASTER_KEY, port=str(http_port),
                     mllp_port=str(mllp_port), mllp_enabled="true")  # fmt: skip
    own = [unique_id("P") for _ in range(CONNECTIONS)]
    shared_mrn = unique_id("SHARED")

    def conversation(i: int) -> list[tuple[str, bytes]]:
        """Pipelined in one write: an admission and an update of this connection's patient
        at the same event time (the later arrival wins, so only in-order processing leaves
        "Two"), and an update of the patient every connection updates, at hour i."""
        admit, update, shared = unique_id(), unique_id(), unique_id()
        when = f"20240301{i:02d}0000"
        return [
            (admit, a01(admit, own[i], family="One")),
            (update, a01(update, own[i], trigger="A08", family="Two")),
            (shared, a01(shared, shared_mrn, trigger="A08", family=f"S{i:02d}", when=when)),
        ]

    plans = [conversation(i) for i in range(CONNECTIONS)]
    holders: dict[int, int] = {}

    async def talk(mllp: MLLPClient, plan: list[tuple[str, bytes]]) -> list[bytes]:
        await mllp.send_raw(b"".join(frame(m) for _, m in plan))
        return [await mllp.read_frame() for _ in plan]

    async def scenario(workers: list[int]) -> list[list[bytes]]:
        clients = [MLLPClient("127.0.0.1", mllp_port, timeout=30) for _ in plans]
        try:
            for c in clients:
                await c.connect()
            acks = await asyncio.gather(*(talk(c, p) for c, p in zip(clients, plans, strict=True)))
            # the connections are still open: which worker holds the server end of each
            held = _held(mllp_port, process.pid)
            holders.update({pid: held.get(pid, Counter())[ESTABLISHED] for pid in workers})
            return acks
        finally:
            for c in clients:
                await c.close()

    argv = [sys.executable, "-m", "app.cli", "serve", "--workers", "2"]
    with (tmp_path / "stderr").open("wb") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            workers = _wait_for_listeners(mllp_port, process, 2)
            answers = run(scenario(workers), deadline=60)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    log = (tmp_path / "stderr").read_text()

    # both workers bound the port (none logged a failure) and both accepted connections
    assert "MLLP listener not started" not in log, log
    started = {int(p) for p in re.findall(r"Started server process \[(\d+)\]", log)}
    assert started == set(workers), log
    assert sum(holders.values()) == CONNECTIONS, holders
    assert all(holders[pid] > 0 for pid in workers), holders
    assert process.returncode in (0, -signal.SIGTERM), log

    # every message got an AA, in the order sent on its connection
    for plan, acks in zip(plans, answers, strict=True):
        assert [msa(a) for a in acks] == [("AA", c) for c, _ in plan], [err_fields(a) for a in acks]
        for control, _ in plan:
            assert [r.status for r in rows_for(engine, control)] == ["accepted"]
    for mrn in own:
        [found] = patients(client, mrn)
        assert found["name"][0]["family"] == "Two"
    # one patient updated from 20 connections in two processes: created once (the lock on
    # its identifier), and the newest event time holds whatever order the updates ran in
    [shared] = patients(client, shared_mrn)
    assert shared["name"][0]["family"] == f"S{CONNECTIONS - 1:02d}"
