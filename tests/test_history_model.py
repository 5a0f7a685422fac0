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

The model and the checks against it are in tests/history_model.py.

Reproducible: the seed and step are in every failure message. Knobs:
`MEDISENTINEL_HISTMODEL_SEEDS=1-20` (or `3,7,11`) and `MEDISENTINEL_HISTMODEL_STEPS=200` run more.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import httpx
import pytest

from tests.history_model import JSON, PATCH, TYPES, Checker, Version, now_us, parse_us
from tests.seeds import seeds_from_env

SEEDS = seeds_from_env("MEDISENTINEL_HISTMODEL_SEEDS", "1,2,3")
STEPS = int(os.environ.get("MEDISENTINEL_HISTMODEL_STEPS", "30"))
CHECK_EVERY = 5


class Runner(Checker):
    """The random writes, each checked at once against what the model says it must do."""

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

    def pick_key(self) -> tuple[str, str]:
        return self.rng.choice(self.keys(self.rng.choice(TYPES)))

    def wrong_tag(self, key: tuple[str, str]) -> str:
        current = self.model.current(key)
        return f'W/"{(current.vid if current else 0) + self.rng.randint(1, 3)}"'

    # ------------------------------------------------------------ operations

    def op_create(self) -> None:
        self.conditional("POST", plain=True)

    def expected(
        self, key: tuple[str, str], method: str, payload: Any, if_match: str | None
    ) -> tuple[int, Version | None]:
        """What a PUT, PATCH or DELETE by id must answer now, and the version it writes.
        If-Match is false when nothing is current (never there, or deleted: RFC 9110 13.1.1)."""
        current = self.model.current(key)
        live = current is not None and current.content is not None
        matched = if_match is None or (live and current and if_match == f'W/"{current.vid}"')
        vid = current.vid + 1 if current else 1
        if method == "PATCH":
            if current is None or current.content is None:
                return (404 if current is None else 410), None
            if not matched:
                return 412, None
            content = {**current.content, "active": payload[0]["value"]}
            return 200, Version(*key, vid, content, "PATCH", False, 0, 0)
        if not matched:
            return 412, None
        if method == "PUT":
            content = {**payload, "id": key[1]}
            return (200 if live else 201), Version(*key, vid, content, "PUT", not live, 0, 0)
        # R4 http.html#delete: 200/204 also when already deleted or never there, unwritten
        return 204, Version(*key, vid, None, "DELETE", False, 0, 0) if live else None

    def if_match(self, key: tuple[str, str]) -> str | None:
        """None mostly; else a wrong tag, or the current version's (deleted ones too)."""
        roll = self.rng.random()
        if roll < 0.15:
            return self.wrong_tag(key)
        current = self.model.current(key)
        if roll < 0.3 and current is not None:
            return f'W/"{current.vid}"'
        return None

    def patch_ops(self) -> list[dict[str, Any]]:
        return [{"op": "add", "path": "/active", "value": self.rng.random() < 0.5}]

    def put_body(self, key: tuple[str, str]) -> dict[str, Any]:
        current = self.model.current(key)
        if current is not None and current.content is not None and self.rng.random() < 0.25:
            return dict(current.content)  # an update that changes nothing: still a version
        return self.body(*key)

    def by_id(self, method: str) -> None:
        key = self.pick_key()
        rtype, rid = key
        if_match = self.if_match(key)
        payload = self.patch_ops() if method == "PATCH" else self.put_body(key)
        headers = {"If-Match": if_match} if if_match else {}
        what = f"{method} {rtype}/{rid} {if_match or ''}"
        status, version = self.expected(key, method, payload, if_match)
        if method == "PUT" and not if_match and self.rng.random() < 0.15:
            # create only (RFC 9110 13.1.2): false when a version is current
            headers["If-None-Match"] = "*"
            what += " If-None-Match *"
            if self.model.live(key):
                status, version = 412, None
        low = now_us()
        if method == "DELETE":
            response = self.http.delete(f"/{rtype}/{rid}", headers=headers)
        else:
            kind = PATCH if method == "PATCH" else {"Content-Type": JSON}
            response = self.http.request(
                method, f"/{rtype}/{rid}", json=payload, headers={**kind, **headers}
            )
        self.expect(response, status, what)
        if version is None:
            if method == "DELETE":  # nothing new: at most the tag of what is there
                current = self.model.current(key)
                etag = response.headers.get("etag")
                assert etag is None or (current and etag == f'W/"{current.vid}"'), (
                    f"{self.where()}: {what}: ETag {etag}"
                )
            return
        version.low, version.high = low, now_us()
        self.model.add(version)
        if method == "DELETE":
            etag = response.headers.get("etag")
            assert etag in (None, f'W/"{version.vid}"'), f"{self.where()}: {what}: ETag {etag}"
        else:
            self.write_headers(response, version, what)

    def op_update(self) -> None:
        self.by_id("PUT")

    def op_patch(self) -> None:
        self.by_id("PATCH")

    def op_delete(self) -> None:
        self.by_id("DELETE")

    def criteria(self, ident: str) -> str:
        return f"identifier={self.system}|{ident}"

    def expected_conditional(self, entry: dict[str, Any]) -> tuple[int, Version | None]:
        """A create (`ifNoneExist` or none), or a conditional update or delete by identifier
        (R4 http.html#ccreate, #cond-update, #cond-delete): the answer and the version it
        writes (with an empty id when the server picks it). Deleted resources match nothing."""
        request = entry["request"]
        method, url = request["method"], request["url"]
        rtype, _, query = url.partition("?")
        criteria = request.get("ifNoneExist") or query
        matches = self.model.matching(rtype, criteria.rsplit("|", 1)[-1]) if criteria else []
        if len(matches) > 1:
            return 412, None
        current = self.model.current(matches[0]) if matches else None
        if_match = request.get("ifMatch")
        if if_match and (current is None or if_match != f'W/"{current.vid}"'):
            return 412, None  # false with nothing current (RFC 9110 13.1.1), as by id
        if method == "DELETE":  # no match: nothing to delete, an informational 200
            if current is None:
                return 200, None
            return 204, Version(*matches[0], current.vid + 1, None, "DELETE", False, 0, 0)
        body = entry["resource"]
        if current is None:  # a create; a conditional update that matched nothing is a PUT
            return 201, Version(rtype, "", 1, body, method, True, 0, 0)
        if method == "POST":  # If-None-Exist found it: nothing written
            return 200, None
        content = {**body, "id": matches[0][1]}
        return 200, Version(*matches[0], current.vid + 1, content, "PUT", False, 0, 0)

    def conditional(self, method: str, *, plain: bool = False) -> None:
        """A conditional create, update or delete by identifier; `plain`: a POST without
        If-None-Exist."""
        rtype = self.rng.choice(TYPES)
        ident = self.rng.choice(self.idents)
        criteria = self.criteria(ident)
        entry: dict[str, Any] = {"request": {"method": method, "url": f"{rtype}?{criteria}"}}
        headers = {"Content-Type": JSON}
        if method == "POST":
            entry["request"] = {"method": "POST", "url": rtype}
            if not plain:
                entry["request"]["ifNoneExist"] = headers["If-None-Exist"] = criteria
        if method != "DELETE":
            entry["resource"] = self.body(rtype, ident=ident)
        if method != "POST" and self.rng.random() < 0.3:
            self.conditional_if_match(entry, rtype, ident)
            headers["If-Match"] = entry["request"]["ifMatch"]
        status, version = self.expected_conditional(entry)
        what = f"{method} {entry['request']}"
        low = now_us()
        params = None if method == "POST" else {"identifier": f"{self.system}|{ident}"}
        response = self.http.request(
            method, f"/{rtype}", params=params, json=entry.get("resource"), headers=headers
        )
        self.expect(response, status, what)
        if method == "POST" and status == 200:  # the match, as a read would show it
            match = self.model.matching(rtype, ident)[0]
            current = self.model.current(match)
            assert current is not None and response.json()["id"] == match[1], self.where()
            assert response.headers.get("etag") == f'W/"{current.vid}"', f"{self.where()}: {what}"
            assert current.lu is not None
            self.check_last_modified(response, current.lu, what)
            self.check_content(response.json(), current, what)
        if version is None:
            return
        version.low, version.high = low, now_us()
        if not version.rid:
            self.own_id(version, response.json()["id"], what)
        self.model.add(version)
        if method == "DELETE":
            etag = response.headers.get("etag")
            assert etag in (None, f'W/"{version.vid}"'), f"{self.where()}: {what}: ETag {etag}"
        else:
            self.write_headers(response, version, what)

    def conditional_if_match(self, entry: dict[str, Any], rtype: str, ident: str) -> None:
        """If-Match on a conditional update or delete: the tag of the one match, or a wrong
        one, or any tag when nothing (or more than one) matches."""
        matches = self.model.matching(rtype, ident)
        current = self.model.current(matches[0]) if len(matches) == 1 else None
        right = current is not None and self.rng.random() < 0.6
        tag = f'W/"{current.vid}"' if right and current else f'W/"{self.rng.randint(1, 4)}"'
        entry["request"]["ifMatch"] = tag

    def own_id(self, version: Version, rid: str, what: str) -> None:
        """The id the server gave a resource it created: new, and in the content."""
        assert (version.rtype, rid) not in self.model.versions, f"{self.where()}: {what}: {rid}"
        version.rid = rid
        version.content = {**(version.content or {}), "id": rid}

    def op_conditional_create(self) -> None:
        self.conditional("POST")

    def op_conditional_update(self) -> None:
        self.conditional("PUT")

    def op_conditional_delete(self) -> None:
        self.conditional("DELETE")

    def op_bundle(self) -> None:
        """A transaction of creates and of updates, patches and deletes of distinct ids
        (If-Match right or wrong: one failing entry fails it whole, nothing written), now and
        then with a conditional create or update; or a batch of any of these, conditional
        deletes too, each entry on its own after the ones before it."""
        kind = self.rng.choice(["transaction", "batch"])
        entries: list[dict[str, Any]] = []
        used: set[tuple[str, str]] = set()
        for _ in range(self.rng.randint(2, 4)):
            rtype = self.rng.choice(TYPES)
            roll = self.rng.random()
            if roll < 0.3:
                body = self.body(rtype)
                request = {"method": "POST", "url": rtype}
                if kind == "batch" and self.rng.random() < 0.4:
                    request["ifNoneExist"] = self.criteria(body["identifier"][0]["value"])
                entries.append(
                    {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body, "request": request}
                )
                continue
            if kind == "batch" and roll < 0.45:
                ident = self.rng.choice(self.idents)
                method = self.rng.choice(["PUT", "DELETE"])
                url = f"{rtype}?{self.criteria(ident)}"
                entry: dict[str, Any] = {"request": {"method": method, "url": url}}
                if method == "PUT":
                    entry["resource"] = self.body(rtype, ident=ident)
                if self.rng.random() < 0.3:  # judged when the batch is sent: entries before
                    self.conditional_if_match(entry, rtype, ident)  # may change it (412 then)
                entries.append(entry)
                continue
            free = [k for k in self.keys(rtype) if k not in used or kind == "batch"]
            if not free:
                continue
            key = self.rng.choice(free)
            again, url = key in used, f"{key[0]}/{key[1]}"
            used.add(key)
            method = self.rng.choice(["PUT", "PUT", "PATCH", "DELETE"])
            entry = {"request": {"method": method, "url": url}}
            if_match = self.if_match(key) if self.rng.random() < 0.5 else None
            if if_match:
                entry["request"]["ifMatch"] = if_match
            if method == "PUT":
                if not again:  # bdl-7: one fullUrl per Bundle (a batch may name it twice)
                    entry["fullUrl"] = f"{self.base}/{url}"
                entry["resource"] = self.put_body(key)
            elif method == "PATCH":
                data = json.dumps(self.patch_ops()).encode()
                entry["resource"] = {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(data).decode(),
                }
            entries.append(entry)
        if kind == "transaction" and self.rng.random() < 0.5:
            self.add_conditional_entry(entries, used)
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        what = f"{kind} {[(e['request']['method'], e['request']['url']) for e in entries]}"
        low = now_us()
        response = self.http.post("", json=bundle, headers={"Content-Type": JSON})
        high = now_us()
        if kind == "batch":
            self.expect(response, 200, what)
            answers = response.json()["entry"]
            assert len(answers) == len(entries), f"{self.where()}: {what}: {answers}"
            for i, (entry, answer) in enumerate(zip(entries, answers, strict=True)):
                expected = self.expected_entry(entry)
                self.entry_result(f"{what} entry {i}", expected, answer["response"], low, high)
            return
        # a transaction runs DELETE, then POST, then PUT and PATCH (R4 http.html#trules);
        # its entries touch distinct resources, so each is judged on the state before it
        rank = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2}
        order = sorted(range(len(entries)), key=lambda i: rank[entries[i]["request"]["method"]])
        planned = {i: self.expected_entry(entries[i]) for i in order}
        failing = {planned[i][0] for i in order if planned[i][0] >= 400}
        if failing:  # one failing entry fails the whole Bundle (R4 http.html#transaction):
            # which one answers the spec leaves open (conditional ones resolve up front)
            assert response.status_code in failing, (
                f"{self.where()}: {what}: {response.status_code} (expected one of {failing})"
                f" {response.text}"
            )
            assert response.json()["resourceType"] == "OperationOutcome", self.where()
            return
        self.expect(response, 200, what)
        answers = response.json()["entry"]
        assert len(answers) == len(entries), f"{self.where()}: {what}: {answers}"
        written = [
            self.entry_result(f"{what} entry {i}", planned[i], answers[i]["response"], low, high)
            for i in order
        ]
        stamps = [v.lu or 0 for v in written if v is not None]  # in their processing order
        assert stamps == sorted(stamps), f"{self.where()}: {what}: {stamps}"

    def add_conditional_entry(
        self, entries: list[dict[str, Any]], used: set[tuple[str, str]]
    ) -> None:
        """A conditional create, update or delete by an identifier that no other entry of
        the transaction carries or changes, so that it resolves as it would alone."""
        carried = [e.get("resource") for e in entries]
        carried += [current.content for key in used if (current := self.model.current(key))]
        taken = {i.get("value") for c in carried if c for i in c.get("identifier", [])}
        free = [ident for ident in self.idents if ident not in taken]
        if not free:
            return
        ident = self.rng.choice(free)
        rtype = self.rng.choice(TYPES)
        body = self.body(rtype, ident=ident)
        method = self.rng.choice(["POST", "PUT", "DELETE"])
        if method == "POST":
            request = {"method": "POST", "url": rtype, "ifNoneExist": self.criteria(ident)}
            entries.append(
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body, "request": request}
            )
            return
        entry: dict[str, Any] = {
            "request": {"method": method, "url": f"{rtype}?{self.criteria(ident)}"}
        }
        if method == "PUT":
            entry["resource"] = body
        if self.rng.random() < 0.3:
            self.conditional_if_match(entry, rtype, ident)
        entries.append(entry)

    def expected_entry(self, entry: dict[str, Any]) -> tuple[int, Version | None]:
        request = entry["request"]
        method, url = request["method"], request["url"]
        if method == "POST" or "?" in url:
            return self.expected_conditional(entry)
        rtype, rid = url.split("/")
        payload: Any = entry.get("resource")
        if method == "PATCH":
            payload = json.loads(base64.b64decode(payload["data"]))
        return self.expected((rtype, rid), method, payload, request.get("ifMatch"))

    def entry_result(
        self, what: str, expected: tuple[int, Version | None], answer: dict[str, Any],
        low: int, high: int,
    ) -> Version | None:  # fmt: skip
        """A Bundle entry's response against the model: status; for a version written, its
        etag, location and lastModified (then it is the model's)."""
        status, version = expected
        assert answer["status"].split()[0] == str(status), (
            f"{self.where()}: {what}: {answer} (expected {status})"
        )
        if version is None:
            return None
        version.low, version.high = low, high
        if not version.rid:
            self.own_id(version, answer["location"].split("/")[1], what)
        assert answer.get("etag") == f'W/"{version.vid}"', f"{self.where()}: {what}: {answer}"
        if not version.deleted:
            assert answer.get("location") == (
                f"{version.rtype}/{version.rid}/_history/{version.vid}"
            ), f"{self.where()}: {what}: {answer}"
        self.learn(version, parse_us(answer["lastModified"]), what)
        self.model.add(version)
        return version

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


