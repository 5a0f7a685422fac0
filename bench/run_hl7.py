#!/usr/bin/env python3
"""HL7 v2 over MLLP benchmark for MediSentinel (issue #6; a benchmark, not a test).

Starts `medisentinel serve` itself as a subprocess (HTTP and MLLP on free loopback ports),
waits until /fhir/metadata answers and the MLLP port accepts, then drives the MLLP listener
with --concurrency connections, each sending one message and waiting for its ACK before the
next (the server acknowledges after the commit, so an ACK means the message is stored).
The traffic is generated (bench/hl7_messages.py): ADT^A01/A08 and ORU^R01 with 5-10 OBX.

  adt       ADT^A01 only: new patients registered, as fast as the connections go
  mix       40 % ADT (A01 new patients, A08 updates), 60 % ORU^R01, as fast as they go
  moderate  the same mix offered at a fixed --rate (msgs/s, spread over the connections):
            the latency target is judged here. Each message has a send slot (start +
            i/rate); its latency counts from the slot, so a server that falls behind shows
            it (a slot missed by > 10 ms is also counted as "late").

Before mix/moderate, --patients patients are registered (untimed) if fewer are. Each phase
has an untimed warm-up, then the planner statistics are refreshed (ANALYZE; --no-analyze to
skip): the benchmark grows its tables from empty within seconds, which a production database
does not, and with statistics taken when a table was nearly empty an identifier match can
take milliseconds instead of 0.1 ms (PostgreSQL then walks every resource of the type).

Per phase one line: engine, workers, connections, msgs/s, ACK latency p50/p95/p99, errors
(any ACK whose MSA-1 is not AA/CA, and transport failures),
warnings (AA with an ERR segment), data size (resources and stored messages before/after),
and the CPU used by the server, this client, PostgreSQL and everything else (% of one core).
The server's whole process group is killed at the end, whatever happens.

Every message leaves audit records (one per resource written, and the message's own), whose
searchable copy a busy server postpones (audit/indexing.py) past a 10-15 s phase: the
figures above do not include it. `--with-copy` runs the copy all the time and adds the
time it takes to catch up after each phase: "sustained" = messages / (phase + catch-up).

    python bench/run_hl7.py                                    # fresh SQLite in a temp dir
    python bench/run_hl7.py --workers 2 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:25432/hl7bench
    python bench/run_hl7.py --seconds 2 --concurrency 2 --patients 20   # smoke
    python bench/run_hl7.py --json

Client: `--client raw` (default) is a lean asyncio MLLP client (write a frame, readuntil
0x1C 0x0D); `--client mllp` uses hl7_adapters.mllp.MLLPClient. Their CPU shows in the
"client" column (which also includes generating the messages).

Note: with several workers every worker runs the MLLP listener, each binding the port with
SO_REUSEPORT (Linux), and the kernel spreads new connections over them (docs/hl7v2.md,
"Several worker processes"): a connection stays on one worker, so use --concurrency > 1 to
load more than one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from harness import (  # noqa: E402
    COPY_ALWAYS_ENV,
    HOST,
    CpuMeter,
    Server,
    drain_copy,
    engine_label,
    finish,
    free_port,
    percentile,
    refresh_statistics,
    serve_for_bench,
    wait_for_quiet_machine,
)
from hl7_messages import Traffic  # noqa: E402

from hl7_adapters.mllp import MLLPClient  # noqa: E402

PHASES = ("adt", "mix", "moderate")
START, END = b"\x0b", b"\x1c\r"
_MSA = re.compile(rb"(?:^|\r)MSA\|([A-Z]{2})")
LATE_S = 0.010


# ----------------------------------------------------------------------------- clients


class RawMllp:
    """One MLLP connection: a frame out, the ACK frame back. Nothing else."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)

    async def send(self, message: bytes) -> bytes:
        assert self._reader is not None and self._writer is not None
        self._writer.write(START + message + END)
        await self._writer.drain()
        data = await asyncio.wait_for(self._reader.readuntil(END), 60.0)
        return data[data.find(START) + 1 : -2]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class PackageMllp:
    """hl7_adapters.mllp.MLLPClient behind the same interface."""

    def __init__(self, port: int) -> None:
        self._client = MLLPClient(HOST, port, timeout=60.0)

    async def connect(self) -> None:
        await self._client.connect()

    async def send(self, message: bytes) -> bytes:
        return await self._client.send(message)

    async def close(self) -> None:
        await self._client.close()


