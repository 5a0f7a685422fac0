#!/usr/bin/env python3
"""Search at scale (a benchmark, not a test): load a synthetic population through the normal
write path, then time the searches our targets are stated in.

    python bench/search_scale.py --url http://127.0.0.1:8080/fhir --patients 10000 \
        --observations 1000000              # the stated size (PostgreSQL)
    python bench/search_scale.py --url ... --patients 1000 --observations 100000   # SQLite
    python bench/search_scale.py --url ... --skip-load --patients 1000 ...   # time only
    ... --skip-load --repeat 0 --throughput 20   # only fhirload's search, 16 raw clients

Data: Patients (with an MRN identifier), one Device each, and Observations spread over two
years, one series per patient (observations/patients of them): a vital sign (heart rate,
respiratory rate, temperature, SpO2, blood pressure panel) or a lab (glucose, potassium,
sodium, haemoglobin); loaded as 100-entry transaction Bundles by --concurrency clients.
Patient and Device ids are deterministic (PUT); Observations are POSTed.

Queries (each run --repeat times with random patients; p50/p95/p99 in ms are printed):
  patient+code            Observation?subject=Patient/p&code=LOINC
  patient+code+date       ... &date=ge2025-01-01&date=lt2025-07-01
  latest10                ... &_sort=-date&_count=10
  identifier              Patient?identifier=urn:mrn|MRN
  chained                 Observation?subject:Patient.identifier=urn:mrn|MRN&code=LOINC
  revinclude              Patient?_id=p&_revinclude=Observation:subject&_count=50
Traffic goes only to the given URL (use loopback). It stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

VITALS = [
    ("8867-4", "Heart rate", "/min", 50, 120),
    ("9279-1", "Respiratory rate", "/min", 10, 30),
    ("8310-5", "Body temperature", "Cel", 36, 40),
    ("59408-5", "Oxygen saturation", "%", 88, 100),
]
LABS = [
    ("2345-7", "Glucose", "mg/dL", 60, 250),
    ("2823-3", "Potassium", "mmol/L", 3, 6),
    ("2951-2", "Sodium", "mmol/L", 130, 150),
    ("718-7", "Hemoglobin", "g/dL", 8, 18),
]
CODES = [c[0] for c in VITALS + LABS] + ["85354-9"]
START = datetime(2024, 11, 1, tzinfo=UTC)
SPAN_SECONDS = 2 * 365 * 86400


def patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "identifier": [{"system": "urn:mrn", "value": f"MRN{n:07d}"}],
        "name": [{"family": f"Family{n % 997}", "given": [f"Given{n % 101}"]}],
        "gender": ("female", "male", "other", "unknown")[n % 4],
        "birthDate": f"{1930 + n % 90}-{1 + n % 12:02d}-{1 + n % 28:02d}",
    }


def device(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": f"d{n}",
        "status": "active",
        "patient": {"reference": f"Patient/p{n}"},
        "type": {"coding": [{"system": "http://snomed.info/sct", "code": "706767009"}]},
    }


def observation(n: int, patients: int, rng: random.Random) -> dict[str, Any]:
    pid = n % patients
    when = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "subject": {"reference": f"Patient/p{pid}"},
        "device": {"reference": f"Device/d{pid}"},
        "effectiveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if n % 10 == 9:  # a blood pressure panel now and then
        obs["category"] = [_category("vital-signs")]
        obs["code"] = _code("85354-9", "Blood pressure panel")
        obs["component"] = [
            {
                "code": _code("8480-6", "Systolic"),
                "valueQuantity": _qty(rng.randint(90, 180), "mm[Hg]"),
            },
            {
                "code": _code("8462-4", "Diastolic"),
                "valueQuantity": _qty(rng.randint(50, 110), "mm[Hg]"),
            },
        ]
        return obs
    code, text, unit, low, high = (VITALS if n % 2 else LABS)[n % 4]
    obs["category"] = [_category("vital-signs" if n % 2 else "laboratory")]
    obs["code"] = _code(code, text)
    obs["valueQuantity"] = _qty(round(rng.uniform(low, high), 1), unit)
    return obs


def _category(code: str) -> dict[str, Any]:
    system = "http://terminology.hl7.org/CodeSystem/observation-category"
    return {"coding": [{"system": system, "code": code}]}


def _code(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://loinc.org", "code": code, "display": text}], "text": text}


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def bundles(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    rng = random.Random(7)
    resources: Iterator[dict[str, Any]] = iter(())
    generators = [
        (patient(n) for n in range(args.patients)),
        (device(n) for n in range(args.patients)),
        (observation(n, args.patients, rng) for n in range(args.observations)),
    ]
    for generator in generators:
        resources = generator
        batch: list[dict[str, Any]] = []
        for res in resources:
            batch.append(res)
            if len(batch) == 100:
                yield _transaction(batch)
                batch = []
        if batch:
            yield _transaction(batch)


def _transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Patients and Devices keep their ids (PUT: the queries name them); Observations are
    POSTed, the common import path, and get server-assigned ids."""
    entries = []
    for r in resources:
        if r["resourceType"] == "Observation":
            r = {k: v for k, v in r.items() if k != "id"}
            entries.append({"resource": r, "request": {"method": "POST", "url": "Observation"}})
        else:
            url = f"{r['resourceType']}/{r['id']}"
            entries.append({"resource": r, "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def load(client: httpx.AsyncClient, args: argparse.Namespace) -> None:
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=args.concurrency * 2)
    total = args.patients * 2 + args.observations
    done = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while (bundle := await queue.get()) is not None:
            body = json.dumps(bundle)
            headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
            response = await client.post("", content=body, headers=headers)
            response.raise_for_status()
            done += len(bundle["entry"])
            if done % 20000 < 100:
                rate = done / (time.perf_counter() - started)
                print(
                    f"  loaded {done}/{total} ({rate:.0f} resources/s)", file=sys.stderr, flush=True
                )

    workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    for bundle in bundles(args):
        await queue.put(bundle)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    print(f"load: {total} resources in {elapsed:.0f}s ({total / elapsed:.0f} resources/s)")


def series_code(n: int) -> str:
    """The code of observation n; with patients a multiple of 10 it depends only on the
    patient (n mod patients), so each patient has one series of ~observations/patients."""
    if n % 10 == 9:
        return "85354-9"
    return (VITALS if n % 2 else LABS)[n % 4][0]


def queries(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    p = rng.randrange(args.patients)
    code = series_code(p)  # the patient's own series: realistic hit counts
    mrn = f"urn:mrn|MRN{p:07d}"
    subject = {"subject": f"Patient/p{p}", "code": code}
    return {
        "patient+code": ("Observation", subject),
        "patient+code+date": (
            "Observation",
            [*subject.items(), ("date", "ge2025-01-01"), ("date", "lt2025-07-01")],
        ),
        "latest10": ("Observation", {**subject, "_sort": "-date", "_count": "10"}),
        "identifier": ("Patient", {"identifier": mrn}),
        "chained": ("Observation", {"subject:Patient.identifier": mrn, "code": code}),
        "revinclude": (
            "Patient",
            {"_id": f"p{p}", "_revinclude": "Observation:subject", "_count": "50"},
        ),
    }


async def time_queries(
    client: httpx.AsyncClient, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    latencies: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for name, (path, params) in queries(args, rng).items():
            started = time.perf_counter()
            response = await client.get(path, params=params)
            response.raise_for_status()
            latencies.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    report = {}
    for name, values in latencies.items():
        report[name] = {**_percentiles(values), "n": len(values)}
        p50, p95, p99 = report[name]["p50"], report[name]["p95"], report[name]["p99"]
        print(f"{name:18s} p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f} ms  (n={len(values)})")
    return report


async def search_throughput(args: argparse.Namespace) -> dict[str, float]:
    """fhirload's search phase at this data size: `subject + code, _count=10` (the patient's
    own series) from --search-clients clients for --throughput seconds, with the benchmarks'
    low-overhead client (httpx alone tops out near 650-730 requests/s on a 2-core box)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import load_clients  # a sibling script: the raw HTTP client

    if args.token:
        load_clients.HEADERS["Authorization"] = f"Bearer {args.token}"
    url = urlsplit(args.url)
    client = load_clients.RawClient(
        url.hostname or "127.0.0.1", url.port or 80, url.path, args.search_clients
    )
    rng = random.Random(12)
    latencies: list[float] = []
    deadline = time.perf_counter() + args.throughput

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            p = rng.randrange(args.patients)
            path = f"/Observation?subject=Patient/p{p}&code={series_code(p)}&_count=10"
            started = time.perf_counter()
            status, _ = await client.request("GET", path)
            if status != 200:
                raise RuntimeError(f"search answered {status}")
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(args.search_clients)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    result = {"searches_s": len(latencies) / elapsed, **_percentiles(latencies)}
    print(
        f"search throughput ({args.search_clients} clients, {elapsed:.0f}s): "
        f"{result['searches_s']:.1f} searches/s  p50 {result['p50']:.1f}  "
        f"p95 {result['p95']:.1f}  p99 {result['p99']:.1f} ms"
    )
    return result


def _percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 of `values` (sorted in place)."""
    values.sort()
    return {f"p{round(q * 100)}": _quantile(values, q) for q in (0.5, 0.95, 0.99)}


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", help="bearer token (medisentinel token --client ...)")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--throughput", type=float, default=0, metavar="SECONDS",
        help="then run fhirload's search (subject + code, _count=10) this long",
    )  # fmt: skip
    parser.add_argument("--search-clients", type=int, default=16)
    args = parser.parse_args()
    sizes = f"{args.patients} Patients, {args.patients} Devices, {args.observations} Observations"
    print(f"data size: {sizes}")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    async with httpx.AsyncClient(
        base_url=args.url.rstrip("/"), headers=headers, timeout=600
    ) as client:
        if not args.skip_load:
            await load(client, args)
        report: dict[str, Any] = await time_queries(client, args)
    if args.throughput > 0:
        report["throughput"] = await search_throughput(args)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
