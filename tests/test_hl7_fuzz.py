"""Mutation fuzz of the whole pipeline: random byte and field mutations of the public samples
(../shared/hl7v2, read in place) sent over MLLP to the running server, which parses, maps,
applies and stores each one. Every framed message must be answered with an ACK or NAK (unless
it validly asked for none), the connection must survive, and nothing may crash: no handler
failure, no unhandled exception behind a 207.

After each fuzzed frame a well-formed sentinel message follows on the same connection: its
ACK proves the connection is alive and tells a silent answer apart from a lost one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

import httpx
import pytest
from sqlalchemy import select

from hl7_adapters.ack import Outcome, ack_code
from hl7_adapters.er7 import Batch, Hl7ParseError, parse_batch
from hl7_adapters.framing import frame
from hl7_adapters.mllp import MLLPClient
from hl7_adapters.tables import hl7_message
from tests.conftest import LiveServer
from tests.test_hl7_er7 import CORPUS, corpus_files, mutate
from tests.test_hl7_ingest import unique_id

CODES = {"AA", "AE", "AR", "CA", "CE", "CR"}
# More or other cases locally: MEDISENTINEL_FUZZ_CASES=2000 MEDISENTINEL_FUZZ_SEED=7
CASES = int(os.environ.get("MEDISENTINEL_FUZZ_CASES", "160"))
SEED = int(os.environ.get("MEDISENTINEL_FUZZ_SEED", "20241121").split(",")[0])
CONNECTIONS = 4

pytestmark = pytest.mark.skipif(
    not corpus_files(), reason=f"shared HL7 v2 corpus not found at {CORPUS} (../shared absent)"
)


def sentinel(control: str) -> bytes:
    return (
        f"MSH|^~\\&|FUZZ|FUZZ|MEDI|MEDI|20240101000000+0000||ADT^A01^ADT_A01|{control}|P|2.1\r"
        "EVN|A01\rPID|1||1^^^FUZZ^MR\r"  # version 2.1: refused (AR) before any work
    ).encode()


def must_answer(payload: bytes) -> bool:
    """Whether the server owes an answer whatever the outcome: unreadable input and batches
    always; otherwise when one of the messages wants an acknowledgment in every outcome
    (MSH-15/16 may ask for none, or for one only on errors)."""
    try:
        batch = parse_batch(payload)
    except Hl7ParseError:
        return True
    if batch.is_batch or not batch.messages:
        return True
    outcomes: tuple[Outcome, ...] = ("accept", "error", "reject")
    return any(all(ack_code(m, o) is not None for o in outcomes) for m in batch.messages)


async def exchange(client: MLLPClient, payload: bytes, rng: random.Random) -> list[Batch]:
    """Send `payload` then a sentinel, in random write sizes (frames split and joined); the
    frames answered before the sentinel's ACK (an ACK, or a batch of them), each checked."""
    marker = unique_id("S")
    stream = frame(payload) + frame(sentinel(marker))
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 2048)
        await client.send_raw(stream[pos : pos + step])
        pos += step
    replies: list[Batch] = []
    while True:
        reply = parse_batch(await client.read_frame())
        for ack in reply.messages:
            assert ack.get("MSA-1") in CODES, ack.normalized_text()
        if not reply.is_batch and reply.messages[0].get("MSA-2") == marker:
            return replies
        replies.append(reply)


def cases(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in corpus_files()]
    found = []
    for _ in range(CASES):
        data = mutate(rng.choice(seeds), rng)
        found.append(data.replace(b"\x0b", b"?").replace(b"\x1c", b"?"))  # MLLP cannot carry
    return found


