"""`medisentinel load`: post Bundles and NDJSON files through the HTTP API (so every load is
authorized and audited like any other client), with a progress bar and a summary."""

from __future__ import annotations

import sys
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
    # Operator mistakes are refused before anything is posted, so a typo in the last of
    # many file names does not leave a half-done load behind.
    unreadable = [f"{path}: not a readable file" for path in files if not path.is_file()]
    if unreadable:
        for problem in unreadable:
            print(f"medisentinel load: {problem}", file=sys.stderr)
        return 2
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    summary = LoadSummary()
    started = time.perf_counter()
    try:
        _load_all(files, url, headers, batch_size, summary)
    except NotAuthorized as exc:
        # Every later request would be refused the same way: stop, say so once.
        summary.errors.insert(0, f"stopped: {exc} (check --token and its scopes)")
    elapsed = time.perf_counter() - started
    rate = summary.entries_ok / elapsed if elapsed else 0.0
    print(
        f"loaded {summary.files} file(s), {summary.bundles} bundle(s): {summary.entries_ok} ok, "
        f"{summary.entries_failed} failed in {elapsed:.1f}s ({rate:.0f} resources/s)"
    )
    for error in summary.errors[:20]:
        print(f"  {error}")
    return 0 if summary.entries_failed == 0 else 1


class NotAuthorized(Exception):
    """The server refused the token (401) or its scopes (403)."""


def _load_all(
    files: list[Path], url: str, headers: dict[str, str], batch_size: int, summary: LoadSummary
) -> None:
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=300) as client:
        with tqdm(total=sum(p.stat().st_size for p in files), unit="B", unit_scale=True) as bar:
            for path in files:
                summary.files += 1
                for bundle, size, lines in _bundles_of(path, batch_size, summary):
                    if bundle is not None:
                        _post(client, bundle, summary, path, lines=lines)
                    bar.update(size)


def _is_ndjson(path: Path) -> bool:
    return path.suffix.lower() in (".ndjson", ".jsonl")


# (bundle to post or None, bytes of input it covers, NDJSON line number of each entry or None)
Chunk = tuple[dict[str, Any] | None, int, list[int] | None]


def _bundles_of(path: Path, batch_size: int, summary: LoadSummary) -> Iterator[Chunk]:
    """The chunks of a Bundle file or an NDJSON file; input that cannot be parsed is counted
    as failed in the summary (bundle None)."""
    if _is_ndjson(path):
        yield from _ndjson_bundles(path, batch_size, summary)
        return
    size = path.stat().st_size
    document = _parse(path.read_bytes(), str(path), summary)
    if document is None:
        yield None, size, None
    elif document.get("resourceType") == "Bundle" and document.get("type") in (
        "batch",
        "transaction",
    ):
        yield document, size, None
    elif document.get("resourceType") == "Bundle":
        yield _collection_as_transaction(document.get("entry") or []), size, None
    else:
        yield _as_transaction([document]), size, None


def _ndjson_bundles(path: Path, batch_size: int, summary: LoadSummary) -> Iterator[Chunk]:
    """One transaction per batch_size lines; a bad line is reported and skipped, the rest
    of the file is still loaded (NDJSON lines are independent resources)."""
    batch: list[dict[str, Any]] = []
    lines: list[int] = []
    consumed = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            consumed += len(line)
            if line.strip():
                resource = _parse(line, f"{path}:{number}", summary)
                if resource is not None:
                    batch.append(resource)
                    lines.append(number)
            if len(batch) >= batch_size:
                yield _as_transaction(batch), consumed, lines
                batch, lines, consumed = [], [], 0
    yield (_as_transaction(batch) if batch else None), consumed, lines


def _parse(data: bytes, where: str, summary: LoadSummary) -> dict[str, Any] | None:
    """The JSON object in data, or None (counted as one failed entry) if there is none."""
    try:
        value = jsonio.loads(data)
    except jsonio.FhirJsonError as exc:
        problem = str(exc)
    else:
        if isinstance(value, dict):
            return value
        problem = "not a JSON object (a FHIR resource)"
    summary.entries_failed += 1
    summary.errors.append(f"{where}: {problem}")
    return None


def _collection_as_transaction(entries: list[Any]) -> dict[str, Any]:
    """A collection (document, message, ...) Bundle's resources as one transaction, each with
    its fullUrl: references between them (urn:uuid:...) are resolved only through it."""
    resources = [e for e in entries if isinstance(e, dict) and "resource" in e]
    return _as_transaction(
        [e["resource"] for e in resources], [e.get("fullUrl") for e in resources]
    )


def _as_transaction(
    resources: list[dict[str, Any]], full_urls: list[str | None] | None = None
) -> dict[str, Any]:
    """PUT resources that carry an id (idempotent re-loads), POST the others."""
    entries = []
    for index, resource in enumerate(resources):
        rtype, rid = resource.get("resourceType"), resource.get("id")
        request = (
            {"method": "PUT", "url": f"{rtype}/{rid}"} if rid else {"method": "POST", "url": rtype}
        )
        entry: dict[str, Any] = {"resource": resource, "request": request}
        if full_urls and full_urls[index]:
            entry["fullUrl"] = full_urls[index]
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# The server refused the resources themselves (not the token, not the server's health).
REFUSED_CONTENT = frozenset({400, 404, 409, 412, 422})


def _post(
    client: httpx.Client,
    bundle: dict[str, Any],
    summary: LoadSummary,
    path: Path,
    *,
    lines: list[int] | None = None,
) -> None:
    """Post one bundle and count its entries. NDJSON lines (`lines`: their numbers) are
    independent resources, so a transaction of them that is refused is posted again as a
    batch: the bad lines fail on their own and the good ones are stored (a transaction is
    kept first: it is 2-3x faster). Failed entries are named by line number where known."""
    summary.bundles += 1
    count = len(bundle.get("entry", []))
    try:
        response = client.post("", content=jsonio.dumps(bundle))
    except httpx.HTTPError as exc:
        summary.entries_failed += count
        summary.errors.append(f"{path}: {exc}")
        return
    refused = response.status_code in REFUSED_CONTENT
    if refused and lines is not None and bundle["type"] == "transaction":
        summary.bundles -= 1  # the same bundle, posted again
        _post(client, {**bundle, "type": "batch"}, summary, path, lines=lines)
        return
    if response.status_code >= 400:
        summary.entries_failed += count
        problem = f"HTTP {response.status_code} {_diagnostics(response)}"
        if response.status_code in (401, 403):
            raise NotAuthorized(problem)
        summary.errors.append(f"{path}: {problem}")
        return
    for index, entry in enumerate(response.json().get("entry", [])):
        answer = entry.get("response", {})
        status = str(answer.get("status", ""))
        if status[:1] in ("2", "3"):
            summary.entries_ok += 1
        else:
            # A batch answers per entry: say which one failed and why, not just the status.
            summary.entries_failed += 1
            reason = _issues_text(answer.get("outcome") or {})
            where = f"{path}:{lines[index]}" if lines else f"{path}: entry {index}"
            summary.errors.append(f"{where}: {status} {reason}".rstrip())


def _diagnostics(response: httpx.Response) -> str:
    try:
        return _issues_text(response.json())
    except ValueError:
        return response.text[:300]


def _issues_text(outcome: dict[str, Any]) -> str:
    issues = outcome.get("issue", [])
    return "; ".join(str(i.get("diagnostics", i.get("code"))) for i in issues)[:300]
