"""Who holds which TCP socket, as the kernel sees it (Linux /proc): used by the benchmark to
report how the clients' connections were spread over the server's workers (one worker with
every connection runs out of its core while the other idles: BENCHMARKS.md, session 9), and
by the tests that check that spread."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

LISTEN, ESTABLISHED = "0A", "01"  # TCP states in /proc/net/tcp


def sockets_on(port: int) -> dict[int, str]:
    """inode -> TCP state of every socket whose local port is `port`."""
    found: dict[int, str] = {}
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                found[int(fields[9])] = fields[3]
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def children(parent: int) -> list[int]:
    kids: list[int] = []
    if not Path("/proc").is_dir():  # not Linux: nobody can be told apart
        return kids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:  # field 4, after "(comm)"
            kids.append(int(entry.name))
    return kids


def held(port: int, parent: int) -> dict[int, Counter[str]]:
    """Per child process of `parent`: the states of the sockets on local `port` it holds."""
    sockets = sockets_on(port)
    found = {}
    for pid in children(parent):
        states = Counter(sockets[i] for i in socket_inodes(pid) if i in sockets)
        if states:
            found[pid] = states
    return found


def connections_per_worker(port: int, parent: int) -> list[int]:
    """Open connections on `port` held by each listening child of `parent`, most first."""
    return sorted((s[ESTABLISHED] for s in held(port, parent).values() if s[LISTEN]), reverse=True)
