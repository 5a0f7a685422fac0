"""HL7 v2 over MLLP into the running server: real sockets, the real mapping, the real store.

The live test server starts the MLLP listener on a free port (tests/conftest.py); these tests
talk to it as a hospital system would and check the outcome through the FHIR API and the
message store.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, text

from hl7_adapters.feeds import Hl7Feeds
from hl7_adapters.framing import frame
from hl7_adapters.locks import key_number
from hl7_adapters.mapping.identifiers import identifier_match
from hl7_adapters.mllp import MLLPClient
from tests.conftest import TEST_MASTER_KEY, LiveServer
from tests.helpers import server_env
from tests.test_hl7_ingest import (
    err_fields,
    failing_inserts,
    hl7_audit_events,
    msa,
    provenances_of,
    rows_for,
    search,
    unique_id,
)
from tests.test_hl7_mllp import _self_signed

T = TypeVar("T")
TZ = "+0000"


def run(coro: Coroutine[Any, Any, T], deadline: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, deadline))


def a01(
    control: str,
    mrn: str,
    *,
    trigger: str = "A01",
    when: str = "20240101120000",
    family: str = "Doe",
    visit: str = "",
    msh15: str = "",
    msh16: str = "",
) -> bytes:
    return (
        f"MSH|^~\\&|ADTSYS|HOSP|MEDI|MEDI|{when}{TZ}||ADT^{trigger}^ADT_A01|{control}|P|2.5.1"
        f"|||{msh15}|{msh16}\r"
        f"EVN|{trigger}|{when}{TZ}\r"
        f"PID|1||{mrn}^^^HOSP^MR||{family}^Ada||19700101|F\r"
        f"PV1|1|I|WARD^1^1||||||||||||||||{visit}\r"
    ).encode()


def a40(control: str, survivor: str, retired: str) -> bytes:
    return (
        f"MSH|^~\\&|ADTSYS|HOSP|MEDI|MEDI|20240301120000{TZ}||ADT^A40^ADT_A39|{control}|P|2.5.1\r"
        f"EVN|A40|20240301120000{TZ}\r"
        f"PID|1||{survivor}^^^HOSP^MR||Kept^Ada\r"
        f"MRG|{retired}^^^HOSP^MR\r"
    ).encode()


def oru(control: str, mrn: str, order: str, *, code: str = "2093-3", obx3: str = "") -> bytes:
    obx3 = obx3 or f"{code}^Cholesterol^LN"
    return (
        f"MSH|^~\\&|LABSYS|LAB|MEDI|MEDI|20240102120000{TZ}||ORU^R01^ORU_R01|{control}|P|2.5.1\r"
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Ada\r"
        f"OBR|1||{order}^LAB|24331-1^Lipid panel^LN|||20240102110000{TZ}\r"
        f"OBX|1|NM|{obx3}||182|mg/dL|<200||||F|||20240102110000{TZ}\r"
    ).encode()


@pytest.fixture
def port(live_server: LiveServer) -> int:
    found = live_server.app.state.hl7.mllp_port
    assert found, "the live server's MLLP listener is not running"
    return int(found)


@pytest.fixture
def engine(live_server: LiveServer) -> Engine:
    return live_server.app.state.engine  # type: ignore[no-any-return]


async def send_all(port: int, messages: list[bytes]) -> list[bytes]:
    async with MLLPClient("127.0.0.1", port, timeout=30) as client:
        return [await client.send(m) for m in messages]


def send(port: int, *messages: bytes) -> list[bytes]:
    return run(send_all(port, list(messages)))


def patients(client: httpx.Client, mrn: str) -> list[dict[str, Any]]:
    return search(client, "Patient", identifier=mrn)


# ---------------------------------------------------------------- commit, then ACK


def test_the_aa_arrives_after_the_commit(port: int, client: httpx.Client, engine: Engine) -> None:
    async def scenario() -> None:
        async with MLLPClient("127.0.0.1", port) as mllp:
            for _ in range(5):
                mrn, control, visit = unique_id("P"), unique_id(), unique_id("V")
                ack = await mllp.send(a01(control, mrn, visit=visit))
                assert msa(ack) == ("AA", control)
                # the moment the ACK is here, everything is readable (no wait, no retry)
                [found] = patients(client, mrn)
                assert found["name"][0]["family"] == "Doe"
                assert search(client, "Encounter", subject=f"Patient/{found['id']}")
                [row] = rows_for(engine, control)
                assert row.status == "accepted" and row.ack == ack and row.channel == "mllp"
                assert provenances_of(client, row.id)
                assert hl7_audit_events(engine, row.id)

    run(scenario())


def test_a_resent_message_gets_the_same_ack_and_changes_nothing(
    port: int, client: httpx.Client, engine: Engine
) -> None:
    mrn, control = unique_id("P"), unique_id()
    message = a01(control, mrn, visit=unique_id("V"))
    first, again = send(port, message, message)
    assert again == first and msa(first)[0] == "AA"
    [found] = patients(client, mrn)
    assert found["meta"]["versionId"] == "1"
    assert [r.status for r in rows_for(engine, control)] == ["accepted", "duplicate"]


# ---------------------------------------------------------------- the connection


def test_concurrent_clients_one_new_patient_is_created_once(
    port: int, client: httpx.Client
) -> None:
    mrn = unique_id("SAME")
    others = [unique_id("P") for _ in range(6)]

    async def scenario() -> list[list[bytes]]:
        same = [send_all(port, [a01(unique_id(), mrn, visit=unique_id("V"))]) for _ in range(6)]
        own = [
            send_all(port, [oru(unique_id(), m, unique_id("O")), a01(unique_id(), m)])
            for m in others
        ]
        return await asyncio.gather(*same, *own)

    for acks in run(scenario()):
        assert all(msa(a)[0] == "AA" for a in acks), [err_fields(a) for a in acks]
    assert len(patients(client, mrn)) == 1  # six connections, one patient: serialized
    for m in others:
        [found] = patients(client, m)
        assert len(search(client, "Observation", subject=f"Patient/{found['id']}")) == 1


def test_concurrent_admissions_to_one_new_ward_create_each_location_once(
    port: int, client: httpx.Client
) -> None:
    """PV1-3 is a Location hierarchy (facility, building, ward, floor, room, bed); eight
    connections admitting to beds of the same new room create its levels once."""
    ward, fac = unique_id("W"), unique_id("F")

    def admission(bed: int) -> bytes:
        message = a01(unique_id(), unique_id("P"), visit=unique_id("V"))
        return message.replace(b"|WARD^1^1|", f"|{ward}^12^{bed}^{fac}^^^EAST^2|".encode())

    async def scenario() -> list[list[bytes]]:
        return await asyncio.gather(*(send_all(port, [admission(bed)]) for bed in range(8)))

    for acks in run(scenario()):
        assert msa(acks[0])[0] == "AA", err_fields(acks[0])
    system = "urn:medisentinel:hl7v2:location"
    by_key = {
        key: search(client, "Location", identifier=f"{system}|{key}")
        for key in (fac, f"{fac}^building:EAST", f"{fac}^{ward}", f"{fac}^{ward}^floor:2")
    }
    by_key[f"{fac}^{ward}^12"] = search(client, "Location", identifier=f"{system}|{fac}^{ward}^12")
    assert {key: len(found) for key, found in by_key.items()} == dict.fromkeys(by_key, 1)
    [floor] = by_key[f"{fac}^{ward}^floor:2"]
    [room] = by_key[f"{fac}^{ward}^12"]
    assert room["partOf"] == {"reference": f"Location/{floor['id']}"}
    beds = search(client, "Location", partof=f"Location/{room['id']}")
    assert sorted(b["identifier"][0]["value"] for b in beds) == [
        f"{fac}^{ward}^12^{bed}" for bed in range(8)
    ]


def test_only_missing_levels_above_a_bed_are_locked(
    port: int, engine: Engine, client: httpx.Client
) -> None:
    """An admission to a bed that exists needs nothing of the levels above it, and one to a
    new bed of an existing room uses the room unchanged: neither waits for their locks (each
    admission to a new bed holding its facility's key made them one at a time). One to a bed
    of a new room, whose key another transaction holds, starts again with its keys locked
    first, waits, and creates nothing twice."""
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's (SQLite has one writer at a time)")
    ward, fac = unique_id("W"), unique_id("F")
    system = "urn:medisentinel:hl7v2:location"

    def admission(room: str, bed: str) -> bytes:
        message = a01(unique_id(), unique_id("P"), visit=unique_id("V"))
        return message.replace(b"|WARD^1^1|", f"|{ward}^{room}^{bed}^{fac}|".encode())

    def room_key(room: str) -> int:
        return key_number(f"Location?{identifier_match(system, f'{fac}^{ward}^{room}')}")

    assert msa(send(port, admission("12", "A"))[0])[0] == "AA"
    with ThreadPoolExecutor(2) as pool, engine.connect() as conn, conn.begin():
        lock = text("SELECT pg_advisory_xact_lock(:k)")
        for room in ("12", "13"):
            conn.execute(lock, {"k": room_key(room)})
        for bed in ("A", "B"):  # the known bed, then a new bed of the known room
            done = pool.submit(send, port, admission("12", bed))
            assert msa(done.result(timeout=20)[0])[0] == "AA"  # did not wait for the room
        new = pool.submit(send, port, admission("13", "A"))
        time.sleep(0.5)
        assert not new.done()  # waits for the new room's key
        conn.commit()  # releases it
        assert msa(new.result(timeout=20)[0])[0] == "AA"
    [room12] = search(client, "Location", identifier=f"{system}|{fac}^{ward}^12")
    beds = search(client, "Location", partof=f"Location/{room12['id']}")
    assert sorted(b["name"] for b in beds) == [f"{ward} 12 A", f"{ward} 12 B"]
    assert len(search(client, "Location", identifier=f"{system}|{fac}^{ward}^13")) == 1
    assert len(search(client, "Location", identifier=f"{system}|{fac}^{ward}")) == 1


def test_frames_split_across_reads_and_joined_in_one_read(port: int) -> None:
    controls = [unique_id() for _ in range(3)]
    stream = b"".join(frame(a01(c, unique_id("P"))) for c in controls)

    async def scenario() -> list[bytes]:
        async with MLLPClient("127.0.0.1", port) as mllp:
            cut1, cut2 = len(stream) // 5, len(stream) - 7  # first frame split, others joined
            for piece in (stream[:cut1], stream[cut1:cut2], stream[cut2:]):
                await mllp.send_raw(piece)
                await asyncio.sleep(0.05)
            return [await mllp.read_frame() for _ in controls]

    assert [msa(ack) for ack in run(scenario())] == [("AA", c) for c in controls]


def test_a_client_vanishing_mid_message_leaves_nothing_behind(
    port: int, engine: Engine, client: httpx.Client
) -> None:
    gone, mrn = unique_id(), unique_id("P")
    whole = frame(a01(gone, mrn))

    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(whole[: len(whole) // 2])
        await writer.drain()
        writer.transport.abort()  # gone without a goodbye
        await asyncio.sleep(0.1)
        return (await send_all(port, [a01(unique_id(), unique_id("P"))]))[0]

    assert msa(run(scenario()))[0] == "AA"  # the listener and the next client are fine
    assert rows_for(engine, gone) == [] and patients(client, mrn) == []


def test_enhanced_mode_commit_acks_and_silence_when_asked(port: int, engine: Engine) -> None:
    loud, quiet, after = unique_id(), unique_id(), unique_id()

    async def scenario() -> tuple[bytes, bytes]:
        async with MLLPClient("127.0.0.1", port) as mllp:
            ack = await mllp.send(a01(loud, unique_id("P"), msh15="AL", msh16="NE"))
            await mllp.send_raw(frame(a01(quiet, unique_id("P"), msh15="NE", msh16="NE")))
            # nothing comes back for `quiet`: the next frame read is the ACK of `after`
            return ack, await mllp.send(a01(after, unique_id("P")))

    ack, next_ack = run(scenario())
    assert msa(ack) == ("CA", loud)
    assert msa(next_ack) == ("AA", after)
    [row] = rows_for(engine, quiet)
    assert row.status == "accepted" and row.ack is None


def test_enhanced_mode_sends_the_commit_ack_then_the_application_ack(
    port: int, engine: Engine, client: httpx.Client
) -> None:
    """HL7 v2 chapter 2, enhanced mode over MLLP: a CA once the message is in safe storage,
    then the AA/AE/AR MSH-16 asks for, as a second frame on the connection; CR for a header
    refusal (no application ACK follows); MSH-15 ER / MSH-16 AL: only the application ACK.
    The CA used to be the only answer, and a content error a CE."""
    good, bad, alien, er_only, after = (unique_id() for _ in range(5))
    mrn = unique_id("P")
    no_pid3 = a01(bad, "", msh15="AL", msh16="AL")
    unsupported = a01(alien, unique_id("P"), msh15="AL", msh16="AL").replace(
        b"ADT^A01^ADT_A01", b"ZZZ^Z01", 1
    )

    async def scenario() -> list[bytes]:
        async with MLLPClient("127.0.0.1", port) as mllp:
            frames = [await mllp.send(a01(good, mrn, msh15="AL", msh16="AL"))]
            frames.append(await mllp.read_frame())  # the application ACK, second frame
            frames += [await mllp.send(no_pid3), await mllp.read_frame()]
            frames.append(await mllp.send(unsupported))  # CR only
            frames.append(await mllp.send(a01(er_only, unique_id("P"), msh15="ER", msh16="AL")))
            frames.append(await mllp.send(a01(after, unique_id("P"))))  # original mode
            return frames

    frames = run(scenario())
    assert [msa(f) for f in frames] == [
        ("CA", good),
        ("AA", good),
        ("CA", bad),
        ("AE", bad),
        ("CR", alien),
        ("AA", er_only),
        ("AA", after),
    ]
    assert err_fields(frames[0]) == [] and ("PID^1^3^^1", "101", "E") in err_fields(frames[3])
    assert ("MSH^1^9", "200", "E") in err_fields(frames[4])
    assert patients(client, mrn)
    assert [r.status for r in rows_for(engine, bad)] == ["error"]  # stored: committed
    [row] = rows_for(engine, good)
    assert bytes(row.ack) == frames[0] + frames[1]  # a re-send gets both again

    async def resend() -> list[bytes]:
        async with MLLPClient("127.0.0.1", port) as mllp:
            return [
                await mllp.send(a01(good, mrn, msh15="AL", msh16="AL")),
                await mllp.read_frame(),
            ]

    assert run(resend()) == frames[:2]


# ---------------------------------------------------------------- content


def test_content_errors_are_AE_with_location_and_unsupported_messages_AR(
    port: int, engine: Engine
) -> None:
    bad, order, version = unique_id(), unique_id(), unique_id()
    no_code = oru(bad, unique_id("P"), unique_id("O"), obx3="^^LN")  # OBX-3 empty
    unsupported = a01(order, unique_id("P")).replace(b"ADT^A01^ADT_A01", b"ORM^O01^ORM_O01")
    too_old = a01(version, unique_id("P")).replace(b"|P|2.5.1", b"|P|2.1")
    error, rejected, old = send(port, no_code, unsupported, too_old)
    assert msa(error) == ("AE", bad)
    assert [(loc, code) for loc, code, _ in err_fields(error)] == [("OBX^1^3^^1", "101")]
    assert msa(rejected)[0] == "AR" and [c for _, c, _ in err_fields(rejected)] == ["200"]
    assert msa(old)[0] == "AR" and [c for _, c, _ in err_fields(old)] == ["203"]
    assert rows_for(engine, bad)[0].status == "error"
    assert rows_for(engine, order)[0].status == "rejected"


def test_a_database_failure_is_AE_207_and_the_raw_message_is_kept(
    port: int, engine: Engine, is_postgres: bool, client: httpx.Client
) -> None:
    control, mrn = unique_id(), unique_id("P")
    message = a01(control, mrn, family="DBFAIL")
    with failing_inserts(engine, is_postgres, "DBFAIL"):
        [ack] = send(port, message)
    assert msa(ack) == ("AE", control) and [c for _, c, _ in err_fields(ack)] == ["207"]
    [row] = rows_for(engine, control)
    assert row.status == "error" and row.raw == message
    assert patients(client, mrn) == []
    [again] = send(port, message)  # the database is back: the re-send is applied
    assert msa(again)[0] == "AA" and len(patients(client, mrn)) == 1
    assert [r.status for r in rows_for(engine, control)] == ["superseded", "accepted"]


# ---------------------------------------------------------------- identity over time


def test_a_merge_then_a_result_naming_the_old_identifier_lands_on_the_survivor(
    port: int, client: httpx.Client
) -> None:
    old, new = unique_id("OLD"), unique_id("NEW")
    acks = send(
        port,
        a01(unique_id(), old, family="Before"),
        a01(unique_id(), new, family="After"),
        a40(unique_id(), new, old),
        oru(unique_id(), old, unique_id("O")),
    )
    assert [msa(a)[0] for a in acks] == ["AA"] * 4, [err_fields(a) for a in acks]
    [retired] = patients(client, old)
    [survivor] = patients(client, new)
    assert retired["active"] is False
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    ]
    assert {"other": {"reference": f"Patient/{retired['id']}"}, "type": "replaces"} in survivor[
        "link"
    ]
    [observation] = search(client, "Observation", subject=f"Patient/{survivor['id']}")
    assert search(client, "Observation", subject=f"Patient/{retired['id']}") == []
    assert observation["valueQuantity"]["value"] == 182


def test_an_older_update_arriving_late_does_not_overwrite_newer_data(
    port: int, client: httpx.Client, engine: Engine
) -> None:
    mrn, late = unique_id("P"), unique_id()
    acks = send(
        port,
        a01(unique_id(), mrn, family="First", when="20240101080000"),
        a01(unique_id(), mrn, trigger="A08", family="Newest", when="20240301080000"),
        a01(late, mrn, trigger="A08", family="Stale", when="20240201080000"),
    )
    assert [msa(a)[0] for a in acks] == ["AA"] * 3
    [found] = patients(client, mrn)
    assert found["name"][0]["family"] == "Newest"
    assert any(sev == "W" and code == "0" for _, code, sev in err_fields(acks[2]))
    assert rows_for(engine, late)[0].status == "accepted"


def test_a_result_before_its_patient_then_the_admission_links_up(
    port: int, client: httpx.Client
) -> None:
    mrn = unique_id("P")
    [result_ack] = send(port, oru(unique_id(), mrn, unique_id("O")))
    assert msa(result_ack)[0] == "AA"
    [early] = patients(client, mrn)
    [admit] = send(port, a01(unique_id(), mrn, family="Known", when="20231231080000"))
    assert msa(admit)[0] == "AA"
    [found] = patients(client, mrn)
    assert found["id"] == early["id"] and found["name"][0]["family"] == "Known"
    [observation] = search(client, "Observation", subject=f"Patient/{found['id']}")
    assert observation["subject"]["reference"] == f"Patient/{found['id']}"


def test_many_messages_for_one_patient_from_several_connections_all_apply(
    port: int, client: httpx.Client
) -> None:
    mrn = unique_id("BUSY")
    send(port, a01(unique_id(), mrn, when="20240101000000"))
    rng = random.Random(5)

    async def one_connection(n: int) -> list[bytes]:
        orders = [oru(unique_id(), mrn, unique_id("O"), code=f"{1000 + n * 10 + i}-{i}")
                  for i in range(4)]  # fmt: skip
        rng.shuffle(orders)
        return await send_all(port, orders)

    async def scenario() -> list[list[bytes]]:
        return await asyncio.gather(*(one_connection(n) for n in range(5)))

    for acks in run(scenario()):
        assert [msa(a)[0] for a in acks] == ["AA"] * 4, [err_fields(a) for a in acks]
    [found] = patients(client, mrn)
    found_obs = search(client, "Observation", subject=f"Patient/{found['id']}", _count="100")
    assert len(found_obs) == 20


# ---------------------------------------------------------------- the command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.2)


@pytest.mark.parametrize("command", ["mllp", "serve"])
def test_serve_and_the_mllp_command_run_the_listener(
    command: str, database_url: str, client: httpx.Client
) -> None:
    mllp_port, http_port = _free_port(), _free_port()
    # `serve` follows MEDISENTINEL_MLLP_ENABLED; `mllp` turns the listener on whatever it says
    enabled = "true" if command == "serve" else "false"
    env = server_env(database_url, TEST_MASTER_KEY, port=str(http_port),
                     mllp_port=str(mllp_port), mllp_enabled=enabled)  # fmt: skip
    argv = [sys.executable, "-m", "app.cli", command]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_port(mllp_port, process)
        mrn, control = unique_id("P"), unique_id()
        [ack] = send(mllp_port, a01(control, mrn))
        assert msa(ack) == ("AA", control)
        assert len(patients(client, mrn)) == 1
        if command == "mllp":  # the listener alone: no HTTP
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    if command == "mllp":
        assert process.returncode == 0, err
        assert f"MLLP listening on 127.0.0.1:{mllp_port}".encode() in out
    else:  # uvicorn shuts down cleanly, then re-raises the signal it got
        assert process.returncode in (0, -signal.SIGTERM), err
        assert b"Application shutdown complete" in err


def test_the_settings_switch_on_tls_and_the_allowlist(
    live_server: LiveServer, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    ingest = live_server.app.state.hl7.ingest
    base = live_server.settings.model_copy(update={"mllp_port": 0})

    def feeds(**changes: Any) -> Hl7Feeds:
        return Hl7Feeds(ingest, base.model_copy(update=changes))

    async def answered(f: Hl7Feeds, tls: ssl.SSLContext | None = None) -> bool:
        await f.start()
        try:
            assert f.mllp_port
            name = "localhost" if tls else None
            async with MLLPClient(
                "127.0.0.1", f.mllp_port, ssl_context=tls, server_hostname=name, timeout=5
            ) as mllp:
                control = unique_id()
                await mllp.send_raw(frame(a01(control, unique_id("P"))))
                return msa(await mllp.read_frame(5)) == ("AA", control)
        except (ConnectionError, OSError):  # refused: reset before or after our write
            return False
        finally:
            await f.stop()

    async def scenario() -> None:
        client_tls = ssl.create_default_context(cafile=str(cert))
        assert await answered(feeds(mllp_tls_cert=cert, mllp_tls_key=key), client_tls)
        assert not await answered(feeds(mllp_allowlist="10.0.0.0/8, 192.168.0.0/16"))
        assert await answered(feeds(mllp_allowlist="10.0.0.0/8,127.0.0.1"))
        disabled = feeds(mllp_enabled=False)
        await disabled.start()
        assert disabled.mllp_port is None

    run(scenario())


# ---------------------------------------------------------------- frames at the edges


def test_a_frame_ending_without_the_final_CR_is_answered(port: int, client: httpx.Client) -> None:
    first, second = unique_id("P"), unique_id("P")

    async def scenario() -> tuple[bytes, bytes]:
        async with MLLPClient("127.0.0.1", port, timeout=10) as mllp:
            await mllp.send_raw(b"\x0b" + a01(unique_id(), first) + b"\x1c")  # then silence
            silent = await mllp.read_frame()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0b" + a01(unique_id(), second) + b"\x1c")
        writer.write_eof()  # then the sender closes its side
        closed = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return silent, closed

    silent, closed = run(scenario())
    assert msa(silent)[0] == "AA"
    assert closed.startswith(b"\x0b") and closed.endswith(b"\x1c\x0d")
    assert msa(closed[1:-2])[0] == "AA"
    assert patients(client, first) and patients(client, second)


def test_an_oversize_message_is_AR_104_and_its_head_kept(
    live_server: LiveServer, engine: Engine
) -> None:
    settings = live_server.app.state.settings.model_copy(
        update={"mllp_port": 0, "mllp_max_message_bytes": 4096, "workers": 1}
    )
    feeds = Hl7Feeds(live_server.app.state.hl7.ingest, settings)
    control = unique_id()
    big = a01(control, unique_id("P")).replace(b"Ada", b"Ada" + b"x" * 10_000, 1)

    async def scenario() -> bytes:
        await feeds.start()
        try:
            assert feeds.mllp_port
            async with MLLPClient("127.0.0.1", feeds.mllp_port, timeout=10) as mllp:
                return await mllp.send(big)
        finally:
            await feeds.stop()

    nak = run(scenario())
    assert msa(nak) == ("AR", control)
    assert err_fields(nak) == [("MSH^1", "104", "E")]
    [row] = rows_for(engine, control)
    assert row.status == "truncated" and row.message_code == "ADT"
    assert bytes(row.raw) == big[:4096] and str(len(big)) in row.error
    assert row.ack == nak