def test_every_mutated_message_is_answered_and_nothing_crashes(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = live_server.app.state.hl7.mllp_port
    assert port, "the live server's MLLP listener is not running"
    payloads = cases(seed=SEED)
    answered = silent = 0

    async def connection(chunk: list[bytes], rng: random.Random) -> None:
        nonlocal answered, silent
        async with MLLPClient("127.0.0.1", port, timeout=60) as client:
            for payload in chunk:
                replies = await exchange(client, payload, rng)
                if payload_is_batch(payload):
                    assert len(replies) == 1  # one frame: the batch of ACKs
                else:  # enhanced mode: a commit ACK frame, then an application ACK frame
                    assert len(replies) <= 2
                    assert_commit_then_application(replies)
                if must_answer(payload):
                    assert replies, payload[:200]
                answered += bool(replies)
                silent += not replies

    async def scenario() -> None:
        rng = random.Random(3)
        chunks = [payloads[i::CONNECTIONS] for i in range(CONNECTIONS)]
        await asyncio.gather(*(connection(chunk, rng) for chunk in chunks))

    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(scenario(), 240 + CASES * 0.5))
    assert answered + silent == len(payloads) and answered > len(payloads) * 0.9
    crashes = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("hl7_adapters") and r.levelno >= logging.ERROR
    ]
    assert crashes == []


def assert_commit_then_application(replies: list[Batch]) -> None:
    """Two frames for one message: the commit ACK (CA) first, then the application ACK."""
    if len(replies) == 2:
        first, second = (r.messages[0].get("MSA-1") for r in replies)
        assert first == "CA" and second in ("AA", "AE", "AR"), (first, second)


def payload_is_batch(payload: bytes) -> bool:
    try:
        return parse_batch(payload).is_batch
    except Hl7ParseError:
        return False


def test_every_sample_is_answered_and_what_is_accepted_is_readable(
    live_server: LiveServer, client: httpx.Client
) -> None:
    """The samples as they are: each gets an ACK over MLLP (a batch, a batch of ACKs); the
    types we do not map are refused (AR/CR), as are samples marked training or debugging
    (MSH-11 T/D); the others applied or refused for their content (never AR); every accepted
    message's Provenance names resources the FHIR API returns."""
    port = live_server.app.state.hl7.mllp_port
    engine = live_server.app.state.engine

    async def scenario() -> list[tuple[bytes, list[Batch]]]:
        rng = random.Random(1)
        async with MLLPClient("127.0.0.1", port, timeout=60) as mllp:
            samples = [p.read_bytes() for p in corpus_files()]
            return [(raw, await exchange(mllp, raw, rng)) for raw in samples]

    for raw, replies in asyncio.run(asyncio.wait_for(scenario(), 120)):
        batch = parse_batch(raw)
        if batch.is_batch or must_answer(raw):
            assert 1 <= len(replies) <= (1 if batch.is_batch else 2)
        else:
            assert len(replies) <= 2
        assert_commit_then_application(replies)
        # the last ACK of a message: its application ACK when enhanced mode sent one
        answers = {a.get("MSA-2"): a for reply in replies for a in reply.messages}
        for msg in batch.messages:
            ack = answers.get(msg.control_id)
            if ack is None:  # only a message that asked for none (samples 09, 13, 14: NE/NE)
                assert not must_answer(msg.raw)
                continue
            code = ack.get("MSA-1")
            if msg.message_code not in ("ADT", "ORU") or msg.processing_id in ("T", "D"):
                assert code in ("AR", "CR")  # (training/debugging samples: AR 202)
            else:
                assert code in ("AA", "CA", "AE", "CE"), ack.normalized_text()
    with engine.connect() as conn:
        accepted = conn.execute(
            select(hl7_message.c.provenance_id).where(
                hl7_message.c.sending_application != "FUZZ",
                hl7_message.c.status == "accepted",
                hl7_message.c.provenance_id.is_not(None),
            )
        ).scalars()
        provenance_ids = list(accepted)
    assert provenance_ids
    for provenance_id in provenance_ids[:40]:
        provenance = client.get(f"/Provenance/{provenance_id}").json()
        for target in provenance["target"]:
            assert client.get(target["reference"]).status_code == 200, target
