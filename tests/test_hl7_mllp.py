"""MLLP listener over real loopback sockets: framing, concurrency, failures, limits, TLS, fuzz.

Each test runs its own event loop (``asyncio.run``) under an overall deadline, so a hang fails
fast instead of waiting for pytest-timeout.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hl7_adapters.ack import build_ack, split_first
from hl7_adapters.er7 import Message, parse_message
from hl7_adapters.framing import FrameDecoder, frame
from hl7_adapters.mllp import MLLPClient, MLLPServer, parse_allowlist, send_message
from tests.test_hl7_er7 import mutated_cases

FIXTURES = Path(__file__).parent / "hl7_fixtures"
T = TypeVar("T")
Handler = Callable[[bytes, str], Awaitable[bytes]]


def run(coro: Coroutine[Any, Any, T], deadline: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, deadline))


def message(control_id: str, extra: str = "", msh15: str = "", msh16: str = "") -> bytes:
    return (
        f"MSH|^~\\&|SND|SFAC|RCV|RFAC|20240101120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1"
        f"|||{msh15}|{msh16}\rEVN|A01\rPID|1||{control_id}^^^SFAC^MR||Doe^Jo{extra}\r"
    ).encode()


async def ack_handler(raw: bytes, peer: str) -> bytes:
    """What the real handler will do, minus the database: parse, then acknowledge (the
    first ACK only: an enhanced-mode application ACK is the live server's business)."""
    ack = build_ack(parse_message(raw), "accept", force=True)
    assert ack is not None
    return split_first(ack)[0]


def msa(ack: bytes) -> tuple[str, str]:
    parsed = parse_message(ack)
    return parsed.get("MSA-1"), parsed.get("MSA-2")


def server(handler: Handler = ack_handler, **options: Any) -> MLLPServer:
    return MLLPServer(handler, "127.0.0.1", 0, **options)


async def closed_by_server(client: MLLPClient, timeout: float = 3.0) -> bool:
    try:
        await client.read_frame(timeout)
    except (ConnectionError, OSError):
        return True
    return False


# --- framing (no sockets) ---


def test_frame_decoder_rules() -> None:
    dec = FrameDecoder(max_frame_bytes=10)
    assert dec.feed(b"junk\x0bAB") == [] and dec.in_frame and dec.discarded == 4
    assert dec.feed(b"C\x1c") == [] and dec.in_frame
    out = dec.feed(b"\x0d\x0bX\x1c\x0dtail")
    assert [f.payload for f in out] == [b"ABC", b"X"] and dec.discarded == 8
    assert [f.payload for f in dec.feed(b"\x0bA\x1cB\x1c\x0d")] == [b"A\x1cB"]  # lone 0x1C is data
    assert [f.payload for f in dec.feed(b"\x0bA\x1c\x0bB\x1c\x0d")] == [b"A", b"B"]
    dec.feed(b"\x0bhalf")
    assert [f.payload for f in dec.feed(b"\x0bnew\x1c\x0d")] == [b"new"] and dec.dropped_frames == 1
    big = dec.feed(b"\x0b" + b"x" * 25 + b"\x1c\x0d")
    assert big[0].oversize and big[0].size == 25 and big[0].payload == b"x" * 10
    pieces = FrameDecoder()
    whole = frame(b"MSH|1") * 3
    got = [f.payload for i in range(len(whole)) for f in pieces.feed(whole[i : i + 1])]
    assert got == [b"MSH|1"] * 3


def test_a_trailing_end_block_without_CR_is_pending_until_the_reader_ends_it() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x0bMSH|1\x1c") == [] and dec.end_pending
    assert dec.end_frame().payload == b"MSH|1"
    assert not dec.in_frame and not dec.end_pending
    with pytest.raises(ValueError):
        dec.end_frame()
    assert dec.feed(b"\x0bA\x1c") == [] and dec.end_pending
    assert [f.payload for f in dec.feed(b"B\x1c\x0d")] == [b"A\x1cB"]  # data after all


# --- the listener ---


def test_concurrent_clients_each_get_their_own_acks_in_order() -> None:
    seen: dict[str, list[str]] = {}

    async def handler(raw: bytes, peer: str) -> bytes:
        msg = parse_message(raw)
        await asyncio.sleep(random.random() / 200)  # interleave connections
        seen.setdefault(peer, []).append(msg.control_id)
        return await ack_handler(raw, peer)

    async def one_client(port: int, n: int) -> list[tuple[str, str]]:
        async with MLLPClient("127.0.0.1", port) as client:
            return [msa(await client.send(message(f"C{n}-{i}"))) for i in range(10)]

    async def scenario() -> None:
        async with server(handler) as srv:
            results = await asyncio.gather(*(one_client(srv.port, n) for n in range(20)))
        for n, acks in enumerate(results):
            assert acks == [("AA", f"C{n}-{i}") for i in range(10)]
        assert len(seen) == 20
        for ids in seen.values():
            assert ids == sorted(ids, key=lambda c: int(c.rsplit("-", 1)[1]))

    run(scenario())


def test_pipelined_frames_are_handled_in_order() -> None:
    order: list[str] = []

    async def slow_first(raw: bytes, peer: str) -> bytes:
        msg = parse_message(raw)
        if msg.control_id == "P0":
            await asyncio.sleep(0.1)  # a later frame must still wait for this one
        order.append(msg.control_id)
        return await ack_handler(raw, peer)

    async def scenario() -> None:
        async with server(slow_first) as srv, MLLPClient("127.0.0.1", srv.port) as client:
            await client.send_raw(b"".join(frame(message(f"P{i}")) for i in range(5)))
            acks = [msa(await client.read_frame()) for _ in range(5)]
        assert acks == [("AA", f"P{i}") for i in range(5)]
        assert order == [f"P{i}" for i in range(5)]

    run(scenario())


def test_frame_split_byte_by_byte_and_garbage_between_frames() -> None:
    async def scenario() -> None:
        async with server() as srv, MLLPClient("127.0.0.1", srv.port) as client:
            for byte in frame(message("SPLIT")):
                await client.send_raw(bytes([byte]))
            assert msa(await client.read_frame()) == ("AA", "SPLIT")
            stream = (
                b"garbage before\r\n"
                + frame(message("G1"))
                + b"\x00\xff noise \x1c\x0d"
                + frame(message("G2"))
                + b"trailing"
            )
            await client.send_raw(stream)
            assert msa(await client.read_frame()) == ("AA", "G1")
            assert msa(await client.read_frame()) == ("AA", "G2")
            assert msa(await client.send(message("AFTER"))) == ("AA", "AFTER")

    run(scenario())


def test_garbage_frame_gets_a_reject_and_the_connection_lives() -> None:
    async def scenario() -> None:
        async with server() as srv, MLLPClient("127.0.0.1", srv.port) as client:
            nak = parse_message(await client.send(b"this is not HL7"))
            assert nak.get("MSA-1") == "AR" and nak.get("ERR-3.1") == "100"
            empty = parse_message(await client.send(b""))
            assert empty.get("MSA-1") == "AR"
            assert msa(await client.send(message("OK1"))) == ("AA", "OK1")

    run(scenario())


def test_handler_exception_becomes_a_nak() -> None:
    async def failing(raw: bytes, peer: str) -> bytes:
        if b"BOOM" in raw:
            raise RuntimeError("database is down")
        if b"WRONG" in raw:
            return "not bytes"  # type: ignore[return-value]
        return await ack_handler(raw, peer)

    async def scenario() -> None:
        async with server(failing) as srv, MLLPClient("127.0.0.1", srv.port) as client:
            nak = parse_message(await client.send(message("BOOM")))
            assert (nak.get("MSA-1"), nak.get("MSA-2")) == ("AE", "BOOM")
            assert nak.get("ERR-3.1") == "207" and "database" not in nak.get("ERR-8")
            enhanced = parse_message(await client.send(message("BOOM2", msh15="AL")))
            assert enhanced.get("MSA-1") == "CE" and enhanced.get("ERR-3.1") == "207"
            silent = parse_message(await client.send(message("BOOM3", msh15="NE", msh16="NE")))
            assert silent.get("MSA-1") == "CE"  # a server failure is always reported
            wrong = parse_message(await client.send(message("WRONG")))
            assert wrong.get("MSA-1") == "AE"
            assert msa(await client.send(message("FINE"))) == ("AA", "FINE")

    run(scenario())


def test_empty_reply_sends_nothing() -> None:
    async def honour_ne(raw: bytes, peer: str) -> bytes:
        return build_ack(parse_message(raw), "accept") or b""

    async def scenario() -> None:
        async with server(honour_ne) as srv, MLLPClient("127.0.0.1", srv.port) as client:
            await client.send_raw(frame(message("QUIET", msh15="NE", msh16="NE")))
            assert msa(await client.send(message("LOUD"))) == ("AA", "LOUD")

    run(scenario())


def test_oversize_frames() -> None:
    async def scenario() -> None:
        async with server(max_frame_bytes=2048) as srv:
            async with MLLPClient("127.0.0.1", srv.port) as client:
                nak = parse_message(await client.send(message("BIG", extra="x" * 10_000)))
                assert (nak.get("MSA-1"), nak.get("MSA-2")) == ("AR", "BIG")
                assert "exceeds" in nak.get("ERR-8")
                big_enhanced = message("BIG2", extra="y" * 5000, msh15="AL")
                assert parse_message(await client.send(big_enhanced)).get("MSA-1") == "CR"
                assert msa(await client.send(message("SMALL"))) == ("AA", "SMALL")
            async with (
                MLLPClient("127.0.0.1", srv.port) as bystander,
                MLLPClient("127.0.0.1", srv.port) as hog,
            ):
                await hog.send_raw(b"\x0b" + b"z" * 50_000)  # no MSH, never ends
                assert await closed_by_server(hog)
                assert msa(await bystander.send(message("STILL"))) == ("AA", "STILL")

    run(scenario())


def test_client_vanishing_mid_frame_harms_nobody() -> None:
    async def scenario() -> None:
        async with server() as srv:
            async with MLLPClient("127.0.0.1", srv.port) as steady:
                assert msa(await steady.send(message("S1"))) == ("AA", "S1")
                for _ in range(5):
                    quitter = MLLPClient("127.0.0.1", srv.port)
                    await quitter.connect()
                    await quitter.send_raw(frame(message("Q"))[:40])
                    await quitter.close()
                assert msa(await steady.send(message("S2"))) == ("AA", "S2")
                for _ in range(50):
                    if srv.connection_count == 1:
                        break
                    await asyncio.sleep(0.02)
                assert srv.connection_count == 1

    run(scenario())


def test_client_vanishing_while_its_message_is_handled() -> None:
    started = asyncio.Event

    async def scenario() -> None:
        begun = started()

        async def slow(raw: bytes, peer: str) -> bytes:
            begun.set()
            await asyncio.sleep(0.2)
            return await ack_handler(raw, peer)

        async with server(slow) as srv:
            gone = MLLPClient("127.0.0.1", srv.port)
            await gone.connect()
            await gone.send_raw(frame(message("GONE")))
            await begun.wait()
            await gone.close()
            await asyncio.sleep(0.3)  # the ACK write hits a closed socket
            assert msa(await send_message("127.0.0.1", srv.port, message("NEXT"))) == ("AA", "NEXT")

    run(scenario())


def test_allowlist() -> None:
    assert [str(n) for n in parse_allowlist(["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
        "fd00::/8",
    ]
    with pytest.raises(ValueError):
        parse_allowlist(["not-an-ip"])

    calls: list[str] = []

    async def counting(raw: bytes, peer: str) -> bytes:
        calls.append(peer)
        return await ack_handler(raw, peer)

    async def scenario() -> None:
        async with server(counting, allowlist=["10.0.0.0/8", "192.168.1.7"]) as refusing:
            async with MLLPClient("127.0.0.1", refusing.port) as refused:
                with pytest.raises((ConnectionError, OSError)):
                    await refused.send(message("NO"))
            assert calls == [] and refusing.connection_count == 0
        async with server(allowlist=["10.0.0.0/8", "127.0.0.0/8"]) as admitting:
            assert msa(await send_message("127.0.0.1", admitting.port, message("YES"))) == (
                "AA",
                "YES",
            )

    run(scenario())
    assert ipaddress.ip_address("127.0.0.1") in parse_allowlist(["127.0.0.0/8"])[0]


def test_idle_timeout_closes_only_idle_connections() -> None:
    async def scenario() -> None:
        async with server(idle_timeout=0.5) as srv:
            async with (
                MLLPClient("127.0.0.1", srv.port) as idle,
                MLLPClient("127.0.0.1", srv.port) as busy,
            ):
                for i in range(6):
                    assert msa(await busy.send(message(f"B{i}"))) == ("AA", f"B{i}")
                    await asyncio.sleep(0.1)
                assert await closed_by_server(idle, timeout=2.0)
                assert msa(await busy.send(message("B-last"))) == ("AA", "B-last")

    run(scenario())


def test_close_ends_open_connections() -> None:
    async def scenario() -> None:
        srv = server()
        await srv.start()
        client = MLLPClient("127.0.0.1", srv.port)
        await client.connect()
        assert msa(await client.send(message("C1"))) == ("AA", "C1")
        await srv.close()
        assert await closed_by_server(client, timeout=2.0)
        await client.close()
        with pytest.raises(RuntimeError):
            _ = srv.port

    run(scenario())


def test_close_lets_a_running_handler_finish_and_ack() -> None:
    async def scenario() -> None:
        begun = asyncio.Event()

        async def slow(raw: bytes, peer: str) -> bytes:
            begun.set()
            await asyncio.sleep(0.3)  # "committing"
            return await ack_handler(raw, peer)

        srv = server(slow)
        await srv.start()
        async with MLLPClient("127.0.0.1", srv.port) as client:
            await client.send_raw(frame(message("COMMIT")) + frame(message("NEVER")))
            await begun.wait()
            await srv.close(grace=3.0)
            assert msa(await client.read_frame()) == ("AA", "COMMIT")
            assert await closed_by_server(client)  # the second frame was not started

    run(scenario())


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        async with server(ssl_context=server_ctx) as srv:
            async with MLLPClient(
                "127.0.0.1", srv.port, ssl_context=client_ctx, server_hostname="localhost"
            ) as client:
                assert msa(await client.send(message("TLS1"))) == ("AA", "TLS1")
                assert msa(await client.send(message("TLS2"))) == ("AA", "TLS2")
            async with MLLPClient("127.0.0.1", srv.port, timeout=3.0) as plain:
                await plain.send_raw(frame(message("PLAIN")))  # not a TLS handshake
                assert await closed_by_server(plain)

    run(scenario())


# --- mutation fuzz over the wire ---


def test_mutation_fuzz_every_frame_gets_an_ack_or_nak() -> None:
    cases = [
        bytes(c).replace(b"\x0b", b"?").replace(b"\x1c", b"?")  # MLLP payloads cannot hold these
        for c in mutated_cases(240, seed=7)
    ]
    answers: list[Message] = []

    async def connection(port: int, chunk: list[bytes], rng: random.Random) -> None:
        async with MLLPClient("127.0.0.1", port) as client:
            stream = b"".join(frame(c) for c in chunk)
            pos = 0
            while pos < len(stream):  # random write sizes: frames split and joined
                step = rng.randint(1, 4096)
                await client.send_raw(stream[pos : pos + step])
                pos += step
            for _ in chunk:
                reply = parse_message(await client.read_frame())
                assert reply.get("MSA-1") in {"AA", "AE", "AR", "CA", "CE", "CR"}
                answers.append(reply)

    async def scenario() -> None:
        async with server() as srv:
            rng = random.Random(11)
            await asyncio.gather(*(connection(srv.port, cases[i::4], rng) for i in range(4)))
            assert srv.connection_count <= 4

    run(scenario(), deadline=25.0)
    assert len(answers) == len(cases)
    assert sum(a.get("MSA-1") in {"AA", "CA"} for a in answers) > len(cases) // 2
