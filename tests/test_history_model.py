"""Model-based test of versioning and history (R4 http.html: #read, #vread, #update, #patch,
#delete, #create, #cond-update, #cond-delete, #history, #transaction).

A seeded random sequence of writes on a handful of ids of two resource types goes to the
running server over HTTP: creates, updates (by id, update-as-create with a client id, an
update that changes nothing, bringing back a deleted resource), JSON Patches, deletes (of
live, deleted and never existing ids), conditional creates, updates and deletes by an
identifier, If-Match right and wrong, and now and then a transaction or batch Bundle. An
in-memory model keeps what the spec says the server must hold (every version: content,
deleted or not, method, whether it created the resource, lastUpdated), and every few steps
the server is checked against it: read (200/404/410), vread of every version (404 past the
last), instance, type and system history (order newest first, each version exactly once
through `next` links, `request`/`response` per entry, no resource for a deletion),
`_since` and `_at` cut-offs, and the ETag/Location/Last-Modified headers of every answer.

lastUpdated is the server's to choose; the test runs in the server's process, so each
version's lastUpdated must lie between the clock read before and after its request. Ties in
lastUpdated are ordered as the server orders them (type, id, version newest first): the
spec leaves that open.

Reproducible: the seed and step are in every failure message. Knobs:
`MEDISENTINEL_HISTMODEL_SEEDS=1,2,3` and `MEDISENTINEL_HISTMODEL_STEPS=200` run more.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

SEEDS = [int(s) for s in os.environ.get("MEDISENTINEL_HISTMODEL_SEEDS", "1,2,3").split(",")]
STEPS = int(os.environ.get("MEDISENTINEL_HISTMODEL_STEPS", "40"))
CHECK_EVERY = 4
TYPES = ("Patient", "Organization")
JSON = "application/fhir+json"
PATCH = {"Content-Type": "application/json-patch+json"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def instant(us: int) -> str:
    return (
        (EPOCH + timedelta(microseconds=us))
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def parse_us(text: str) -> int:
    return (datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH) // timedelta(
        microseconds=1
    )


@dataclass
class Version:
    rtype: str
    rid: str
    vid: int
    content: dict[str, Any] | None  # as sent, with the id; None for a deletion
    method: str  # POST PUT PATCH DELETE
    created: bool
    low: int  # the clock before and after the request that wrote it
    high: int
    lu: int | None = None  # known from the answer, or learned from history

    @property
    def deleted(self) -> bool:
        return self.content is None

    def status(self) -> str:
        return "204" if self.deleted else "201" if self.created else "200"


@dataclass
class Model:
    run: str
    versions: dict[tuple[str, str], list[Version]] = field(default_factory=dict)
    fixed_ids: dict[str, list[str]] = field(default_factory=dict)

    def current(self, key: tuple[str, str]) -> Version | None:
        history = self.versions.get(key)
        return history[-1] if history else None

    def live(self, key: tuple[str, str]) -> bool:
        current = self.current(key)
        return current is not None and not current.deleted

    def matching(self, rtype: str, ident: str) -> list[tuple[str, str]]:
        """Live resources of the type carrying the identifier (deleted ones match nothing)."""
        found = []
        for key, history in self.versions.items():
            content = history[-1].content
            if key[0] == rtype and content is not None:
                if any(i.get("value") == ident for i in content.get("identifier", [])):
                    found.append(key)
        return found

    def all_versions(self, rtype: str | None = None) -> list[Version]:
        every = [v for h in self.versions.values() for v in h if rtype in (None, v.rtype)]
        return sorted(every, key=order_key)

    def add(self, version: Version) -> None:
        self.versions.setdefault((version.rtype, version.rid), []).append(version)


def order_key(v: Version) -> tuple[int, str, str, int]:
    """Newest first; ties in lastUpdated as the server breaks them."""
    assert v.lu is not None, f"{v.rtype}/{v.rid}/_history/{v.vid}: lastUpdated not learned"
    return (-v.lu, v.rtype, v.rid, -v.vid)


class Runner:
    def __init__(self, client: httpx.Client, base: str, seed: int) -> None:
        self.http = client
        self.base = base
        self.rng = random.Random(seed)
        self.seed = seed
        self.step = 0
        run = f"hm{seed}-{uuid.uuid4().hex[:8]}"
        self.system = f"urn:histmodel:{run}"
        self.model = Model(run)
        self.idents = [f"{run}-i{n}" for n in range(3)]
        for rtype in TYPES:
            self.model.fixed_ids[rtype] = [f"{run}-{rtype[:3].lower()}{n}" for n in range(3)]
        self.t0 = now_us()
        self.counter = 0

    # ------------------------------------------------------------ helpers

    def where(self) -> str:
        return f"seed {self.seed} step {self.step}"

    def body(self, rtype: str, rid: str | None = None, ident: str | None = None) -> dict[str, Any]:
        self.counter += 1
        ident = ident or self.rng.choice(self.idents)
        body: dict[str, Any] = {"resourceType": rtype}
        if rid:
            body["id"] = rid
        body["identifier"] = [{"system": self.system, "value": ident}]
        body["active"] = self.rng.random() < 0.5
        if rtype == "Patient":
            body["name"] = [{"family": f"F{self.counter}"}]
        else:
            body["name"] = f"O{self.counter}"
        return body

    def keys(self, rtype: str) -> list[tuple[str, str]]:
        known = [k for k in self.model.versions if k[0] == rtype]
        fixed = [(rtype, rid) for rid in self.model.fixed_ids[rtype]]
        return sorted(set(known) | set(fixed))

    def pick_key(self) -> tuple[str, str]:
        return self.rng.choice(self.keys(self.rng.choice(TYPES)))

    def wrong_tag(self, key: tuple[str, str]) -> str:
        current = self.model.current(key)
        return f'W/"{(current.vid if current else 0) + self.rng.randint(1, 3)}"'

    def expect(self, response: httpx.Response, status: int, what: str) -> None:
        assert response.status_code == status, (
            f"{self.where()}: {what}: {response.status_code} (expected {status}) {response.text}"
        )

    def write_headers(self, response: httpx.Response, version: Version, what: str) -> None:
        """ETag, Last-Modified, Location (201) of a write, and its body's meta."""
        assert response.headers.get("etag") == f'W/"{version.vid}"', (
            f"{self.where()}: {what}: ETag {response.headers.get('etag')}"
        )
        body = response.json()
        lu = parse_us(body["meta"]["lastUpdated"])
        self.learn(version, lu, what)
        self.check_last_modified(response, lu, what)
        if response.status_code == 201:
            assert response.headers.get("location") == (
                f"{self.base}/{version.rtype}/{version.rid}/_history/{version.vid}"
            ), f"{self.where()}: {what}: Location {response.headers.get('location')}"
        self.check_content(body, version, what)

    def check_last_modified(self, response: httpx.Response, lu: int, what: str) -> None:
        header = response.headers.get("last-modified")
        assert header, f"{self.where()}: {what}: no Last-Modified"
        assert parsedate_to_datetime(header) == EPOCH + timedelta(seconds=lu // 1_000_000), (
            f"{self.where()}: {what}: Last-Modified {header} for {instant(lu)}"
        )

    def learn(self, version: Version, lu: int, what: str) -> None:
        assert version.low <= lu <= version.high, (
            f"{self.where()}: {what}: lastUpdated {instant(lu)} outside the request "
            f"[{instant(version.low)}, {instant(version.high)}]"
        )
        assert version.lu in (None, lu), f"{self.where()}: {what}: lastUpdated changed"
        version.lu = lu

    def check_content(self, body: dict[str, Any], version: Version, what: str) -> None:
        meta = body.get("meta", {})
        assert meta.get("versionId") == str(version.vid), f"{self.where()}: {what}: {meta}"
        assert version.lu is not None and parse_us(meta["lastUpdated"]) == version.lu, (
            f"{self.where()}: {what}: meta.lastUpdated {meta} vs {instant(version.lu or 0)}"
        )
        rest = {k: v for k, v in body.items() if k != "meta"}
        assert rest == version.content, f"{self.where()}: {what}: content {rest}"

    def new_version(
        self, key: tuple[str, str], content: dict[str, Any] | None, method: str,
        created: bool, low: int,
    ) -> Version:  # fmt: skip
        current = self.model.current(key)
        vid = current.vid + 1 if current else 1
        version = Version(key[0], key[1], vid, content, method, created, low, now_us())
        self.model.add(version)
        return version

    # ------------------------------------------------------------ operations

    def op_create(self) -> None:
        rtype = self.rng.choice(TYPES)
        body = self.body(rtype)
        low = now_us()
        response = self.http.post(f"/{rtype}", json=body, headers={"Content-Type": JSON})
        self.expect(response, 201, f"POST {rtype}")
        rid = response.json()["id"]
        assert (rtype, rid) not in self.model.versions, f"{self.where()}: id {rid} reused"
        version = self.new_version((rtype, rid), {**body, "id": rid}, "POST", True, low)
        self.write_headers(response, version, f"POST {rtype}")

    def op_update(self) -> None:
        key = self.pick_key()
        rtype, rid = key
        current = self.model.current(key)
        if current is not None and current.content is not None and self.rng.random() < 0.25:
            body = dict(current.content)  # an update that changes nothing: still a version
        else:
            body = self.body(rtype, rid)
        headers = {"Content-Type": JSON}
        precondition = self.rng.random()
        right = current is not None and not current.deleted
        if precondition < 0.15:
            headers["If-Match"] = self.wrong_tag(key)
            right = False
        elif precondition < 0.3 and current is not None:
            # R4 http.html#concurrency; RFC 9110 13.1.1: false when nothing is current, so
            # the deletion's own tag names no current version either
            headers["If-Match"] = f'W/"{current.vid}"'
        else:
            right = True
        what = f"PUT {rtype}/{rid} {headers.get('If-Match', '')}"
        low = now_us()
        response = self.http.put(f"/{rtype}/{rid}", json=body, headers=headers)
        if not right:
            self.expect(response, 412, what)
            return
        created = current is None or current.deleted
        self.expect(response, 201 if created else 200, what)
        version = self.new_version(key, {**body, "id": rid}, "PUT", created, low)
        self.write_headers(response, version, what)

    def op_patch(self) -> None:
        key = self.pick_key()
        rtype, rid = key
        current = self.model.current(key)
        active = self.rng.random() < 0.5
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/active", "value": active}]
        headers = dict(PATCH)
        wrong = self.rng.random() < 0.2
        if wrong:
            headers["If-Match"] = self.wrong_tag(key)
        what = f"PATCH {rtype}/{rid} {headers.get('If-Match', '')}"
        low = now_us()
        response = self.http.patch(f"/{rtype}/{rid}", json=ops, headers=headers)
        if current is None:
            self.expect(response, 404, what)
            return
        if current.content is None:
            self.expect(response, 410, what)
            return
        if wrong:
            self.expect(response, 412, what)
            return
        self.expect(response, 200, what)
        content = {**current.content, "active": active}
        version = self.new_version(key, content, "PATCH", False, low)
        self.write_headers(response, version, what)

    def op_delete(self) -> None:
        key = self.pick_key()
        rtype, rid = key
        current = self.model.current(key)
        headers = {}
        roll = self.rng.random()
        if roll < 0.15:
            headers["If-Match"] = self.wrong_tag(key)
        elif roll < 0.3 and current is not None and not current.deleted:
            headers["If-Match"] = f'W/"{current.vid}"'
        what = f"DELETE {rtype}/{rid} {headers.get('If-Match', '')}"
        low = now_us()
        response = self.http.delete(f"/{rtype}/{rid}", headers=headers)
        live = current is not None and not current.deleted
        if headers and not (live and current and headers["If-Match"] == f'W/"{current.vid}"'):
            self.expect(response, 412, what)
            return
        # R4 http.html#delete: 200/204 also when already deleted or never there
        self.expect(response, 204, what)
        if not live:
            assert "etag" not in response.headers or (
                current and response.headers["etag"] == f'W/"{current.vid}"'
            ), f"{self.where()}: {what}: ETag {response.headers.get('etag')}"
            return
        version = self.new_version(key, None, "DELETE", False, low)
        etag = response.headers.get("etag")
        assert etag in (None, f'W/"{version.vid}"'), f"{self.where()}: {what}: ETag {etag}"

    def criteria(self, ident: str) -> str:
        return f"identifier={self.system}|{ident}"

    def op_conditional_create(self) -> None:
        rtype = self.rng.choice(TYPES)
        ident = self.rng.choice(self.idents)
        body = self.body(rtype, ident=ident)
        matches = self.model.matching(rtype, ident)
        what = f"POST {rtype} If-None-Exist {ident}"
        low = now_us()
        headers = {"Content-Type": JSON, "If-None-Exist": self.criteria(ident)}
        response = self.http.post(f"/{rtype}", json=body, headers=headers)
        if len(matches) > 1:
            self.expect(response, 412, what)
        elif matches:
            self.expect(response, 200, what)
            current = self.model.current(matches[0])
            assert current is not None
            assert response.json()["id"] == matches[0][1], f"{self.where()}: {what}"
            assert response.headers.get("etag") == f'W/"{current.vid}"', f"{self.where()}: {what}"
            self.check_content(response.json(), current, what)
        else:
            self.expect(response, 201, what)
            rid = response.json()["id"]
            version = self.new_version((rtype, rid), {**body, "id": rid}, "POST", True, low)
            self.write_headers(response, version, what)

    def op_conditional_update(self) -> None:
        rtype = self.rng.choice(TYPES)
        ident = self.rng.choice(self.idents)
        body = self.body(rtype, ident=ident)
        matches = self.model.matching(rtype, ident)
        what = f"PUT {rtype}?identifier={ident}"
        low = now_us()
        response = self.http.put(
            f"/{rtype}", params={"identifier": f"{self.system}|{ident}"}, json=body,
            headers={"Content-Type": JSON},
        )  # fmt: skip
        if len(matches) > 1:
            self.expect(response, 412, what)
            return
        if matches:
            self.expect(response, 200, what)
            key = matches[0]
            version = self.new_version(key, {**body, "id": key[1]}, "PUT", False, low)
        else:
            # R4 http.html#cond-update: no match, no id: the server creates, as a PUT
            self.expect(response, 201, what)
            key = (rtype, response.json()["id"])
            assert key not in self.model.versions, f"{self.where()}: {what}: id reused"
            version = self.new_version(key, {**body, "id": key[1]}, "PUT", True, low)
        self.write_headers(response, version, what)

    def op_conditional_delete(self) -> None:
        rtype = self.rng.choice(TYPES)
        ident = self.rng.choice(self.idents)
        matches = self.model.matching(rtype, ident)
        what = f"DELETE {rtype}?identifier={ident}"
        low = now_us()
        response = self.http.delete(f"/{rtype}", params={"identifier": f"{self.system}|{ident}"})
        if len(matches) > 1:
            self.expect(response, 412, what)
        elif matches:
            self.expect(response, 204, what)
            version = self.new_version(matches[0], None, "DELETE", False, low)
            etag = response.headers.get("etag")
            assert etag in (None, f'W/"{version.vid}"'), f"{self.where()}: {what}: ETag {etag}"
        else:
            self.expect(response, 200, what)  # nothing to delete: an informational outcome

    def op_bundle(self) -> None:
        """A transaction or batch of creates, updates by id and deletes of distinct ids."""
        kind = self.rng.choice(["transaction", "batch"])
        entries: list[dict[str, Any]] = []
        planned: list[tuple[str, tuple[str, str] | None, dict[str, Any] | None]] = []
        used: set[tuple[str, str]] = set()
        for _ in range(self.rng.randint(2, 4)):
            roll = self.rng.random()
            rtype = self.rng.choice(TYPES)
            if roll < 0.35:
                body = self.body(rtype)
                full_url = f"urn:uuid:{uuid.uuid4()}"
                entries.append({"fullUrl": full_url, "resource": body,
                                "request": {"method": "POST", "url": rtype}})  # fmt: skip
                planned.append(("POST", None, body))
                continue
            key = self.rng.choice([k for k in self.keys(rtype) if k not in used] or [None])
            if key is None:
                continue
            used.add(key)
            url = f"{key[0]}/{key[1]}"
            if roll < 0.75:
                body = self.body(key[0], key[1])
                entries.append({"fullUrl": f"{self.base}/{url}", "resource": body,
                                "request": {"method": "PUT", "url": url}})  # fmt: skip
                planned.append(("PUT", key, body))
            else:
                entries.append({"request": {"method": "DELETE", "url": url}})
                planned.append(("DELETE", key, None))
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        what = f"{kind} {[(m, k) for m, k, _ in planned]}"
        low = now_us()
        response = self.http.post("", json=bundle, headers={"Content-Type": JSON})
        self.expect(response, 200, what)
        high = now_us()
        answers = response.json()["entry"]
        assert len(answers) == len(planned), f"{self.where()}: {what}: {answers}"
        # a transaction runs DELETE, then POST, then PUT (R4 http.html#trules)
        rank = {"DELETE": 0, "POST": 1, "PUT": 2}
        order = range(len(planned))
        if kind == "transaction":
            order = sorted(order, key=lambda i: rank[planned[i][0]])  # type: ignore[assignment]
        written: list[Version] = []
        for i in order:
            method, key, body = planned[i]
            answer = answers[i]["response"]
            status = answer["status"].split()[0]
            entry_what = f"{what} entry {i}"
            if method == "POST":
                assert status == "201", f"{self.where()}: {entry_what}: {answer}"
                rtype, rid, _, vid = answer["location"].split("/")
                key = (rtype, rid)
                assert key not in self.model.versions, f"{self.where()}: {entry_what}"
                assert body is not None
                version = Version(rtype, rid, 1, {**body, "id": rid}, "POST", True, low, high)
            elif method == "PUT":
                assert key is not None and body is not None
                current = self.model.current(key)
                created = current is None or current.deleted
                assert status == ("201" if created else "200"), (
                    f"{self.where()}: {entry_what}: {answer}"
                )
                vid = current.vid + 1 if current else 1
                version = Version(*key, vid, dict(body), "PUT", created, low, high)
            else:
                assert key is not None
                current = self.model.current(key)
                assert status in ("200", "204"), f"{self.where()}: {entry_what}: {answer}"
                if current is None or current.deleted:
                    continue
                version = Version(*key, current.vid + 1, None, "DELETE", False, low, high)
            assert answer.get("etag") == f'W/"{version.vid}"', (
                f"{self.where()}: {entry_what}: {answer}"
            )
            if not version.deleted:
                assert answer.get("location") == (
                    f"{version.rtype}/{version.rid}/_history/{version.vid}"
                ), f"{self.where()}: {entry_what}: {answer}"
            self.learn(version, parse_us(answer["lastModified"]), entry_what)
            self.model.add(version)
            written.append(version)
        if kind == "transaction":  # the entries are written in their processing order
            stamps = [v.lu or 0 for v in written]
            assert stamps == sorted(stamps), f"{self.where()}: {what}: {stamps}"

    OPERATIONS = (
        (op_create, 2),
        (op_update, 4),
        (op_patch, 2),
        (op_delete, 3),
        (op_conditional_create, 2),
        (op_conditional_update, 2),
        (op_conditional_delete, 1),
        (op_bundle, 1),
    )

    def run_step(self) -> None:
        ops = [op for op, weight in self.OPERATIONS for _ in range(weight)]
        op = ops[0] if self.step == 0 else self.rng.choice(ops)
        op(self)

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        for rtype in TYPES:
            for key in self.keys(rtype):
                self.check_instance(key)
        for rtype in TYPES:
            self.check_listing(
                f"{rtype}/_history", self.model.all_versions(rtype), {"_since": instant(self.t0)}
            )
        self.check_system()

    def check_instance(self, key: tuple[str, str]) -> None:
        rtype, rid = key
        history = self.model.versions.get(key, [])
        read = self.http.get(f"/{rtype}/{rid}")
        what = f"GET {rtype}/{rid}"
        if not history:
            self.expect(read, 404, what)
            self.expect(self.http.get(f"/{rtype}/{rid}/_history"), 404, what + "/_history")
            self.expect(self.http.get(f"/{rtype}/{rid}/_history/1"), 404, what + "/_history/1")
            return
        current = history[-1]
        if current.deleted:
            self.expect(read, 410, what)
        else:
            self.expect(read, 200, what)
            assert read.headers.get("etag") == f'W/"{current.vid}"', f"{self.where()}: {what}"
            assert current.lu is not None
            self.check_last_modified(read, current.lu, what)
            self.check_content(read.json(), current, what)
        versions = sorted(history, key=order_key) if all(v.lu for v in history) else None
        self.check_listing(f"{rtype}/{rid}/_history", versions or history[::-1], {})
        for version in history:
            vwhat = f"GET {rtype}/{rid}/_history/{version.vid}"
            response = self.http.get(f"/{rtype}/{rid}/_history/{version.vid}")
            if version.deleted:
                self.expect(response, 410, vwhat)
                continue
            self.expect(response, 200, vwhat)
            assert response.headers.get("etag") == f'W/"{version.vid}"', f"{self.where()}: {vwhat}"
            assert version.lu is not None
            self.check_last_modified(response, version.lu, vwhat)
            self.check_content(response.json(), version, vwhat)
        beyond = self.http.get(f"/{rtype}/{rid}/_history/{current.vid + 1}")
        self.expect(beyond, 404, f"vread {rtype}/{rid} beyond the last version")
        self.check_cutoffs(key, history)

    def check_cutoffs(self, key: tuple[str, str], history: list[Version]) -> None:
        """`_since` (versions written at or after it) and `_at` (versions current at it)."""
        rtype, rid = key
        stamps = [v.lu for v in history if v.lu is not None]
        moment = self.rng.choice(stamps) + self.rng.choice([-1, 0, 0, 1])
        since = [v for v in history if v.lu is not None and v.lu >= moment][::-1]
        self.check_listing(f"{rtype}/{rid}/_history", since, {"_since": instant(moment)})
        at = [
            v for i, v in enumerate(history)
            if v.lu is not None and v.lu <= moment
            and (i + 1 == len(history) or (history[i + 1].lu or 0) > moment)
        ]  # fmt: skip
        self.check_listing(f"{rtype}/{rid}/_history", at[::-1], {"_at": instant(moment)})

    def check_system(self) -> None:
        """System history since the run began: every model version exactly once, in order,
        among the server's own writes (the audit trail's AuditEvents), which are skipped."""
        expected = self.model.all_versions()
        entries = self.follow("_history", {"_since": instant(self.t0), "_count": "200"})
        ours = [e for e in entries if self.is_ours(e)]
        self.compare(ours, expected, "_history")

    def is_ours(self, entry: dict[str, Any]) -> bool:
        path = urlsplit(entry["fullUrl"]).path.rsplit("/", 2)[-2:]
        return tuple(path) in self.model.versions

    def check_listing(self, path: str, expected: list[Version], params: dict[str, str]) -> None:
        count = self.rng.randint(1, 4)
        entries = self.follow(path, {**params, "_count": str(count)})
        self.compare(entries, expected, f"{path}?{params} _count={count}")

    def follow(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every entry of a history listing, page after page through `next` links."""
        entries: list[dict[str, Any]] = []
        totals: list[int] = []
        response = self.http.get(f"/{path}", params=params)
        seen_pages = 0
        while True:
            self.expect(response, 200, f"GET {path} {params}")
            bundle = response.json()
            assert bundle["type"] == "history", f"{self.where()}: {path}"
            page = bundle.get("entry", [])
            assert len(page) <= int(params["_count"]), f"{self.where()}: {path}: page too long"
            if "total" in bundle:  # R4 Bundle.total: the number of entries in the whole listing
                totals.append(bundle["total"])
            entries += page
            links = {link["relation"]: link["url"] for link in bundle.get("link", [])}
            if "next" not in links:
                break
            seen_pages += 1
            assert seen_pages < 10_000, f"{self.where()}: {path}: paging does not end"
            response = self.http.get(links["next"])
        assert all(total == len(entries) for total in totals), f"{self.where()}: {path} total"
        return entries

    def compare(self, entries: list[dict[str, Any]], expected: list[Version], what: str) -> None:
        got = [self.describe(e) for e in entries]
        for entry, version in zip(entries, expected, strict=False):
            response = entry["response"]
            if version.lu is None:
                self.learn(version, parse_us(response["lastModified"]), what)
        want = [
            (f"{self.base}/{v.rtype}/{v.rid}", v.vid, v.method, v.status())
            for v in sorted(expected, key=order_key)
        ]
        assert got == want, f"{self.where()}: {what}:\n got  {got}\n want {want}"
        for entry, version in zip(entries, sorted(expected, key=order_key), strict=True):
            ewhat = f"{what}: {version.rtype}/{version.rid}/_history/{version.vid}"
            request, response = entry["request"], entry["response"]
            url = version.rtype if version.method == "POST" else f"{version.rtype}/{version.rid}"
            assert request["url"] == url, f"{self.where()}: {ewhat}: {request}"
            assert response["etag"] == f'W/"{version.vid}"', f"{self.where()}: {ewhat}"
            assert parse_us(response["lastModified"]) == version.lu, f"{self.where()}: {ewhat}"
            if version.deleted:
                assert "resource" not in entry, f"{self.where()}: {ewhat}: a deletion's resource"
            else:
                self.check_content(entry["resource"], version, ewhat)

    @staticmethod
    def describe(entry: dict[str, Any]) -> tuple[str, int, str, str]:
        response = entry["response"]
        vid = int(response["etag"].removeprefix('W/"').removesuffix('"'))
        return (entry["fullUrl"], vid, entry["request"]["method"], response["status"].split()[0])


@pytest.fixture(scope="module")
def client(base_url: str, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"Accept": JSON, **auth_headers}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        yield http


@pytest.mark.parametrize("seed", SEEDS)
def test_versions_and_history_follow_the_model(
    client: httpx.Client, base_url: str, seed: int
) -> None:
    runner = Runner(client, base_url, seed)
    for step in range(STEPS):
        runner.step = step
        runner.run_step()
        if step % CHECK_EVERY == CHECK_EVERY - 1 or step == STEPS - 1:
            runner.check()


# ---------------------------------------------------------------- what the model found


def test_if_match_naming_the_deletion_does_not_match_a_deleted_resource(
    client: httpx.Client,
) -> None:
    """Seed 4, step 36 (and seeds 5, 7, 10): a PUT with `If-Match: W/"2"` on a resource whose
    version 2 is its deletion brought it back (201), and a DELETE with it answered 204, where
    `If-Match: *` was 412. RFC 9110 13.1.1: If-Match is false when there is no current
    representation, and a deleted resource has none (its read is 410)."""
    body = {"resourceType": "Organization", "name": "Deleted"}
    rid = client.post("/Organization", json=body, headers={"Content-Type": JSON}).json()["id"]
    assert client.delete(f"/Organization/{rid}").status_code == 204
    gone = client.get(f"/Organization/{rid}")
    assert gone.status_code == 410 and gone.headers["etag"] == 'W/"2"'
    tag = {"If-Match": 'W/"2"'}
    put = client.put(f"/Organization/{rid}", json={**body, "id": rid},
                     headers={"Content-Type": JSON, **tag})  # fmt: skip
    assert put.status_code == 412, put.text
    assert client.delete(f"/Organization/{rid}", headers=tag).status_code == 412
    history = client.get(f"/Organization/{rid}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    # without the precondition the PUT brings it back, as version 3
    again = client.put(f"/Organization/{rid}", json={**body, "id": rid},
                       headers={"Content-Type": JSON})  # fmt: skip
    assert again.status_code == 201 and again.headers["etag"] == 'W/"3"'
