"""A parsed search query: criteria (possibly chained / reverse-chained) plus result shaping.

name[:modifier]=v1,v2          one criterion, values ORed; repeating the name ANDs
subject:Patient.name=x         chain: a criterion on the referenced resource (any depth)
_has:Observation:subject:code=x  reverse chain: resources referenced *by* a matching one
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlencode

from app.errors import InvalidRequest
from app.fhir import bindings
from app.fhir.nul import refuse_nul
from app.fhir.search.definitions import SearchParamDef, params_for
from app.fhir.search.element_types import check_boolean, may_return
from app.fhir.search.implied import implied_system
from app.fhir.search.indexer import composite_kinds, indexed_param
from app.fhir.search.limits import check_size
from app.fhir.search.special import (
    CONTAINED_PARAMS,
    check_contained,
    named_query_refused,
    not_supported,
)

RESULT_PARAMS = {
    "_count", "_sort", "_total", "_summary", "_elements", "_page", "_format", "_pretty",
    "_include", "_revinclude",
}  # fmt: skip
RESOURCE_COLUMNS = {"_id": "token", "_lastUpdated": "date"}
WILDCARD = "*"  # _include / _revinclude: any reference parameter
# One AuditEvent is written per access, each referring to what was accessed: `_revinclude=*`
# would return a resource's access log (growing with every such search). Asked by name
# (_revinclude=AuditEvent:entity), it is still included.
WILDCARD_REVINCLUDE_SKIPS = ("AuditEvent",)
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "missing"},
    "reference": {"identifier", "missing"},  # plus :[Type]
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}

# _id and _lastUpdated are columns of the resource table: only these modifiers apply to them.
RESOURCE_COLUMN_MODIFIERS = {"_id": {"not", "missing"}, "_lastUpdated": {"missing"}}
# Every modifier R4 defines (besides a reference's :[Type]): asked for and not supported here
# is "not-supported"; anything else is simply invalid.
FHIR_MODIFIERS = {"missing", "exact", "contains", "text", "not", "above", "below", "in",
                  "not-in", "of-type", "identifier"}  # fmt: skip
IDENTIFIER = frozenset({"Identifier"})
REFERENCE = frozenset({"Reference"})


class UnsupportedParameter(InvalidRequest):
    """A parameter this server does not know for the type: ignored in lenient handling."""


class UnsupportedModifier(InvalidRequest):
    """A modifier (or reference :Type) that is unknown, not supported, or not valid on the
    parameter. Never ignored, even in lenient handling: without it the criterion would mean
    something else (Patient?name:foo=x is not Patient?name=x)."""

    def __init__(self, message: str, *, expression: str, fhir_defined: bool = False) -> None:
        super().__init__(message, expression=expression)
        self.expression, self.fhir_defined = expression, fhir_defined
        if fhir_defined:  # a modifier of the FHIR specification that this server lacks
            self.issues = [replace(i, code="not-supported") for i in self.issues]

    def under(self, prefix: str) -> UnsupportedModifier:
        """The same refusal, located in the whole chained key (`subject.` + `name:foo`)."""
        return UnsupportedModifier(
            self.message, expression=prefix + self.expression, fhir_defined=self.fhir_defined
        )


@dataclass(frozen=True)
class Criterion:
    name: str  # the parameter code
    kind: str  # its type: token, string, reference, date, number, quantity, uri
    modifier: str | None = None
    values: tuple[str, ...] = ()
    # A chain (subject.name=x) or a reverse chain (_has): the criterion on the other resource,
    # as written (for a chain: parsed on the first target type that has the parameter) ...
    chain: Criterion | None = None
    # ... and for a chain, per target type searched, the criterion parsed on that type,
    targets: tuple[tuple[str, Criterion], ...] = ()
    chain_type: str | None = None  # those types joined by "|" (what the chain reaches) and
    named_type: str | None = None  # the type named in subject:Patient.x, if one is
    has_type: str | None = None  # _has: the referring type ...
    has_param: str | None = None  # ... and its reference parameter pointing at us
    implied_system: str | None = None  # a token on a code element: its value set's system

    def key(self) -> str:
        """The query-string key this criterion came from, as written (paging links repeat
        it, so it must parse to the same criterion again)."""
        if self.name == LIST:
            return LIST
        if self.has_type:
            assert self.chain is not None
            return f"_has:{self.has_type}:{self.has_param}:{self.chain.key()}"
        if self.chain is not None:
            head = self.name + (f":{self.named_type}" if self.named_type else "")
            return f"{head}.{self.chain.key()}"
        return self.name + (f":{self.modifier}" if self.modifier else "")

    def leaf(self) -> Criterion:
        return self.chain.leaf() if self.chain is not None else self


@dataclass(frozen=True)
class Include:
    source_type: str  # or WILDCARD: any type (`_include=*`)
    param: str  # or WILDCARD: every reference parameter (`Type:*`, `*`)
    target_type: str | None
    iterate: bool
    reverse: bool

    def value(self) -> str:
        if self.source_type == WILDCARD:
            return WILDCARD
        return ":".join(p for p in (self.source_type, self.param, self.target_type) if p)

    def returned_types(self) -> tuple[str, ...]:
        """The types whose resources this include may return, as alternatives (what an access
        check must consider); a wildcard or an untyped reference may return several."""
        if self.reverse:
            if self.source_type != WILDCARD:
                return (self.source_type,)
            return tuple(sorted(bindings.resource_types() - set(WILDCARD_REVINCLUDE_SKIPS)))
        if self.target_type:
            return (self.target_type,)
        sources = bindings.resource_types() if self.source_type == WILDCARD else {self.source_type}
        found: set[str] = set()
        for source in sources:
            for code, param in params_for(source).items():
                if param.type == "reference" and self.param in (WILDCARD, code):
                    found.update(param.targets or bindings.resource_types())
        return tuple(sorted(found))


@dataclass(frozen=True)
class SearchParams:
    criteria: tuple[Criterion, ...] = ()
    count: int | None = None
    sort: tuple[str, ...] = ()
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    page: dict[str, object] | None = None  # decoded keyset cursor
    includes: tuple[Include, ...] = ()
    ignored: tuple[str, ...] = field(default=())

    @classmethod
    def parse_query(cls, query: str, rtype: str, *, strict: bool = False) -> SearchParams:
        return cls.parse(parse_qsl(query, keep_blank_values=True), rtype, strict=strict)

    @classmethod
    def parse(
        cls, pairs: list[tuple[str, str]], rtype: str, *, strict: bool = False
    ) -> SearchParams:
        criteria: list[Criterion] = []
        ignored: list[str] = []
        shaping: dict[str, str] = {}
        includes: list[Include] = []
        for key, value in pairs:
            refuse_nul(key + value, key)
            base = key.split(":")[0]
            if base == "_query":
                raise named_query_refused(value)
            if base in CONTAINED_PARAMS:
                check_contained(base, value)
                continue
            if base in ("_include", "_revinclude"):
                includes.append(_parse_include(key, value))
            elif base in RESULT_PARAMS:
                shaping[base] = value
            else:
                try:
                    criteria.append(parse_criterion(rtype, key, value))
                except UnsupportedParameter:
                    if strict:
                        raise
                    ignored.append(key)
        sort = _sort_param(rtype, shaping.get("_sort"))
        check_size(criteria, len(sort))
        if shaping.get("_summary") == "text" and includes:
            # R4 search 3.1.1.5.8: _include and _revinclude cannot be mixed with _summary=text.
            key = "_revinclude" if includes[0].reverse else "_include"
            raise InvalidRequest(f"{key} cannot be combined with _summary=text", expression=key)
        return cls(
            criteria=tuple(criteria),
            count=_int_param(shaping, "_count"),
            sort=sort,
            total=_choice(shaping, "_total", {"none", "estimate", "accurate"}),
            summary=shaping.get("_summary"),
            elements=tuple(e for e in shaping.get("_elements", "").split(",") if e),
            page=decode_cursor(shaping["_page"]) if shaping.get("_page") else None,
            includes=tuple(includes),
            ignored=tuple(ignored),
        )

    def with_count(self, count: int) -> SearchParams:
        return replace(self, count=count)

    def criteria_pairs(self) -> list[tuple[str, str]]:
        return [(c.key(), join_values(c.leaf().values)) for c in self.criteria]

    def query_string(self) -> str:
        return urlencode(self.criteria_pairs())

    def link_pairs(self) -> list[tuple[str, str]]:
        """What a paging link repeats: understood criteria and shaping (never ignored ones)."""
        pairs = self.criteria_pairs()
        if self.sort:
            pairs.append(("_sort", ",".join(self.sort)))
        for name, value in (("_total", self.total), ("_summary", self.summary)):
            if value:
                pairs.append((name, value))
        if self.elements:
            pairs.append(("_elements", ",".join(self.elements)))
        for inc in self.includes:
            name = "_revinclude" if inc.reverse else "_include"
            pairs.append((name + (":iterate" if inc.iterate else ""), inc.value()))
        return pairs


def lookup(rtype: str, code: str) -> tuple[str, SearchParamDef | None]:
    """(kind, definition) of a parameter of rtype, or raise UnsupportedParameter."""
    if code in RESOURCE_COLUMNS:
        return RESOURCE_COLUMNS[code], None
    param = params_for(rtype).get(code)
    if param is None or not indexed_param(rtype, param):
        raise UnsupportedParameter(
            f"search parameter '{code}' is not supported for {rtype}", expression=code
        )
    if param.type == "composite":  # "composite:quantity": the second component's type
        kinds = composite_kinds(rtype, param)
        assert kinds is not None
        return f"composite:{kinds[1]}", param
    return param.type, param


def parse_criterion(rtype: str, key: str, value: str) -> Criterion:
    if key.startswith("_has:"):
        return _parse_has(rtype, key, value)
    if key.split(":")[0] == LIST:
        return _parse_list(key, value)
    head, dot, rest = key.partition(".")
    name, _, modifier = head.partition(":")
    kind, param = lookup(rtype, name)
    if dot:
        return _parse_chain(rtype, name, kind, param, modifier or None, rest, value)
    if modifier:
        _check_modifier(rtype, name, kind, param, modifier)
    if modifier == "missing" and value not in ("true", "false"):
        raise InvalidRequest(f"{key} must be true or false", expression=key)
    values = tuple(_split_values(value))
    if not values:
        raise InvalidRequest(f"search parameter '{key}' has no value", expression=key)
    if kind == "token" and modifier in ("", "not"):
        check_boolean(rtype, name, key, values)
    implied = implied_system(rtype, name) if kind == "token" else None
    return Criterion(name, kind, modifier or None, values, implied_system=implied)


def _check_modifier(
    rtype: str, name: str, kind: str, param: SearchParamDef | None, modifier: str
) -> None:
    if kind == "reference" and modifier[:1].isupper():
        assert param is not None
        _check_target(rtype, name, param, modifier)
        return
    allowed = RESOURCE_COLUMN_MODIFIERS.get(name) or MODIFIERS.get(kind.split(":")[0], set())
    if modifier == "of-type" and not may_return(rtype, name, IDENTIFIER):
        allowed = set()  # R4 search, token: :of-type is for Identifier elements only
    if modifier == "identifier" and not may_return(rtype, name, REFERENCE):
        # A canonical (or a nested Resource) has no identifier apart from what it names: on
        # such a parameter (QuestionnaireResponse.questionnaire) :identifier matched nothing
        allowed = set()
    if modifier not in allowed:
        raise UnsupportedModifier(
            f"the '{name}' parameter has the modifier '{modifier}', which is not supported "
            f"on {rtype}.{name}",
            expression=f"{name}:{modifier}",
            fhir_defined=modifier in FHIR_MODIFIERS,
        )


def _check_target(rtype: str, name: str, param: SearchParamDef, target: str) -> None:
    """`name:Type` (a reference's :Type modifier, or the type of a chain link)."""
    if not _can_refer_to(param.targets, target):
        raise UnsupportedModifier(
            f"{rtype}.{name} cannot refer to '{target}' (it refers to "
            f"{', '.join(param.targets) or 'any resource type'})",
            expression=f"{name}:{target}",
        )


def _can_refer_to(targets: tuple[str, ...], target: str) -> bool:
    """A resource type a reference parameter with these targets may point at (one that
    declares none: any type)."""
    return target in bindings.resource_types() and (not targets or target in targets)


def _parse_chain(
    rtype: str, name: str, kind: str, param: SearchParamDef | None, type_modifier: str | None,
    rest: str, value: str,
) -> Criterion:  # fmt: skip
    """`name[:Type].rest`: `rest` parsed on each target type that has it (on the named type
    only, if there is one); the chain matches a reference to a matching resource of any of
    them. Refused only when no target type has the parameter."""
    if kind != "reference" or param is None:
        raise UnsupportedParameter(
            f"'{name}' is not a reference: it cannot be chained", expression=name
        )
    if type_modifier:
        _check_target(rtype, name, param, type_modifier)
    head = f"{name}:{type_modifier}" if type_modifier else name
    targets: list[tuple[str, Criterion]] = []
    refusal: UnsupportedModifier | None = None
    for target in [type_modifier] if type_modifier else param.targets:
        try:
            targets.append((target, parse_criterion(target, rest, value)))
        except UnsupportedParameter:
            continue
        except UnsupportedModifier as exc:  # may be fine on another target type
            refusal = refusal or exc.under(f"{head}.")
    if not targets:
        raise refusal or UnsupportedParameter(
            f"cannot chain '{rest}' through '{name}'", expression=f"{name}.{rest}"
        )
    return Criterion(
        name, kind, chain=targets[0][1], targets=tuple(targets),
        chain_type="|".join(t for t, _ in targets), named_type=type_modifier,
    )  # fmt: skip


def _parse_has(rtype: str, key: str, value: str) -> Criterion:
    parts = key.split(":", 3)
    if len(parts) != 4:
        raise UnsupportedParameter(f"'{key}' must be _has:Type:reference:parameter", expression=key)
    _, source_type, ref_param, rest = parts
    kind, param = lookup(source_type, ref_param) if params_for(source_type) else ("", None)
    if kind != "reference" or param is None:
        raise UnsupportedParameter(
            f"'{source_type}:{ref_param}' is not a reference parameter", expression=key
        )
    if param.targets and rtype not in param.targets:
        # Never ignored, as a reference's :Type it cannot refer to is not: ignored, the
        # criterion that no resource can meet would let every resource through.
        raise UnsupportedModifier(
            f"{source_type}.{ref_param} cannot refer to {rtype} (it refers to "
            f"{', '.join(param.targets)})",
            expression=f"_has:{source_type}:{ref_param}",
        )
    try:
        inner = parse_criterion(source_type, rest, value)
    except UnsupportedModifier as exc:
        raise exc.under(f"_has:{source_type}:{ref_param}:") from None
    return Criterion("_has", "reference", chain=inner, has_type=source_type, has_param=ref_param)


# R4 search.html#list: `_list=42` is the resources that List/42 names in `List.entry.item`,
# i.e. `_has:List:item:_id=42`, searched as that (index rows; the caller must be allowed to
# search Lists, as for any _has). Functional lists (`$current-allergies`) name no List here.
LIST = "_list"


def _parse_list(key: str, value: str) -> Criterion:
    if key != LIST:
        raise UnsupportedModifier(f"{key}: _list takes no modifier", expression=key)
    ids = tuple(_split_values(value))
    if not ids:
        raise InvalidRequest("search parameter '_list' has no value", expression=LIST)
    functional = [i for i in ids if i.startswith("$")]
    if functional:
        raise not_supported(
            f"_list={functional[0]}: functional lists are not supported (only the id of a "
            "List resource)",
            LIST,
        )
    inner = Criterion("_id", "token", values=ids)
    return Criterion(LIST, "reference", chain=inner, has_type="List", has_param="item")


def _split_values(value: str) -> list[str]:
    """Comma separates alternatives; '\\,' is a literal comma."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
            current += char
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    # Only the comma escape is resolved here; "\\|", "\\$" and "\\\\" are resolved per type
    # in criteria.py (split_token / unescape), where "|" may still be a separator.
    return [p.replace("\\,", ",") for p in parts if p != ""]


def join_values(values: tuple[str, ...]) -> str:
    """The inverse of _split_values. Values had their "\\," resolved when split, so commas are
    escaped again: otherwise a paging link (or a chain re-parsed per target type) would turn
    the one value "a\\,b" into the two alternatives "a" and "b"."""
    return ",".join(v.replace(",", "\\,") for v in values)


def _parse_include(key: str, value: str) -> Include:
    """`Type:param[:Target]`; `Type:*[:Target]` for every reference parameter of Type; `*`
    for every reference parameter of any type (R4 search.html#include)."""
    _, _, modifier = key.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise UnsupportedModifier(
            f"{key}: the modifier '{modifier}' is not supported (only :iterate)", expression=key
        )
    reverse = key.startswith("_revinclude")
    iterate = modifier != ""
    if value == WILDCARD:
        return Include(WILDCARD, WILDCARD, None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InvalidRequest(
            f"{key}={value} must be Type:parameter[:targetType] or *", expression=key
        )
    source_type, name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    param = None
    if name == WILDCARD:
        if not params_for(source_type):
            raise InvalidRequest(f"{key}: '{source_type}' is not a resource type", expression=key)
    else:
        kind, param = lookup(source_type, name)
        if kind != "reference" or param is None:
            raise InvalidRequest(
                f"{key}: '{source_type}:{name}' is not a reference parameter", expression=key
            )
    if target is not None and not _can_refer_to(param.targets if param else (), target):
        raise InvalidRequest(
            f"{key}: {source_type}:{name} cannot refer to '{target}'", expression=key
        )
    return Include(source_type, name, target, iterate, reverse)


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


def _choice(shaping: dict[str, str], name: str, allowed: set[str]) -> str | None:
    value = shaping.get(name)
    if value is not None and value not in allowed:
        raise InvalidRequest(f"{name} must be one of {sorted(allowed)}", expression=name)
    return value


def _sort_param(rtype: str, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for key in keys:
        try:
            kind, _ = lookup(rtype, key.lstrip("-"))
        except UnsupportedParameter as error:  # located in _sort, where the key was written
            raise InvalidRequest(
                f"cannot sort by '{key}': {error.message}", expression="_sort"
            ) from error
        if kind.startswith("composite"):
            raise InvalidRequest(f"cannot sort by '{key}'", expression="_sort")
    return keys


def encode_cursor(cursor: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> dict[str, object]:
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode())
        refuse_nul(raw.decode().replace("\\u0000", "\x00"), "_page")
        cursor = json.loads(raw)
    except (ValueError, json.JSONDecodeError) as exc:
        raise InvalidRequest("_page is not a valid paging token", expression="_page") from exc
    if not isinstance(cursor, dict):
        raise InvalidRequest("_page is not a valid paging token", expression="_page")
    return cursor
