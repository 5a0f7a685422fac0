"""Pure edits of FHIR JSON made while applying a mapped message (no database, no door):
cleaning the plan's strings, rewriting references, merging an upsert into the stored resource,
and Patient.link surgery for merges. Kept apart from apply.py so that the applier reads as
the sequence of door interactions it is."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

from app.fhir.core_rules import CONTROL_CHARACTER
from app.fhir.instants import to_instant
from hl7_adapters.ack import AckError
from hl7_adapters.mapping.plan import MappingResult, Merge, Parts, Planned


class UnresolvedReference(ValueError):
    """A planned resource refers to a urn:uuid: no earlier planned resource has."""


# FHIR strings "SHALL NOT contain Unicode character points below 32, except for u0009
# (horizontal tab), u0010 (carriage return) and u0013 (line feed)"; PostgreSQL refuses NUL;
# and U+FFFE / U+FFFF, which XML cannot hold: what the door refuses (app.fhir.core_rules).
_FORBIDDEN = CONTROL_CHARACTER
CONTROL_CHARACTERS = AckError(
    102, "control characters (and U+FFFE/U+FFFF) removed from values: FHIR cannot hold them", "W"
)


def fhir_strings(result: MappingResult) -> tuple[MappingResult, bool]:
    """The plan with every control character FHIR forbids removed from its values and match
    queries (a mutated or broken feed sends them), and whether any was."""
    found: list[bool] = []

    def clean(node: Any) -> Any:
        if isinstance(node, str):
            if node.isprintable() or not _FORBIDDEN.search(node):
                return node
            found.append(True)
            return _FORBIDDEN.sub("", node)
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    def query(text: str | None) -> str | None:  # URL-encoded: %00 is a NUL too
        if text is None:
            return None
        pairs = parse_qsl(text, keep_blank_values=True)
        if not any(_FORBIDDEN.search(v) for _, v in pairs):
            return text
        found.append(True)
        return urlencode([(k, _FORBIDDEN.sub("", v)) for k, v in pairs], quote_via=quote)

    planned = [
        dataclasses.replace(p, resource=clean(p.resource), match=query(p.match))
        for p in result.planned
    ]
    merges = [
        dataclasses.replace(m, survivor=query(m.survivor) or "", retired=query(m.retired) or "")
        for m in result.merges
    ]
    if not found:
        return result, False
    return dataclasses.replace(result, planned=planned, merges=merges), True


def without_server_elements(resource: dict[str, Any]) -> dict[str, Any]:
    """Without what the server owns: the id, and meta but for the security labels a mapping
    may set (PV2-22)."""
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    security = (resource.get("meta") or {}).get("security")
    if security:
        out["meta"] = {"security": security}
    return out


def rewrite(node: Any, resolved: dict[str, str]) -> Any:
    """A copy of `node` with every urn:uuid: reference replaced by the Type/id it became."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith("urn:uuid:"):
                if value not in resolved:
                    raise UnresolvedReference(f"mapping refers to {value} before it exists")
                out[key] = resolved[value]
            else:
                out[key] = rewrite(value, resolved)
        return out
    if isinstance(node, list):
        return [rewrite(item, resolved) for item in node]
    return node