def test_a_version_number_with_a_leading_zero_names_no_version(client: httpx.Client) -> None:
    """Every seed: `GET Patient/x/_history/01` answered version 1 (whose meta.versionId is
    "1"); a versionId is a string, and "01" is none the server wrote (If-Match `W/"01"` is
    refused too)."""
    body = {"resourceType": "Patient", "active": True}
    rid = client.post("/Patient", json=body, headers={"Content-Type": JSON}).json()["id"]
    assert client.get(f"/Patient/{rid}/_history/1").status_code == 200
    for vid in ("01", "001", "+1"):
        response = client.get(f"/Patient/{rid}/_history/{vid}")
        assert response.status_code == 404, (vid, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


def test_a_conditional_update_with_if_match_that_matches_nothing_is_412(
    client: httpx.Client,
) -> None:
    """Seed 1, step 48: `PUT Patient?identifier=...` with `If-Match: W/"1"` and no match
    created a Patient (201): If-Match is false with nothing current (RFC 9110 13.1.1), as
    for a conditional delete, a PUT by id and a PUT whose body names an id. Alone, in a
    batch and in a transaction: nothing is written."""
    system = f"urn:histmodel:{uuid.uuid4().hex}"
    url = f"Patient?identifier={system}|none"
    body = {"resourceType": "Patient", "identifier": [{"system": system, "value": "none"}]}
    alone = client.put(f"/{url}", json=body, headers={"Content-Type": JSON, "If-Match": 'W/"1"'})
    assert alone.status_code == 412, alone.text
    for kind in ("batch", "transaction"):
        entry = {"resource": body, "request": {"method": "PUT", "url": url, "ifMatch": 'W/"1"'}}
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
        response = client.post("", json=bundle, headers={"Content-Type": JSON})
        status = (
            response.json()["entry"][0]["response"]["status"]
            if kind == "batch"
            else str(response.status_code)
        )
        assert status.startswith("412"), (kind, response.text)
    found = client.get("/Patient", params={"identifier": f"{system}|none"}).json()
    assert found.get("total", len(found.get("entry", []))) == 0, found
    # without If-Match it creates, as a conditional update that matches nothing does
    created = client.put(f"/{url}", json=body, headers={"Content-Type": JSON})
    assert created.status_code == 201, created.text
