"""Mutation fuzz of the FHIR XML path over real HTTP (the XML sibling of test_rest_fuzz.py).

Each case (tests/xml_mutations.py) is a valid FHIR XML request (create, update, batch and
transaction Bundles, $validate Parameters; rendered by the server's own writer) with XML-level
or byte-level changes, hostile XML (DTDs, external entities, billion laughs, wrong encodings,
BOMs), or a JSON request whose answer is asked for in XML. Every answer must be below 500,
every error an OperationOutcome, in XML when XML was asked for, and every XML answer one the
server reads back; external entities must never be fetched (a canary HTTP server counts any
request) nor local files quoted. `MEDISENTINEL_FUZZ_CASES` / `MEDISENTINEL_FUZZ_SEED` run
more or other cases locally.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.rest_mutations import JSON, make_targets, send
from tests.xml_mutations import XmlCaseMaker, xml_answer_problem

CASES = int(os.environ.get("MEDISENTINEL_FUZZ_CASES", "300"))
SEEDS = [int(s) for s in os.environ.get("MEDISENTINEL_FUZZ_SEED", "20261123").split(",")]


class _Canary(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'<!ENTITY e "fetched">')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def canary() -> Iterator[tuple[str, list[str]]]:
    """A URL external entities point at, and the requests it received (must stay none)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Canary.hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def client(base_url: str, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"Accept": JSON, **auth_headers}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def targets(client: httpx.Client) -> tuple[str, str]:
    return make_targets(client)


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_xml_requests_get_clear_answers(
    client: httpx.Client,
    targets: tuple[str, str],
    canary: tuple[str, list[str]],
    seed: int,
) -> None:
    url, fetched = canary
    maker = XmlCaseMaker(random.Random(seed), *targets, canary=url)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for number in range(CASES):
        case = maker.case()
        try:
            response = send(client, case)
        except httpx.TransportError as exc:  # a dropped connection is a crash too
            failures.append(f"seed {seed} case {number}: {case.describe()}\n  -> {exc!r}")
            continue
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        problem = xml_answer_problem(response, case)
        if b"root:x:0:0" in response.content:
            problem = "a local file's content was returned"
        if problem:
            failures.append(f"seed {seed} case {number}: {case.describe()}\n  -> {problem}")
    assert not failures, f"{len(failures)} of {CASES} cases:\n" + "\n".join(failures[:15])
    assert not fetched, f"external entities or DTDs were fetched: {fetched}"
    # The fuzz must reach both sides: requests refused and requests that did their work.
    assert sum(n for s, n in statuses.items() if s < 300) > CASES // 10, statuses
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > CASES // 10, statuses
    alive = client.get(f"/Patient/{targets[0]}", params={"_format": "xml"})
    assert alive.status_code == 200, alive.text