def merge_elements(
    stored: dict[str, Any],
    mapped: dict[str, Any],
    nulls: frozenset[str],
    keep: tuple[str, ...],
    parts: dict[str, Parts] | None = None,
) -> dict[str, Any]:
    """Mapped top-level elements replace stored ones; `nulls` go; the rest (and `keep`) stays.

    An element of `parts` (plan.Parts: one the mapping builds from several HL7 fields) is
    merged part by part instead, so that a field the message left empty keeps its part of
    the stored element (HL7 v2: empty means "no change"). ``extension`` is always merged per
    URL. A null may name a child of a top-level element (``period.end``): that child and its
    ``_end`` go, its siblings stay (A13 ends a discharge this way); or one part of a list
    (``extension[<url>]``, ``location[PV1-6]``): those entries go. An element left empty goes
    too. ``meta`` keeps what the message does not send, its ``security`` labels merged per
    system.
    """
    parts = {"extension": _BY_URL, **parts} if parts else _EXTENSIONS_ONLY
    merged = dict(stored)
    siblings = _choice_siblings(str(stored.get("resourceType") or mapped.get("resourceType")))
    touched: set[str] = set()
    for key, unfolding in parts.items():  # a child made by another field as its own entry
        if unfolding.unfold is not None and isinstance(merged.get(key), list):
            merged[key] = unfolding.unfold(merged[key])
            touched.add(key)  # settle folds it back
    for key, value in mapped.items():
        if key in keep:
            continue
        part = parts.get(key)
        if part is not None and part.default_only and key in stored:
            continue
        if key == "meta":
            merged[key] = _merged_meta(stored.get(key), value)
        elif part is not None and part.key is not None and isinstance(value, list):
            sent = part.unfold(value) if part.unfold is not None else value
            merged[key] = _merged_list(merged.get(key), sent, part.key, part, alike=value)
        elif part is not None and isinstance(value, dict):
            merged[key] = _merged_children(stored.get(key), value)
        else:
            merged[key] = value
            for other in siblings.get(key, ()):  # effectiveDateTime replaces effectivePeriod
                merged.pop(other, None)
        touched.add(key)
    for path in nulls:
        key, bracket, name = path.partition("[")
        key, _, child = key.partition(".")
        if key in keep:
            continue
        touched.add(key)
        if bracket:  # "reaction[AL1-5]", or one child of its entries: "reaction[AL1-5].severity"
            name, _, child = name.partition("]")
            part_key = parts[key].key if key in parts else None
            if part_key is not None:
                _drop_part(merged, key, name, part_key, child.removeprefix("."))
        elif not child:
            merged.pop(key, None)
        elif isinstance(merged.get(key), dict):
            rest = {k: v for k, v in merged[key].items() if k not in (child, "_" + child)}
            if rest:
                merged[key] = rest
            else:
                del merged[key]
    return settled(merged, parts, touched)


def settled(
    resource: dict[str, Any], parts: dict[str, Parts], keys: set[str] | None = None
) -> dict[str, Any]:
    """`resource` with each element of `keys` (None: all) made consistent by its Parts'
    ``settle``: a merged Period's ends kept orderable (mapping/periods.py), a PID-12 county
    folded back into its address, a reaction without manifestation dropped. Also for a new
    resource, whose mapped elements may be parts that only a stored element completes."""
    for key, part in parts.items():
        if part.settle is None or (keys is not None and key not in keys):
            continue
        if resource.get(key) is not None:
            value = part.settle(resource[key])
            if value in ({}, []):
                resource.pop(key)
            else:
                resource[key] = value
    return resource


def _url(extension: dict[str, Any]) -> str | None:
    return extension.get("url")


# Extensions are replaced per URL: the message's own URLs replace the stored extensions of
# those URLs, extensions of any other URL (another channel's, another field's) stay.
_BY_URL = Parts(key=_url)
_EXTENSIONS_ONLY = {"extension": _BY_URL}


