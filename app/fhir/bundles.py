"""Response Bundles: searchset and history, with paging links."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from app.fhir.exchange import RawJson
from app.fhir.instants import to_instant
from app.fhir.search import SearchParams, SearchResult
from app.fhir.search.params import encode_cursor
from app.fhir.storage import StoredVersion, now_us


def new_bundle(bundle_type: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": to_instant(now_us())},
        "type": bundle_type,
    }


def searchset(
    base_url: str,
    path: str,
    params: SearchParams,
    result: SearchResult,
    issues: dict[str, Any] | None,
    extra_pairs: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    bundle = new_bundle("searchset")
    if result.total is not None:
        bundle["total"] = result.total
    pairs = (extra_pairs or []) + params.link_pairs()
    if params.count is not None:
        pairs.append(("_count", str(params.count)))
    self_pairs = pairs + ([("_page", _page_token(params))] if params.page else [])
    links = [{"relation": "self", "url": _url(base_url, path, self_pairs)}]
    for relation, token in (("next", result.next_page), ("previous", result.previous_page)):
        if token:
            links.append(
                {"relation": relation, "url": _url(base_url, path, [*pairs, ("_page", token)])}
            )
    bundle["link"] = links
    entries = [_search_entry(base_url, v, "match") for v in result.versions]
    entries += [_search_entry(base_url, v, "include") for v in result.included]
    if issues:
        entries.append({"resource": issues, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _search_entry(base_url: str, v: StoredVersion, mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base_url}/{v.resource_type}/{v.id}",
        "resource": RawJson(v.content or b"{}"),
        "search": {"mode": mode},
    }


def _page_token(params: SearchParams) -> str:
    return encode_cursor(params.page or {})


def history(
    base_url: str,
    path: str,
    pairs: list[tuple[str, str]],
    versions: list[StoredVersion],
    next_token: str | None,
    total: int | None = None,
) -> dict[str, Any]:
    bundle = new_bundle("history")
    if total is not None:
        bundle["total"] = total
    links = [{"relation": "self", "url": _url(base_url, path, pairs)}]
    if next_token:
        base_pairs = [(k, v) for k, v in pairs if k != "_page"]
        links.append(
            {"relation": "next", "url": _url(base_url, path, base_pairs + [("_page", next_token)])}
        )
    bundle["link"] = links
    if versions:
        bundle["entry"] = [_history_entry(base_url, v) for v in versions]
    return bundle


def _history_entry(base_url: str, v: StoredVersion) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{v.resource_type}/{v.id}"}
    if v.content is not None:
        entry["resource"] = RawJson(v.content)
    method = {"POST": "POST", "PUT": "PUT", "PATCH": "PATCH", "DELETE": "DELETE"}.get(
        v.method, "PUT"
    )
    url = v.resource_type if method == "POST" else f"{v.resource_type}/{v.id}"
    entry["request"] = {"method": method, "url": url}
    # `created` is stored with the version (a PUT after a delete is a create too); a row
    # written before migration 0022 has none, and is answered as the row alone shows.
    created = v.created if v.created is not None else method == "POST" or v.version_id == 1
    status = "201 Created" if created else "200 OK"
    if method == "DELETE":
        status = "204 No Content"
    entry["response"] = {
        "status": status,
        "etag": f'W/"{v.version_id}"',
        "lastModified": to_instant(v.last_updated),
    }
    return entry


def _url(base_url: str, path: str, pairs: list[tuple[str, str]]) -> str:
    url = f"{base_url}/{path}" if path else base_url
    return f"{url}?{urlencode(pairs)}" if pairs else url