# ----------------------------------------------------------------------------- database


def _on_db(url: str, work: Any, default: Any = None) -> Any:
    """work(connection) on a short-lived engine; `default` when it fails (informational)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return work(conn)
    except Exception:  # noqa: BLE001 - counts are informational (tables not there yet)
        if default is None:
            raise
        return default
    finally:
        engine.dispose()


def data_size(url: str) -> dict[str, int]:
    """Resources (current rows, every type) and stored HL7 messages."""

    def count(conn: Any) -> dict[str, int]:
        q = {"resources": "resource", "messages": "hl7_message"}
        return {
            k: int(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()) for k, t in q.items()
        }

    return dict(_on_db(url, count, {}))


def resources_by_type(url: str) -> dict[str, int]:
    sql = "SELECT resource_type, count(*) FROM resource GROUP BY resource_type"
    return dict(
        _on_db(url, lambda conn: {str(t): int(n) for t, n in conn.exec_driver_sql(sql)}, {})
    )


# ----------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    phase: str
    concurrency: int
    rate: float | None
    duration_s: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    warnings: int = 0
    late: int = 0
    obx: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    samples: list[str] = field(default_factory=list)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        secs = self.duration_s or float("nan")
        return {
            "phase": self.phase,
            "concurrency": self.concurrency,
            "offered_rate": self.rate,
            "duration_s": round(self.duration_s, 3),
            "messages": n,
            "messages_per_s": round(n / secs, 1),
            "kinds": dict(self.kinds),
            "obx": self.obx,
            "ack_codes": dict(self.acks),
            "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "errors": self.errors,
            "error_samples": self.samples[:3],
            "warnings": self.warnings,
            "late_sends": self.late,
            "before": self.before,
            "after": self.after,
            "cpu_pct": self.cpu_pct,
        }


class Driver:
    def __init__(self, args: argparse.Namespace, port: int, traffic: Traffic) -> None:
        self.args, self.port, self.traffic = args, port, traffic
        self.client_class = RawMllp if args.client == "raw" else PackageMllp

    async def _connections(self, n: int) -> list[Any]:
        conns = [self.client_class(self.port) for _ in range(n)]
        await asyncio.gather(*(c.connect() for c in conns))
        return conns

    async def _one(self, conn: Any, make: Any, result: PhaseResult | None, slot: float) -> None:
        """Send one generated message and check its ACK (recorded when `result` is given)."""
        kind, message, person = make()
        started = time.perf_counter()
        try:
            ack = await conn.send(message)
        except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure
            if result is not None:
                result.errors += 1
                result.samples.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")
            raise
        done = time.perf_counter()
        found = _MSA.search(ack)
        code = found.group(1).decode() if found else "none"
        if code in ("AA", "CA"):
            self.traffic.acknowledged(kind, person)
        if result is None:
            return
        result.latencies.append(done - min(slot, started) if slot else done - started)
        result.kinds[kind] += 1
        result.acks[code] += 1
        if kind == "ORU":
            result.obx += message.count(b"\rOBX|")
        if code not in ("AA", "CA"):
            result.errors += 1
            if len(result.samples) < 3:
                result.samples.append(f"{kind}: {ack.decode(errors='replace')[-300:]!r}")
        elif b"\rERR|" in ack:
            result.warnings += 1

    async def untimed(self, make: Any, count: int) -> None:
        conns = await self._connections(min(self.args.concurrency, max(count, 1)))
        remaining = [count]

        async def worker(conn: Any) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await self._one(conn, make, None, 0.0)

        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            for c in conns:
                await c.close()

    async def phase(self, name: str, meter: CpuMeter, rate: float | None) -> PhaseResult:
        args, traffic = self.args, self.traffic
        make = traffic.admit if name == "adt" else traffic.mixed
        if name != "adt" and len(traffic.registered) < args.patients:
            await self.untimed(traffic.admit, args.patients - len(traffic.registered))
        if not args.no_warmup:
            await self.untimed(make, 4 * args.concurrency)
        if not args.no_analyze:
            await asyncio.to_thread(refresh_statistics, args.database_url)
        result = PhaseResult(name, args.concurrency, rate, before=data_size(args.database_url))
        conns = await self._connections(args.concurrency)
        next_slot = [0]
        cpu0 = meter.sample()
        t0 = time.perf_counter()
        deadline = t0 + args.seconds

        async def worker(conn: Any) -> None:
            while True:
                slot = 0.0
                if rate:
                    slot = t0 + next_slot[0] / rate
                    next_slot[0] += 1
                    if slot >= deadline or time.perf_counter() >= deadline:
                        return  # a server that falls behind is not waited for
                    delay = slot - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -LATE_S:
                        result.late += 1
                elif time.perf_counter() >= deadline:
                    return
                try:
                    await self._one(conn, make, result, slot)
                except Exception:  # noqa: BLE001 - counted; a dead connection is replaced
                    await conn.close()
                    await asyncio.sleep(0.05)
                    conn = self.client_class(self.port)
                    await conn.connect()

        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            result.duration_s = time.perf_counter() - t0
            result.cpu_pct = CpuMeter.percent(cpu0, meter.sample(), result.duration_s)
            for c in conns:
                await c.close()
        result.after = data_size(args.database_url)
        return result


# ----------------------------------------------------------------------------- output, main


def format_line(r: dict[str, Any], label: str, workers: int, client: str) -> str:
    kinds = r["kinds"]
    mix = ", ".join(f"{k} {kinds[k]}" for k in ("A01", "A08", "ORU") if kinds.get(k))
    offered = (
        f" (offered {r['offered_rate']:g}/s, late {r['late_sends']})" if r["offered_rate"] else ""
    )
    cpu = r.get("cpu_pct") or {}
    cpu_text = ", ".join(
        f"{k} {cpu[k]:.0f}" for k in ("server", "client", "postgres", "other") if k in cpu
    )
    b, a = r["before"], r["after"]
    return (
        f"{r['phase']:8s} [{label}, {workers} worker(s), {r['concurrency']} {client} conns]"
        f" {r['messages_per_s']:7.1f} msgs/s{offered}  ACK p50 {r['p50_ms']:.1f}"
        f" p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} ms | {r['messages']} msgs in"
        f" {r['duration_s']:.1f}s ({mix}; {r['obx']} OBX) | resources {b.get('resources')}"
        f" -> {a.get('resources')}, stored messages {b.get('messages')} -> {a.get('messages')}"
        f" | errors {r['errors']}, warnings {r['warnings']}"
        + (f" | CPU% of a core: {cpu_text}" if cpu_text else "")
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (default: fresh SQLite in a temp dir)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="MLLP connections (default 16)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per phase (10)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma list of adt,mix,moderate")
    p.add_argument("--rate", default="100",
                   help="msgs/s offered in moderate; a list: one run each (100)")  # fmt: skip
    p.add_argument("--patients", type=int, default=200, help="registered before mix (200)")
    p.add_argument("--client", choices=("raw", "mllp"), default="raw", help="see above")
    p.add_argument("--seed", type=int, default=6, help="traffic generator seed")
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up per phase")
    p.add_argument("--no-analyze", action="store_true", help="no ANALYZE before each phase")
    p.add_argument(
        "--with-copy",
        action="store_true",
        help="the searchable audit copy on with no lag; each phase also reports a sustained"
        " rate: messages / (phase + the time the copy then takes to catch up)",
    )
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="wait up to this many s before each phase for an idle machine")  # fmt: skip
    p.add_argument("--pid-file", type=Path, help="write the server pid here when ready (py-spy)")
    p.add_argument("--json", action="store_true", help="print one JSON document, not lines")
    p.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    args = p.parse_args(argv)
    args.phases = [ph.strip() for ph in args.phases.split(",") if ph.strip()]
    if set(args.phases) - set(PHASES):
        p.error(f"unknown phase(s): {', '.join(sorted(set(args.phases) - set(PHASES)))}")
    if min(args.concurrency, args.workers, args.patients) < 1 or args.seconds <= 0:
        p.error("--concurrency, --workers, --patients must be >= 1 and --seconds > 0")
    try:
        args.rate = [float(r) for r in str(args.rate).split(",") if r.strip()]
    except ValueError:
        p.error("--rate: msgs/s, or a comma list of them")
    if not args.rate or min(args.rate) <= 0 or args.seconds > 600:
        p.error("--rate must be > 0 and --seconds at most 600")
    return args


async def wait_mllp(port: int, server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log_tail()}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return
    raise RuntimeError(f"MLLP port {port} not accepting after {timeout:.0f}s:\n{server.log_tail()}")


async def drive(args: argparse.Namespace, port: int, server: Server, label: str) -> list[Any]:
    traffic = Traffic(args.seed, uuid.uuid4().hex[:6].upper())
    driver = Driver(args, port, traffic)
    meter = CpuMeter(server)
    results = []
    runs = [(n, r) for n in args.phases for r in (args.rate if n == "moderate" else [None])]
    for name, rate in runs:
        if args.quiet_wait:
            await asyncio.to_thread(wait_for_quiet_machine, args.quiet_wait, server)
        d = (await driver.phase(name, meter, rate)).as_dict()
        if args.with_copy:
            wait = await asyncio.to_thread(drain_copy, args.database_url)
            d["copy_wait_s"] = round(wait, 3)
            d["sustained_messages_per_s"] = round(d["messages"] / (d["duration_s"] + wait), 1)
        results.append(d)
        if not args.json:
            print(format_line(d, label, args.workers, args.client), flush=True)
            if args.with_copy:
                print(
                    f"         sustained {d['sustained_messages_per_s']:.1f} msgs/s: the audit"
                    f" copy caught up {d['copy_wait_s']:.2f} s after the phase",
                    flush=True,
                )
            for sample in d["error_samples"]:
                print(f"           error sample: {sample}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    import os

    args = parse_args(argv)
    mllp_port = free_port()
    # harness.Server copies this process's environment when it starts the server.
    if args.with_copy:
        os.environ.update(COPY_ALWAYS_ENV)
    os.environ.update(
        MEDISENTINEL_MLLP_ENABLED="true",
        MEDISENTINEL_MLLP_HOST=HOST,
        MEDISENTINEL_MLLP_PORT=str(mllp_port),
    )
    with serve_for_bench(
        args, "medisentinel-hl7bench-", also_ready=lambda server: wait_mllp(mllp_port, server)
    ) as served:
        server, engine_info = served.server, served.engine_info
        label = engine_label(engine_info)
        if not args.json:
            settings = ", ".join(
                f"{k}={engine_info[k]}"
                for k in ("fsync", "synchronous_commit", "journal_mode")
                if k in engine_info
            )
            print(
                f"# MediSentinel HL7 v2 MLLP benchmark: {label} ({engine_info['url']}; {settings}),"
                f" {args.workers} worker(s), {args.concurrency} {args.client} connections,"
                f" {args.seconds:g}s per phase"
                + ("" if args.no_analyze else ", ANALYZE before each phase")
                + f"; server pid {server.pid}, MLLP port {mllp_port},"
                f" ready in {served.ready_s:.1f}s",
                flush=True,
            )
        results = asyncio.run(drive(args, mllp_port, server, label))
        by_type = resources_by_type(args.database_url)
    return finish(
        args, "medisentinel-hl7-mllp", served, results, by_type,
        f"# resources at the end: {json.dumps(by_type, sort_keys=True)}", rate=args.rate,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