def _merged_list(
    stored: Any,
    mapped: list[dict[str, Any]],
    key: Callable[[dict[str, Any]], str | None],
    parts: Parts,
    alike: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The stored entries with those of each part the message sends replaced by its entries,
    in place (the first stored entry of a part is where its new entries go; a new part's go
    last), so that a message re-sending what is stored writes no new version. With
    ``parts.unmarked``, a stored entry of no part (``across_parts``: or of a part not sent)
    that compares equal to a sent entry, or to one of `alike` (the sent entries before
    Parts.unfold), belongs to that entry's part: replaced, not duplicated. With
    ``parts.children`` a part's entry sent is merged into its stored one child by child."""
    unmarked = parts.unmarked
    sent: dict[str | None, list[dict[str, Any]]] = {}
    for entry in mapped:
        sent.setdefault(key(entry), []).append(entry)
    former = [(unmarked(e), key(e)) for e in (*mapped, *alike)] if unmarked is not None else []
    out: list[dict[str, Any]] = []
    for entry in stored if isinstance(stored, list) else []:
        part = key(entry) if isinstance(entry, dict) else None
        unsent = part is None or (parts.across_parts and part not in sent)
        if unmarked is not None and unsent and isinstance(entry, dict):
            same = unmarked(entry)
            part = next((p for old, p in former if old == same), part)
        if part not in sent:
            out.append(entry)
        elif sent[part]:  # the part's first stored entry: the new ones go here, once
            if parts.children and isinstance(entry, dict):
                out.extend(_merged_children(entry, e) for e in sent[part])
            else:
                out.extend(sent[part])
            sent[part] = []
    for entries in sent.values():
        out.extend(entries)
    return out


def _merged_children(stored: Any, mapped: dict[str, Any]) -> dict[str, Any]:
    """The stored complex element with the children the message sends replaced. A child's
    ``_child`` (its primitive's extensions: a Period end's originalText) belongs to the value
    it was stored with, so it goes with that value unless the message sends one."""
    out = dict(stored) if isinstance(stored, dict) else {}
    for child in mapped:
        if not child.startswith("_"):
            out.pop("_" + child, None)
    out.update(mapped)
    return out


def _drop_part(
    merged: dict[str, Any],
    key: str,
    name: str,
    part: Callable[[dict[str, Any]], str | None],
    child: str = "",
) -> None:
    """A null for one part of a list (``extension[<url>]``, ``location[PV1-6]``): its
    entries go, and the list with them when nothing is left; with `child`, only that child
    of its entries (and its ``_child``) goes."""
    rest = []
    for e in merged.get(key) or []:
        if not (isinstance(e, dict) and part(e) == name):
            rest.append(e)
        elif child:
            rest.append({k: v for k, v in e.items() if k not in (child, "_" + child)})
    if rest:
        merged[key] = rest
    else:
        merged.pop(key, None)


def _merged_meta(stored: Any, mapped: dict[str, Any]) -> dict[str, Any]:
    """The stored meta (the server's versionId and lastUpdated, profiles, tags, another
    channel's labels) with the message's security labels replacing those of their systems."""
    meta = dict(stored) if isinstance(stored, dict) else {}
    for key, value in mapped.items():
        if key == "security":
            sent = {label.get("system") for label in value}
            labels = meta.get("security") or []
            value = [x for x in labels if isinstance(x, dict) and x.get("system") not in sent]
            value += mapped["security"]
        meta[key] = value
    return meta


@cache
def _choice_siblings(resource_type: str) -> dict[str, frozenset[str]]:
    """For each top-level choice variant of a type (Observation.valueQuantity), the other
    variants of the same element: a resource holds at most one of them."""
    from fhirpathpy.models import models

    found: dict[str, frozenset[str]] = {}
    for path, types in models["r4"]["choiceTypePaths"].items():
        owner, _, element = path.partition(".")
        if owner != resource_type or "." in element:
            continue
        variants = frozenset(element + t for t in types)
        for variant in variants:
            found[variant] = variants - {variant}
    return found


def link(pid: str, kind: str) -> dict[str, Any]:
    return {"other": {"reference": f"Patient/{pid}"}, "type": kind}


def replaced_by(body: dict[str, Any]) -> str | None:
    for link in body.get("link") or []:
        ref = (link.get("other") or {}).get("reference", "")
        if link.get("type") == "replaced-by" and ref.startswith("Patient/"):
            return str(ref.removeprefix("Patient/"))
    return None


def replaces(body: dict[str, Any]) -> list[str]:
    """The Patients this one replaces (merged into it earlier)."""
    return [
        str(ref.removeprefix("Patient/"))
        for entry in body.get("link") or []
        if entry.get("type") == "replaces"
        and (ref := (entry.get("other") or {}).get("reference", "")).startswith("Patient/")
    ]


def retire(body: dict[str, Any], survivor: str) -> dict[str, Any]:
    """Inactive, replaced by `survivor`. Its own replaced-by and replaces links go: the
    patients it had replaced are the survivor's now (merge moves them), so no retired record
    keeps a stale "replaces"."""
    kept = [e for e in body.get("link") or [] if e.get("type") not in ("replaced-by", "replaces")]
    return {**body, "active": False, "link": [*kept, link(survivor, "replaced-by")]}


def remerge_error(m: Merge, earlier: dict[str, Any]) -> AckError:
    """AE: MRG-1 names a patient already merged into `earlier`, and PID-3 another survivor.
    HL7 v2 (A40) says a merged identifier is "logically never referenced in future
    transactions", and FHIR's replaced-by says the record "must no longer be used": the
    second merge contradicts the first. Re-pointing the retired record alone would undo the
    first merge (what A37 unlink says, not A40), and following it to `earlier` would retire
    a patient the message never names; which one the sender meant is for a person to say."""
    named = next((i for i in earlier.get("identifier") or [] if i.get("value")), None)
    shown_as = ""
    if named is not None:
        system = named.get("system")
        shown_as = f" {named['value']} ({system})" if system else f" {named['value']}"
    problem = (
        f"was already merged into another patient{shown_as}; a second merge into PID-3 "
        "contradicts it: merge that patient into PID-3 if they are one person, or undo the "
        "first merge by hand"
    )
    return merge_error(m, problem)


def add_replaces(body: dict[str, Any], retired: list[str]) -> dict[str, Any]:
    links = list(body.get("link") or [])
    for rid in retired:
        wanted = link(rid, "replaces")
        if wanted not in links:
            links.append(wanted)
    return {**body, "link": links}


def placeholder_patient(query: str) -> dict[str, Any] | None:
    """An inactive Patient carrying the identifier a merge retires, when `query` is just
    `identifier=[system|]value`; None for anything else."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "identifier" or not pairs[0][1]:
        return None
    parts = token_parts(pairs[0][1])
    system, value = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    if not value:
        return None
    identifier = {"system": system, "value": value} if system else {"value": value}
    return {"resourceType": "Patient", "identifier": [identifier], "active": False}


DERIVED_KEYS = "urn:medisentinel:hl7v2:"  # ...:obx, :nk1, :al1, :location (mapping/identifiers)


def shown(query: str) -> str:
    """A match query as the sender wrote the identifier, for ACK texts: ``value (system)``,
    neither URL-quoted nor search-escaped (never our resource ids). "" for the keys we derive
    from several fields (an OBX's order and code): the ERR location names the field instead."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "identifier":
        return query
    tokens = or_tokens(pairs[0][1])  # a visit renumbered by an A06: the prior or the new one
    if len(tokens) > 1:
        return " or ".join(shown("identifier=" + quote(t, safe=":/|\\")) for t in tokens)
    parts = token_parts(pairs[0][1])
    system, value = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    if system == DERIVED_KEYS + "obx":  # <order system>|<order number>|<code>...
        order = value.split("|")
        if len(order) > 2 and not order[0].startswith(("patient:", "message:")):
            return f"of order {order[1]} ({order[0]})" if order[0] else f"of order {order[1]}"
    if system.startswith(DERIVED_KEYS) and not system.startswith(DERIVED_KEYS + "aa:"):
        return ""
    return f"{value} ({system})" if system else value


def or_tokens(value: str) -> list[str]:
    """A search value split on its unescaped commas (FHIR: any of them), escapes kept."""
    tokens: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if ch == "," and not escaped:
            tokens.append("".join(current))
            current = []
            continue
        current.append(ch)
        escaped = ch == "\\" and not escaped
    return [*tokens, "".join(current)]


def token_parts(token: str) -> list[str]:
    """A FHIR search token split on its first unescaped `|`, search escapes (backslash
    before \\ | , $) undone."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in token:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|" and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


# ---------------------------------------------------------------- ERRs about edits


def merge_error(
    m: Merge, problem: str, severity: Literal["E", "W"] = "E", code: int = 205
) -> AckError:
    """An ERR about a merge's MRG-1 (`problem` follows the identifier in the text)."""
    segment, sequence, field_ = m.origin or ("MRG", 1, 1)
    text = f"MRG-1 {shown(m.retired)} {problem}"
    return AckError(code, text, severity, segment, sequence, field_)


def not_found_error(p: Planned) -> AckError:
    """AE: an update (plan mode "update") found nothing to change; nothing is made up."""
    segment, sequence, field_ = p.origin or ("", None, None)
    text = (
        f"no {p.resource_type} to change: none is known by the visit this message names "
        "(PV1-19 empty: the admission made without a visit number at the same admit time, "
        "PV1-44, and patient class); nothing applied"
    )
    return AckError(204, text, "E", segment, sequence, field_)


def stale_warning(p: Planned, newer: int) -> AckError:
    """W: the resource holds data newer than the message (named as sent, not by our id)."""
    segment, sequence, field_ = p.origin or ("", None, None)
    named = shown(p.match or "") or "named here"
    text = f"the {p.resource_type} {named} holds data from {to_instant(newer)}, newer than "
    return AckError(0, text + "this message; kept", "W", segment, sequence, field_)
