"""`medisentinel load`: post Bundles and NDJSON files through the HTTP API (so every load is
authorized and audited like any other client), with a progress bar and a summary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from app.fhir import jsonio


@dataclass
class LoadSummary:
    files: int = 0
    bundles: int = 0
    entries_ok: int = 0
    entries_failed: int = 0
    errors: list[str] = field(default_factory=list)


def run_load(files: list[Path], *, url: str, token: str | None, batch_size: int = 100) -> int:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    summary = LoadSummary()
    started = time.perf_counter()
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=300) as client:
        with tqdm(total=sum(p.stat().st_size for p in files), unit="B", unit_scale=True) as bar:
            for path in files:
                summary.files += 1
                for bundle, size in _bundles_of(path, batch_size):
                    _post(client, bundle, summary, path)
                    bar.update(size)
    elapsed = time.perf_counter() - started
    rate = summary.entries_ok / elapsed if elapsed else 0.0
    print(
        f"loaded {summary.files} file(s), {summary.bundles} bundle(s): {summary.entries_ok} ok, "
        f"{summary.entries_failed} failed in {elapsed:.1f}s ({rate:.0f} resources/s)"
    )
    for error in summary.errors[:20]:
        print(f"  {error}")
    return 0 if summary.entries_failed == 0 else 1


def _bundles_of(path: Path, batch_size: int) -> Iterator[tuple[dict[str, Any], int]]:
    """Yield (bundle to post, bytes of input it covers) for a Bundle file or an NDJSON file."""
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        batch: list[dict[str, Any]] = []
        consumed = 0
        with path.open("rb") as handle:
            for line in handle:
                consumed += len(line)
                if line.strip():
                    batch.append(jsonio.loads(line))
                if len(batch) >= batch_size:
                    yield _as_transaction(batch), consumed
                    batch, consumed = [], 0
        if batch:
            yield _as_transaction(batch), consumed
        return
    document = jsonio.loads(path.read_bytes())
    size = path.stat().st_size
    if document.get("resourceType") == "Bundle" and document.get("type") in (
        "batch",
        "transaction",
    ):
        yield document, size
    elif document.get("resourceType") == "Bundle":
        yield (
            _as_transaction([e["resource"] for e in document.get("entry", []) if "resource" in e]),
            size,
        )
    else:
        yield _as_transaction([document]), size


def _as_transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """PUT resources that carry an id (idempotent re-loads), POST the others."""
    entries = []
    for resource in resources:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        request = (
            {"method": "PUT", "url": f"{rtype}/{rid}"} if rid else {"method": "POST", "url": rtype}
        )
        entries.append({"resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _post(client: httpx.Client, bundle: dict[str, Any], summary: LoadSummary, path: Path) -> None:
    summary.bundles += 1
    count = len(bundle.get("entry", []))
    try:
        response = client.post("", content=jsonio.dumps(bundle))
    except httpx.HTTPError as exc:
        summary.entries_failed += count
        summary.errors.append(f"{path}: {exc}")
        return
    if response.status_code >= 400:
        summary.entries_failed += count
        summary.errors.append(f"{path}: HTTP {response.status_code} {_diagnostics(response)}")
        return
    for entry in response.json().get("entry", []):
        status = str(entry.get("response", {}).get("status", ""))
        if status[:1] in ("2", "3"):
            summary.entries_ok += 1
        else:
            summary.entries_failed += 1
            summary.errors.append(f"{path}: entry {status}")


def _diagnostics(response: httpx.Response) -> str:
    try:
        issues = response.json().get("issue", [])
        return "; ".join(str(i.get("diagnostics", i.get("code"))) for i in issues)[:300]
    except ValueError:
        return response.text[:300]
