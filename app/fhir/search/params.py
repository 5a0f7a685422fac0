"""A parsed search query: criteria, plus the result-shaping parameters (_count, _sort, ...)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlencode

from app.errors import InvalidRequest

SUPPORTED_CRITERIA = {"_id": "token", "identifier": "token", "_lastUpdated": "date"}
RESULT_PARAMS = {
    "_count",
    "_sort",
    "_total",
    "_summary",
    "_elements",
    "_page",
    "_format",
    "_pretty",
}
SORTABLE = {"_id", "_lastUpdated"}


@dataclass(frozen=True)
class Criterion:
    name: str
    modifier: str | None
    values: tuple[str, ...]  # comma-separated alternatives (OR)


@dataclass(frozen=True)
class SearchParams:
    criteria: tuple[Criterion, ...] = ()
    count: int | None = None
    sort: tuple[str, ...] = ()
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    page: tuple[object, ...] | None = None  # decoded keyset cursor
    ignored: tuple[str, ...] = field(default=())

    @classmethod
    def parse_query(cls, query: str, *, strict: bool = False) -> SearchParams:
        return cls.parse(parse_qsl(query, keep_blank_values=True), strict=strict)

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]], *, strict: bool = False) -> SearchParams:
        criteria: list[Criterion] = []
        ignored: list[str] = []
        shaping: dict[str, str] = {}
        for key, value in pairs:
            name, _, modifier = key.partition(":")
            if name in RESULT_PARAMS:
                shaping[name] = value
            elif name in SUPPORTED_CRITERIA and not modifier:
                criteria.append(Criterion(name, None, tuple(value.split(","))))
            elif strict:
                raise InvalidRequest(f"search parameter '{key}' is not supported", expression=key)
            else:
                ignored.append(key)
        return cls(
            criteria=tuple(criteria),
            count=_int_param(shaping, "_count"),
            sort=_sort_param(shaping.get("_sort"), strict),
            total=shaping.get("_total"),
            summary=shaping.get("_summary"),
            elements=tuple(e for e in shaping.get("_elements", "").split(",") if e),
            page=_decode_cursor(shaping["_page"]) if "_page" in shaping else None,
            ignored=tuple(ignored),
        )

    def with_count(self, count: int) -> SearchParams:
        return replace(self, count=count)

    def criteria_pairs(self) -> list[tuple[str, str]]:
        return [
            (c.name + (f":{c.modifier}" if c.modifier else ""), ",".join(c.values))
            for c in self.criteria
        ]

    def query_string(self) -> str:
        return urlencode(self.criteria_pairs())

    def link_pairs(self) -> list[tuple[str, str]]:
        """What a paging link repeats: the understood criteria and shaping (never ignored ones)."""
        pairs = self.criteria_pairs()
        if self.sort:
            pairs.append(("_sort", ",".join(self.sort)))
        for name, value in (("_total", self.total), ("_summary", self.summary)):
            if value:
                pairs.append((name, value))
        if self.elements:
            pairs.append(("_elements", ",".join(self.elements)))
        return pairs


def _int_param(shaping: dict[str, str], name: str) -> int | None:
    if name not in shaping:
        return None
    try:
        value = int(shaping[name])
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an integer", expression=name) from exc
    if value < 0:
        raise InvalidRequest(f"{name} must not be negative", expression=name)
    return value


def _sort_param(value: str | None, strict: bool) -> tuple[str, ...]:
    if not value:
        return ()
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for key in keys:
        if key.lstrip("-") not in SORTABLE:
            raise InvalidRequest(f"cannot sort by '{key}'", expression="_sort")
    return keys


def encode_cursor(values: tuple[object, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[object, ...]:
    try:
        padded = token + "=" * (-len(token) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, json.JSONDecodeError) as exc:
        raise InvalidRequest("_page is not a valid paging token", expression="_page") from exc
    if not isinstance(values, list):
        raise InvalidRequest("_page is not a valid paging token", expression="_page")
    return tuple(values)
