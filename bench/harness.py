"""What the benchmarks share: the server they start (`medisentinel serve` in its own process
group, on a free loopback port), the database checks and statistics, CPU accounting of server,
client, PostgreSQL and the rest of the machine, and the run's JSON document. Used by
bench/run_core.py and bench/run_hl7.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
from load_clients import FHIR_JSON  # noqa: E402

HOST = "127.0.0.1"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", ""}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (seconds in, milliseconds out)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(round(p / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1] * 1000.0


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

    def issue_token(self, client_name: str = "") -> str:
        """A backend client with every system scope, and a token for it (its audience: this
        server's base URL), through the CLI (same database, same master key as the server)."""
        scope = "system/*.cruds"
        name = client_name or f"bench-{os.getpid()}"

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


# The searchable audit copy working all the time (a round every second, no lag), as it must
# under sustained load; the default server postpones it while busy (audit/indexing.py).
COPY_ALWAYS_ENV = {
    "MEDISENTINEL_AUDIT_INDEX_SECONDS": "1",
    "MEDISENTINEL_AUDIT_INDEX_MAX_LAG_SECONDS": "0",
}


def drain_copy(database_url: str, limit: float = 120.0) -> float:
    """Seconds until every audit record is in the searchable copy. With the copy on and no
    lag (COPY_ALWAYS_ENV), that is the copy work a phase left behind: --with-copy of
    audit_ab.py and run_hl7.py charges it to the phase."""
    from sqlalchemy import create_engine

    from audit.indexing import backlog

    engine = create_engine(database_url)
    try:
        start = time.monotonic()
        while backlog(engine) > 0:
            if time.monotonic() - start > limit:
                raise RuntimeError(f"the audit copy did not catch up within {limit:g} s")
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        engine.dispose()


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
