"""Transport-free request and response: what the router speaks.

HTTP requests and Bundle entries both become a FhirRequest, so a transaction entry behaves
exactly like the same request sent alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from app.errors import information_outcome
from app.fhir.instants import to_http_date
from app.fhir.jsonio import RawJson
from app.fhir.storage import StoredVersion


@dataclass
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, no leading slash: "Patient/1/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None
    assigned_id: str | None = None  # transactions pre-assign ids for urn:uuid resolution
    fresh_id: bool = False  # assigned_id was minted by us (a new UUID), so it cannot clash
    # A transaction looked up (and locked) the target of this PUT up front, for all its PUTs
    # in one query: `current` is that row, or None when the id is new.
    prefetched: bool = False
    current: StoredVersion | None = None
    head: bool = False  # a Bundle entry's HEAD: handled as GET, answered without the content

    @classmethod
    def from_url(cls, method: str, url: str, **kwargs: Any) -> FhirRequest:
        parts = urlsplit(url)
        return cls(
            method=method.upper(),
            path=parts.path.strip("/"),
            query=parse_qsl(parts.query, keep_blank_values=True),
            **kwargs,
        )

    @property
    def segments(self) -> list[str]:
        return [s for s in self.path.split("/") if s]

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower())
        return value if value else None

    @property
    def query_string(self) -> str:
        return urlencode(self.query)


@dataclass
class FhirResponse:
    status: int
    body: Any = None  # dict (may embed RawJson), RawJson, or None
    headers: dict[str, str] = field(default_factory=dict)
    version: StoredVersion | None = None  # the resource version this response is about

    @classmethod
    def for_version(cls, base_url: str, version: StoredVersion, status: int = 200) -> FhirResponse:
        return cls(
            status=status,
            body=RawJson(version.content) if version.content is not None else None,
            headers=version_headers(base_url, version, location=status == 201),
            version=version,
        )


def version_headers(base_url: str, version: StoredVersion, *, location: bool) -> dict[str, str]:
    headers = {
        "ETag": f'W/"{version.version_id}"',
        "Last-Modified": to_http_date(version.last_updated),
    }
    if location:
        headers["Location"] = f"{base_url}/{version_url(version)}"
    return headers


def version_url(version: StoredVersion) -> str:
    return f"{version.resource_type}/{version.id}/_history/{version.version_id}"


def write_outcome(method: str, response: FhirResponse) -> dict[str, Any] | None:
    """What `Prefer: return=OperationOutcome` answers for a write (R4 http.html#ops), as the
    body of a single request or the `response.outcome` of a Bundle entry; None when
    `response` is not about a version written (a read, a delete without one)."""
    version = response.version
    if method not in ("POST", "PUT", "PATCH") or version is None:
        return None
    name = f"{version.resource_type}/{version.id}"
    if method == "POST" and response.status == 200:  # If-None-Exist matched
        return information_outcome(
            f"{name} (version {version.version_id}) matches If-None-Exist; nothing was created"
        )
    verb = "created" if response.status == 201 else "updated"
    return information_outcome(f"{name} {verb} (version {version.version_id})")


def return_preference(prefer: str | None) -> str:
    """The `return` of a Prefer header: minimal, OperationOutcome or representation.
    Preferences are separated by commas and their parameters by semicolons (RFC 7240)."""
    for part in re.split(r"[,;]", prefer or ""):
        name, _, value = part.strip().partition("=")
        if name.strip() == "return" and value.strip().strip('"') in PREFER_RETURNS:
            return value.strip().strip('"')
    return "representation"


PREFER_RETURNS = ("minimal", "OperationOutcome", "representation")

__all__ = [
    "FhirRequest",
    "FhirResponse",
    "RawJson",
    "return_preference",
    "version_headers",
    "version_url",
    "write_outcome",
]
