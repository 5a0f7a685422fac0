"""`medisentinel audit verify --export FILE`: check an export (export.py) without the database.

An export carries public keys, but a forger can carry their own: signatures are checked only
against keys the verifier trusts independently (`trusted`: a JWKS the auditor obtained from the
server, `--jwks`, or the server's own keys when run on the server). Then:

* each line's content matches its hash, and each line links to the one before it;
* the start and end markers verify with a trusted key;
* for every partition the end marker names, the file holds every record from just after the
  start marker's head (or the partition's first record) up to the end marker's head: its
  first line links to the start head, its last line is the end head, no partition is left
  out, and no line lies outside those runs.

An export that fails any of these is not verified (`ok` false, exit 1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import RSAKey

from audit.chain import GENESIS, link_hash
from audit.checkpoints import Heads, decode_heads
from audit.export import FORMAT

TrustedKey = Callable[[str], RSAKey | None]  # kid -> a key the verifier trusts, or None


def load_jwks(text: str) -> TrustedKey:
    """A JWKS document (the server's published /auth/jwks) as a key lookup."""
    keys = {k["kid"]: RSAKey.import_key(k) for k in json.loads(text)["keys"] if k.get("kid")}
    return keys.get


def verify_file(path: Path, trusted: TrustedKey) -> dict[str, Any]:
    chain = json.loads(path.with_name(path.name + ".chain.json").read_text())
    if chain.get("format") != FORMAT:
        return _result(chain, 0, ["not a format 2 export (no signed start and end): export again"])
    contents = path.read_bytes().split(b"\n")[:-1]
    records = chain["records"]
    problems = _line_problems(contents, records)
    start, start_problem = _open(chain.get("start"), trusted, "start")
    end, end_problem = _open(chain.get("end"), trusted, "end")
    problems += [p for p in (start_problem, end_problem) if p]
    if end is None:
        problems.append("nothing anchors the export's end: not verified")
        return _result(chain, 0, problems)
    start_heads = decode_heads(start["heads"]) if start else {}
    problems += _run_problems(records, start_heads, decode_heads(end["heads"]))
    problems += _range_problems(chain, start, end)
    anchored = 0 if problems else len(records)
    return _result(chain, anchored, problems, start, end)


def _result(
    chain: dict[str, Any],
    anchored: int,
    problems: list[str],
    start: dict[str, Any] | None = None,
    end: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "ok": not problems,
        "records": len(chain.get("records", [])),
        "anchored_by_checkpoint": anchored,
        "covers": {
            "after": start["created"] if start else None,
            "until": end["created"] if end else None,
        },
        "signing_keys": sorted({m["kid"] for m in (chain.get("start"), chain.get("end")) if m}),
        "problems": problems[:50],
    }


def _line_problems(contents: list[bytes], records: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    if len(contents) != len(records):
        problems.append(f"{len(contents)} lines but {len(records)} chain entries")
    previous: dict[int, tuple[int, str]] = {}
    for n, (content, info) in enumerate(zip(contents, records, strict=False), start=1):
        pid, pseq = info["partition"], info["pseq"]
        digest = hashlib.sha256(content).hexdigest()
        if digest != info["content_hash"]:
            problems.append(f"line {n}: content was modified")
        linked = link_hash(bytes.fromhex(info["prev_hash"]), bytes.fromhex(digest), pid, pseq)
        if linked.hex() != info["chain_hash"]:
            problems.append(f"line {n}: chain hash does not match")
        before = previous.get(pid)
        if before and (before[0] + 1 != pseq or before[1] != info["prev_hash"]):
            problems.append(f"line {n}: does not follow partition {pid} record {before[0]}")
        previous[pid] = (pseq, info["chain_hash"])
    return problems


def _open(
    marker: dict[str, Any] | None, trusted: TrustedKey, which: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The signed payload of the start or end marker, if a trusted key verifies it."""
    if marker is None:
        return None, None  # a start at the beginning of the trail
    key = trusted(marker["kid"])
    if key is None:
        return None, f"{which} {marker['kind']} {marker['id']}: key {marker['kid']} is not trusted"
    try:
        verified = jws.deserialize_compact(marker["jws"], key, algorithms=["RS256"])
    except Exception:
        return None, f"{which} {marker['kind']} {marker['id']}: signature does not verify"
    payload: dict[str, Any] = json.loads(verified.payload)
    return payload, None


def _run_problems(records: list[dict[str, Any]], start: Heads, end: Heads) -> list[str]:
    """Each partition's lines must run exactly from the start head to the end head."""
    runs: dict[int, list[dict[str, Any]]] = {}
    for info in records:
        runs.setdefault(info["partition"], []).append(info)
    problems = [
        f"partition {pid}: its records are not covered by the end marker"
        for pid in sorted(set(runs) - set(end))
    ]
    for pid, (last_pseq, last_hash) in sorted(end.items()):
        first_pseq, first_hash = start.get(pid, (0, GENESIS))
        lines = runs.get(pid, [])
        if last_pseq <= first_pseq:
            if lines or last_pseq < first_pseq:
                problems.append(f"partition {pid}: records outside the signed segment")
            continue
        if not lines:
            problems.append(f"partition {pid}: records {first_pseq + 1}..{last_pseq} are missing")
            continue
        head, tail = lines[0], lines[-1]
        if head["pseq"] != first_pseq + 1 or head["prev_hash"] != first_hash.hex():
            problems.append(
                f"partition {pid}: does not start after the start marker's head "
                f"({first_pseq}): records dropped at the start"
            )
        if tail["pseq"] != last_pseq or tail["chain_hash"] != last_hash.hex():
            problems.append(
                f"partition {pid}: does not end at the end marker's head ({last_pseq}): "
                "records dropped or altered at the end"
            )
    return problems


def _range_problems(
    chain: dict[str, Any], start: dict[str, Any] | None, end: dict[str, Any]
) -> list[str]:
    """The signed segment must cover the range the export claims."""
    problems = []
    if chain.get("to") is not None and end["created"] < chain["to"]:
        problems.append("the end marker was signed before the export's range ends")
    if start is not None and chain.get("from") is not None and start["created"] > chain["from"]:
        problems.append("the start marker was signed after the export's range begins")
    return problems
