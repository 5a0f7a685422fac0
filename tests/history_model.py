"""The model behind tests/test_history_model.py: what R4 says the server holds (every
version of every resource the run wrote), and the checks of the server against it.

lastUpdated is the server's to choose; the test runs in the server's process, so each
version's lastUpdated must lie between the clock read before and after its request (deletions
learn theirs from the history). Ties in lastUpdated are ordered as the server orders them
(type, id, version newest first): the spec leaves that open.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

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


class Checker:
    """A run's client, model and clock, and the checks of the server against the model;
    the writes are the subclass's (`run_step`)."""

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

    def keys(self, rtype: str) -> list[tuple[str, str]]:
        known = [k for k in self.model.versions if k[0] == rtype]
        fixed = [(rtype, rid) for rid in self.model.fixed_ids[rtype]]
        return sorted(set(known) | set(fixed))

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

    def run_step(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        for rtype in TYPES:
            for key in self.keys(rtype):
                self.check_instance(key)
        for rtype in TYPES:
            every = self.model.all_versions(rtype)
            self.check_listing(f"{rtype}/_history", every, {"_since": instant(self.t0)})
            if every:  # a cut-off inside the run: the versions written at or after it
                moment = self.rng.choice(every).lu or 0
                moment += self.rng.choice([-1, 0, 1])
                since = [v for v in every if (v.lu or 0) >= moment]
                self.check_listing(f"{rtype}/_history", since, {"_since": instant(moment)})
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
            etag = read.headers.get("etag")
            assert etag in (None, f'W/"{current.vid}"'), f"{self.where()}: {what}: ETag {etag}"
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
        for vid in (current.vid + 1, 0, f"0{current.vid}"):
            beyond = self.http.get(f"/{rtype}/{rid}/_history/{vid}")
            self.expect(beyond, 404, f"vread {rtype}/{rid}/_history/{vid}: no such version")
        self.check_cutoffs(key, history)

    def check_cutoffs(self, key: tuple[str, str], history: list[Version]) -> None:
        """`_since` (versions written at or after it) and `_at` (versions current at some
        moment of the period it names: an instant, or a whole second)."""
        rtype, rid = key
        stamps = [v.lu for v in history if v.lu is not None]
        moment = self.rng.choice(stamps) + self.rng.choice([-1, 0, 0, 1])
        since = [v for v in history if v.lu is not None and v.lu >= moment][::-1]
        self.check_listing(f"{rtype}/{rid}/_history", since, {"_since": instant(moment)})
        if self.rng.random() < 0.5:
            low, high, text = moment, moment + 1, instant(moment)
        else:  # to the second: e.g. 2026-11-23T05:00:01Z
            low = moment - moment % 1_000_000
            high, text = low + 1_000_000, instant(low).replace(".000000", "")
        at = [
            v for i, v in enumerate(history)
            if v.lu is not None and v.lu < high
            and (i + 1 == len(history) or (history[i + 1].lu or 0) > low)
        ]  # fmt: skip
        self.check_listing(f"{rtype}/{rid}/_history", at[::-1], {"_at": text})

    def check_system(self) -> None:
        """System history since the run began: every model version exactly once, in order,
        among the server's own writes (the audit trail's AuditEvents), which are skipped.
        Now and then a write comes between two pages: it is newer than any entry after the
        first page, so the listing must still be the one the first page began."""
        expected = self.model.all_versions()
        count = str(self.rng.randint(5, 60))
        between = self.run_step if self.rng.random() < 0.5 else None
        entries = self.follow("_history", {"_since": instant(self.t0), "_count": count}, between)
        ours = [e for e in entries if self.is_ours(e)]
        self.compare(ours, expected, "_history")

    def is_ours(self, entry: dict[str, Any]) -> bool:
        path = urlsplit(entry["fullUrl"]).path.rsplit("/", 2)[-2:]
        return tuple(path) in self.model.versions

    def check_listing(self, path: str, expected: list[Version], params: dict[str, str]) -> None:
        count = self.rng.randint(1, 4)
        entries = self.follow(path, {**params, "_count": str(count)})
        self.compare(entries, expected, f"{path}?{params} _count={count}")

    def follow(
        self, path: str, params: dict[str, str], between: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Every entry of a history listing, page after page through `next` links;
        `between` runs after the first page."""
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
            if between is not None and seen_pages == 1:
                between()
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
