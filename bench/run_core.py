#!/usr/bin/env python3
"""Core throughput/latency benchmark for MediSentinel (a benchmark, not a test).

Starts `medisentinel serve` itself as a subprocess on a free loopback port, waits for
/fhir/metadata, then drives it with --concurrency concurrent async clients (httpx by default):

  create  single-POST Observation create: ops/s, p50/p95 latency per request
  txn     100-entry transaction Bundle (POST at the base): resources/s, p50/p95 per bundle
  read    GET Observation/{id} over every Observation created by the phases before it

Each phase runs for --seconds (default 10) after the planner statistics are refreshed
(ANALYZE; --no-analyze to skip) and a short untimed warm-up. Every figure is
printed with the data size (resources before the phase, how many were made or read, how long),
the DB engine and the CPU that the server, the load generator, PostgreSQL and the rest of the
machine used meanwhile. The server (its whole process group) is killed at the end, whatever
happens. Traffic goes only to 127.0.0.1.

    python bench/run_core.py                                   # fresh SQLite file in a temp dir
    python bench/run_core.py --workers 2 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:55433/bench
    python bench/run_core.py --seconds 1 --concurrency 2       # small mode for CI
    python bench/run_core.py --json                            # one JSON document on stdout

About the load generator: an httpx AsyncClient spends ~2 ms of CPU per request (measured on a
2-core AMD EPYC box), so one httpx process saturates a core at ~500 requests/s and, on a
2-core machine, takes that core away from the server. `--client raw` uses a minimal HTTP/1.1
keep-alive client on asyncio streams instead (~0.1 ms CPU per request) to measure what the
server itself can do. The CPU columns say which side was the limit.

With PostgreSQL, give it an empty database (the benchmark only adds rows; it never deletes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
from procnet import connections_per_worker  # noqa: E402

try:  # the server depends on orjson, so the venv has it; plain json works too
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(data: bytes) -> Any:
        return json.loads(data)


HOST = "127.0.0.1"
FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
LOINC = ["8867-4", "8310-5", "9279-1", "59408-5", "8480-6"]
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", ""}
PHASES = ("create", "txn", "read", "search")


# ----------------------------------------------------------------------------- workload


def observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": random.choice(LOINC)}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": (
            f"2024-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}"
            f"T{random.randint(0, 23):02d}:00:00Z"
        ),
        "valueQuantity": {
            "value": random.randint(40, 180),
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def transaction_bundle(patient_ids: list[str], size: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation(random.choice(patient_ids)),
                "request": {"method": "POST", "url": "Observation"},
            }
            for _ in range(size)
        ],
    }


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (seconds in, milliseconds out)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(round(p / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1] * 1000.0


# ----------------------------------------------------------------------------- clients


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


# ----------------------------------------------------------------------------- CPU accounting


def _proc_stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat as [comm, state, ppid, pgrp, ...]: index i is field i+2 of proc(5)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return [stat[stat.find("(") + 1 : stat.rfind(")")]] + stat[stat.rfind(")") + 2 :].split()


def _cpu_ticks(f: list[str], *, with_children: bool = False) -> int:
    ticks = int(f[12]) + int(f[13])  # utime, stime
    if with_children:
        ticks += int(f[14]) + int(f[15])  # cutime, cstime: children that exited and were reaped
    return ticks


def _processes() -> list[tuple[int, list[str]]]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _proc_stat(entry.name)
            if f:
                out.append((int(entry.name), f))
    return out


def group_cpu_seconds(leader: int) -> float | None:
    """CPU of a process group (e.g. uvicorn's supervisor and its workers), reaped ones included."""
    if not Path("/proc/self/stat").exists():
        return None
    ticks = sum(
        _cpu_ticks(f, with_children=pid == leader) for pid, f in _processes() if int(f[3]) == leader
    )
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU of one PostgreSQL cluster: the postmaster, its live children and the reaped ones."""
    if postmaster is None or not Path("/proc/self/stat").exists():
        return None
    ticks = sum(
        _cpu_ticks(f, with_children=pid == postmaster)
        for pid, f in _processes()
        if pid == postmaster or int(f[2]) == postmaster
    )
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by server / load generator / PostgreSQL / everything else between two points."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def sample(self) -> dict[str, float | None]:
        return {
            "server": group_cpu_seconds(self.server.pid),
            "client": time.process_time(),
            "postgres": postgres_cpu_seconds(self.server.postmaster),
            "machine": machine_cpu_seconds(),
        }

    @staticmethod
    def percent(before: dict[str, float | None], after: dict[str, float | None], secs: float):
        """% of one core over `secs` (so a 2-core machine tops out at 200%)."""
        out: dict[str, float] = {}
        for key in before:
            b, a = before[key], after[key]
            if b is not None and a is not None and secs > 0:
                out[key] = max(0.0, 100.0 * (a - b) / secs)
        if "machine" in out:
            ours = sum(out.get(k, 0.0) for k in ("server", "client", "postgres"))
            out["other"] = max(0.0, out["machine"] - ours)
        return {k: round(v, 1) for k, v in out.items()}


def wait_for_quiet_machine(max_wait: float, server: Server, threshold_pct: float = 15.0) -> None:
    """Wait (at most max_wait s) until, over 2 s, the CPU not used by our server is < threshold."""
    deadline = time.monotonic() + max_wait
    while True:
        m0, s0 = machine_cpu_seconds(), group_cpu_seconds(server.pid)
        time.sleep(2.0)
        m1, s1 = machine_cpu_seconds(), group_cpu_seconds(server.pid)
        if m0 is None or s0 is None or m1 is None or s1 is None:
            return
        busy = 100.0 * ((m1 - m0) - (s1 - s0)) / 2.0
        if busy < threshold_pct:
            return
        if time.monotonic() >= deadline:
            print(f"# machine still busy ({busy:.0f}% of a core); going on", file=sys.stderr)
            return


# ----------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    phase: str
    concurrency: int
    existing_before: int | None
    duration_s: float = 0.0
    ops: int = 0
    units: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    error_samples: list[str] = field(default_factory=list)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    read_pool: int | None = None
    # Open connections per worker process at the end of the phase (Linux): with every
    # connection on one of two workers, that one runs out of its core (BENCHMARKS, session 9).
    connections: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        secs = self.duration_s or float("nan")
        d: dict[str, Any] = {
            "phase": self.phase,
            "unit": {
                "create": "resources",
                "txn": "resources",
                "read": "reads",
                "search": "searches",
            }[self.phase],
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "ops": self.ops,
            "ops_per_s": round(self.ops / secs, 1),
            "units": self.units,
            "units_per_s": round(self.units / secs, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else float("nan"),
            "errors": self.errors,
            "error_samples": self.error_samples[:3],
            "resources_existing_before": self.existing_before,
            # % of one core; "other" = CPU used on the machine by none of server, load
            # generator or PostgreSQL: somebody else's work, which makes the figures pessimistic.
            "cpu_pct": self.cpu_pct,
        }
        if self.read_pool is not None:
            d["read_pool_ids"] = self.read_pool
        if self.connections:
            d["connections_per_worker"] = self.connections
        return d


async def run_phase(
    name: str,
    op: Any,
    *,
    seconds: float,
    concurrency: int,
    warmup_ops: int,
    count_before: Any,
    meter: CpuMeter,
) -> PhaseResult:
    """Run `op` from `concurrency` clients for `seconds`; op returns how many units it did."""
    # Untimed warm-up: connections opened, first statements prepared, caches filled.
    warm = [
        warmup_ops // concurrency + (1 if i < warmup_ops % concurrency else 0)
        for i in range(concurrency)
    ]

    async def warm_worker(n: int) -> None:
        for _ in range(n):
            try:
                await op()
            except Exception:  # noqa: BLE001, S110 - counted in the timed part if it persists
                pass

    await asyncio.gather(*(warm_worker(n) for n in warm))

    result = PhaseResult(name, concurrency, count_before())
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                n = await op()
            except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                await asyncio.sleep(0.01)  # don't spin on a dead server
                continue
            result.latencies.append(time.perf_counter() - started)
            result.ops += 1
            result.units += n

    cpu0 = meter.sample()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - t0
    result.cpu_pct = CpuMeter.percent(cpu0, meter.sample(), result.duration_s)
    result.connections = connections_per_worker(meter.server.port, meter.server.proc.pid)
    return result


async def drive(
    args: argparse.Namespace, server: Server, engine_info: dict[str, Any]
) -> list[dict[str, Any]]:
    conns = max(args.concurrency, args.txn_concurrency or 0)
    client: LoadClient = (
        RawClient(HOST, server.port, "/fhir", conns)
        if args.client == "raw"
        else HttpxClient(server.base, conns)
    )
    meter = CpuMeter(server)
    label = engine_label(engine_info)
    results: list[dict[str, Any]] = []
    try:
        patient_ids: list[str] = []
        for i in range(args.patients):
            patient = {
                "resourceType": "Patient",
                "name": [{"family": f"Bench{i}", "given": ["Core"]}],
                "gender": random.choice(["male", "female"]),
                "birthDate": "1970-01-01",
            }
            status, body = await client.request("POST", "/Patient", dumps(patient))
            if status != 201:
                raise RuntimeError(f"POST Patient -> {status}: {body[:300]!r}")
            patient_ids.append(loads(body)["id"])

        observation_ids: list[str] = []

        async def create() -> int:
            payload = dumps(observation(random.choice(patient_ids)))
            status, body = await client.request("POST", "/Observation", payload)
            if status != 201:
                raise RuntimeError(f"POST Observation -> {status}: {body[:200]!r}")
            observation_ids.append(loads(body)["id"])
            return 1

        async def txn() -> int:
            payload = dumps(transaction_bundle(patient_ids, args.bundle_size))
            status, body = await client.request("POST", "", payload)
            if status != 200:
                raise RuntimeError(f"POST transaction -> {status}: {body[:200]!r}")
            entries = loads(body).get("entry", [])
            if len(entries) != args.bundle_size:
                raise RuntimeError(f"transaction answered {len(entries)} of {args.bundle_size}")
            for e in entries:
                # response.location: "Observation/{id}/_history/{v}", possibly absolute
                loc = (e.get("response") or {}).get("location", "")
                parts = loc.split("/_history")[0].rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2] == "Observation":
                    observation_ids.append(parts[-1])
            return args.bundle_size

        async def read() -> int:
            oid = random.choice(observation_ids)
            status, _ = await client.request("GET", f"/Observation/{oid}")
            if status != 200:
                raise RuntimeError(f"GET Observation/{oid} -> {status}")
            return 1

        async def search() -> int:
            pid = random.choice(patient_ids)
            path = f"/Observation?subject=Patient/{pid}&_count={args.search_count}"
            status, _ = await client.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}")
            return 1

        ops = {"create": create, "txn": txn, "read": read, "search": search}
        for phase in args.phases:
            conc = (
                (args.txn_concurrency or args.concurrency) if phase == "txn" else args.concurrency
            )
            if phase in ("read", "search") and not observation_ids:
                for _ in range(max(100, 10 * conc)):  # something to read, made untimed
                    await create()
            if not args.no_analyze:
                await asyncio.to_thread(refresh_statistics, args.database_url)
            if args.quiet_wait:
                await asyncio.to_thread(wait_for_quiet_machine, args.quiet_wait, server)
            warmup = 0 if args.no_warmup else (2 * conc if phase == "txn" else max(20, 8 * conc))
            pool = len(observation_ids)
            res = await run_phase(
                phase,
                ops[phase],
                seconds=args.seconds,
                concurrency=conc,
                warmup_ops=warmup,
                count_before=lambda: count_resources(args.database_url),
                meter=meter,
            )
            if phase == "read":
                res.read_pool = pool
            d = res.as_dict()
            results.append(d)
            if not args.json:
                print(format_line(d, label, args.workers, client.name), flush=True)
                for sample in d["error_samples"]:
                    print(f"         error sample: {sample}", flush=True)
    finally:
        await client.aclose()
    return results


# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("medisentinel")
    if script.exists():
        return [str(script)]
    found = shutil.which("medisentinel")
    if found:
        return [found]
    return [sys.executable, "-m", "app.cli"]


class Server:
    """`medisentinel serve` in its own process group; stop() kills the whole group."""

    def __init__(
        self, database_url: str, workers: int, workdir: Path, *, no_audit: bool = False
    ) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}/fhir"
        self.postmaster: int | None = None  # set once we know PostgreSQL runs on this machine
        self.log_path = workdir / "server.log"
        self.workdir = workdir
        env = dict(os.environ)
        env.update(
            {
                "MEDISENTINEL_DATABASE_URL": database_url,
                "MEDISENTINEL_HOST": HOST,
                "MEDISENTINEL_PORT": str(self.port),
                "MEDISENTINEL_WORKERS": str(workers),
                "MEDISENTINEL_BASE_URL": self.base,
                "MEDISENTINEL_LOG_LEVEL": "warning",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.cmd = server_command() + [
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        if no_audit:
            subprocess.run(server_command() + ["migrate"], env=env, cwd=workdir, check=True)
            root = str(Path(__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), root) if p)
            self.cmd = [sys.executable, "-m", "bench.noaudit", "--host", HOST,
                        "--port", str(self.port), "--workers", str(workers)]  # fmt: skip
        self.env = env
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # cwd = the temp dir, so a stray .env or ./data where the caller stands plays no part.
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def issue_token(self) -> str:
        """A backend client with every system scope, and a token for it, through the CLI
        (same database, same master key file under the work dir as the server)."""
        scope = "system/*.cruds"
        name = f"bench-{os.getpid()}"

        def cli(*argv: str) -> str:
            done = subprocess.run(
                [*server_command(), *argv], cwd=self.workdir, env=self.env,
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            return done.stdout

        cli("client", "create", name, "--kind", "backend", "--scope", scope,
            "--jwks-uri", "https://bench.invalid/jwks")  # fmt: skip
        return str(json.loads(cli("token", "--client", name, "--scope", scope))["access_token"])

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode} before it was ready:\n"
                        + self.log_tail()
                    )
                try:
                    r = await client.get(f"{self.base}/metadata", headers={"Accept": FHIR_JSON})
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (a worker that ignored SIGTERM) goes the hard way
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


# ----------------------------------------------------------------------------- database


def check_loopback_db(url: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    host = (parsed.host or "").strip("[]")
    if host not in LOOPBACK_NAMES and not host.startswith(("127.", "/")):
        raise SystemExit(f"refusing database host {host!r}: this benchmark stays on loopback")


def describe_engine(url: str) -> dict[str, Any]:
    """Engine, version and the settings that matter for write throughput (durability)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    info: dict[str, Any] = {
        "backend": parsed.get_backend_name(),
        "url": parsed.render_as_string(hide_password=True),
    }
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if info["backend"] == "postgresql":
                info["version"] = conn.execute(text("SHOW server_version")).scalar()
                for setting in (
                    "fsync",
                    "synchronous_commit",
                    "full_page_writes",
                    "shared_buffers",
                    "max_connections",
                ):
                    info[setting] = conn.execute(text(f"SHOW {setting}")).scalar()
                backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                f = _proc_stat(int(backend_pid or 0))
                if f and f[0] == "postgres":  # the cluster runs on this machine: meter its CPU
                    info["postmaster_pid"] = int(f[2])
            elif info["backend"] == "sqlite":
                info["version"] = conn.execute(text("SELECT sqlite_version()")).scalar()
                info["journal_mode"] = conn.execute(text("PRAGMA journal_mode")).scalar()
    except Exception as exc:  # noqa: BLE001 - informational only
        info["version"] = f"unknown ({type(exc).__name__})"
    finally:
        engine.dispose()
    return info


def refresh_statistics(url: str) -> None:
    """ANALYZE (on SQLite the way app.db.refresh_statistics does it). A benchmark grows its
    tables from empty within seconds, which a production database does not; with statistics
    taken when a table was nearly empty (or none yet) the planner picks plans for tiny tables:
    a subject search took 6 ms of PostgreSQL CPU instead of under 1 ms (session 7)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    finally:
        engine.dispose()


def count_resources(url: str) -> int | None:
    """Rows in the current-resource table (all types, deleted ones too), None if unknown."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        if "resource" not in set(inspect(engine).get_table_names()):
            return None
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM resource")).scalar() or 0)
    except Exception:  # noqa: BLE001 - informational only
        return None
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- output, main


def engine_label(info: dict[str, Any]) -> str:
    version = str(info.get("version", "?")).split(" ")[0]
    return f"{info['backend']} {version}"


def format_line(r: dict[str, Any], label: str, workers: int, client: str) -> str:
    if r["phase"] == "txn":
        rate = f"{r['units_per_s']:8.1f} resources/s ({r['ops_per_s']:.1f} bundles/s)"
        size = f"{r['units']} resources created in {r['ops']} bundles"
        per = "bundle"
    elif r["phase"] == "create":
        rate, size, per = f"{r['ops_per_s']:8.1f} ops/s", f"{r['ops']} created", "request"
    else:
        rate = f"{r['ops_per_s']:8.1f} ops/s"
        size = f"{r['ops']} reads over {r.get('read_pool_ids', 0)} ids"
        per = "request"
    cpu = r.get("cpu_pct") or {}
    cpu_text = ", ".join(
        f"{k} {cpu[k]:.0f}" for k in ("server", "client", "postgres", "other") if k in cpu
    )
    return (
        f"{r['phase']:6s} [{label}, {workers} worker(s), {r['concurrency']} {client} clients]"
        f" {rate}  p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
        f" per {per} | {size} in {r['duration_s']:.1f}s,"
        f" {r['resources_existing_before']} resources existed before, errors {r['errors']}"
        + (f" | CPU% of a core: {cpu_text}" if cpu_text else "")
        + (f" | connections per worker {spread}" if (spread := _spread(r)) else "")
    )


def _spread(r: dict[str, Any]) -> str:
    return "/".join(str(n) for n in r.get("connections_per_worker", []))


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib: float | None = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


@dataclass
class Served:
    """A benchmark's server, ready: what the run's header line and JSON document need."""

    server: Server
    engine_info: dict[str, Any]
    ready_s: float


@contextmanager
def serve_for_bench(
    args: argparse.Namespace,
    prefix: str,
    *,
    no_audit: bool = False,
    also_ready: Callable[[Server], Coroutine[Any, Any, None]] | None = None,
) -> Iterator[Served]:
    """Start the server on args.database_url (a fresh SQLite file in a temp dir when unset),
    wait until it (and `also_ready`) answers, write --pid-file; on leaving, check it
    survived the run, stop it and remove the temp dir. Shared by run_core and run_hl7."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    if not args.database_url:
        args.database_url = f"sqlite:///{workdir / 'bench.db'}"
    check_loopback_db(args.database_url)
    server: Server | None = None
    try:
        server = Server(args.database_url, args.workers, workdir, no_audit=no_audit)
        started = time.perf_counter()
        asyncio.run(server.wait_ready())
        if also_ready is not None:
            asyncio.run(also_ready(server))
        ready_s = time.perf_counter() - started
        engine_info = describe_engine(args.database_url)
        server.postmaster = engine_info.get("postmaster_pid")
        if args.pid_file:
            args.pid_file.write_text(f"{server.pid}\n")
        yield Served(server, engine_info, ready_s)
        if server.proc.poll() is not None:
            raise RuntimeError(f"server died during the run:\n{server.log_tail()}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def finish(
    args: argparse.Namespace,
    name: str,
    served: Served,
    results: list[dict[str, Any]],
    resources_at_end: Any,
    summary: str,
    **settings: Any,
) -> int:
    """The run's JSON document (what ran where, with which settings, and the results):
    written to --json-out, printed with --json, else the summary line; 1 if any phase had
    errors."""
    document = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "engine": served.engine_info,
        "workers": args.workers,
        "client": args.client,
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "patients": args.patients,
        **settings,
        "resources_at_end": resources_at_end,
        "results": results,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(summary, flush=True)
    return 1 if any(r["errors"] for r in results) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (default: fresh SQLite in a temp dir)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument(
        "--txn-concurrency",
        type=int,
        default=0,
        help="clients in the transaction phase (default: --concurrency)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per phase (10)")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma list, in order, of create,txn,read,search (default: all)",
    )
    p.add_argument("--bundle-size", type=int, default=100, help="entries per transaction (100)")
    p.add_argument("--patients", type=int, default=20, help="Patients the Observations refer to")
    p.add_argument(
        "--client",
        choices=("httpx", "raw"),
        default="httpx",
        help="load generator: httpx (default) or a minimal asyncio HTTP/1.1 client"
        " that costs ~20x less CPU per request",
    )
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up before phases")
    p.add_argument("--no-analyze", action="store_true", help="no ANALYZE before each phase")
    p.add_argument("--search-count", type=int, default=10, help="_count of the search phase (10)")
    p.add_argument(
        "--no-audit",
        action="store_true",
        help="serve bench/noaudit.py's app: the audit hook swapped for a no-op, to measure"
        " what auditing costs (the product itself cannot turn auditing off)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each phase wait up to this many seconds for the rest of the"
        " machine to go idle (a shared box skews figures); default 0: don't",
    )
    p.add_argument("--pid-file", type=Path, help="write the server pid here when ready (py-spy)")
    p.add_argument("--json", action="store_true", help="print one JSON document, not lines")
    p.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    args = p.parse_args(argv)
    args.phases = [ph.strip() for ph in args.phases.split(",") if ph.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if args.concurrency < 1 or args.workers < 1 or args.seconds <= 0 or args.bundle_size < 1:
        p.error("--concurrency, --workers, --bundle-size must be >= 1 and --seconds > 0")
    if args.seconds > 600:
        p.error("--seconds is per phase and at most 600")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with serve_for_bench(args, "medisentinel-bench-", no_audit=args.no_audit) as served:
        server, engine_info = served.server, served.engine_info
        HEADERS["Authorization"] = f"Bearer {server.issue_token()}"
        if not args.json:
            print(
                f"# MediSentinel core benchmark: {engine_label(engine_info)}"
                f" ({engine_info['url']}), {args.workers} worker(s), {args.concurrency}"
                f" {args.client} clients, {args.seconds:g}s per phase; server pid {server.pid}"
                f" at {server.base}, ready in {served.ready_s:.1f}s",
                flush=True,
            )
        results = asyncio.run(drive(args, server, engine_info))
        final_count = count_resources(args.database_url)
    return finish(
        args, "medisentinel-core", served, results, final_count,
        f"# resources in the database at the end: {final_count}",
        txn_concurrency=args.txn_concurrency or args.concurrency, bundle_size=args.bundle_size,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
