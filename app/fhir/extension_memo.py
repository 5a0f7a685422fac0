"""A shortcut for the model check of resources full of Extensions.

The R4B Extension model is costly (~19 µs an Extension: ~50 value[x] fields and Python
validators), and HL7 feeds and US Core data put Extensions everywhere, mostly the same ones
over and over (one marker per list entry, race and ethnicity ...). An Extension's model verdict
depends on its JSON alone, so the Extensions the model has accepted are remembered by their
exact text, and a resource whose Extensions are all remembered is judged by the model without
them. Only a clean verdict is ever taken from here: whenever anything is wrong, or anything is
new, the caller runs the full model, so the issues a client sees never differ.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson

# The keys that hold Extensions wherever they appear.
EXTENSION_KEYS = ("extension", "modifierExtension")
# Enough for the markers and profiles of a feed; each entry holds one Extension's text.
MEMO_SIZE = 4096
# A value the model would judge without Extensions: None when it cannot be judged so.
Judge = Callable[[Any], bool]

# Oldest first. Read without the lock (a dict lookup is atomic); changed under it, since
# requests are judged on several threads and eviction iterates.
# What stands in for the Extensions of an element that has nothing else: valid by itself.
STAND_IN = {"url": "urn:medisentinel:stand-in"}

_accepted: dict[str, None] = {}
_lock = threading.Lock()


def _remember(key: str) -> None:
    with _lock:
        _accepted[key] = None
        if len(_accepted) > MEMO_SIZE:  # forget the oldest: a frequent one comes back soon
            del _accepted[next(iter(_accepted))]


def without_extensions(value: Any, found: list[Any]) -> Any:
    """`value` with every Extension list taken out (put in `found`); `value` itself when it has
    none. Extension lists of Extensions stay in them: the Extension is judged whole."""
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            if key in EXTENSION_KEYS and isinstance(item, list):
                found.extend(item)
                continue
            items[key] = without_extensions(item, found)
        if len(items) != len(value) and not items.keys() - {"id"}:
            # An element of Extensions only (`_birthDate`): the model wants one of them.
            items["extension"] = [STAND_IN]
        changed = len(items) != len(value) or any(v is not value[k] for k, v in items.items())
        return items if changed else value
    if isinstance(value, list):
        copied = [without_extensions(v, found) for v in value]
        return copied if any(c is not v for c, v in zip(copied, value, strict=True)) else value
    return value


def _memo_key(extension: Any) -> str | None:
    """The Extension's exact text, or None when its repr could hide a difference the model sees
    (decimals: Decimal('1') is both the JSON 1e0 and the integer literal kept for -0 or 2**64)."""
    key = repr(extension)
    return None if "Decimal(" in key else key


def may_have_extensions(resource: dict[str, Any]) -> bool:
    """No Extension list, nothing to gain. orjson is the cheapest look (~0.5 µs for a small
    Patient; repr ~1.5 µs, a Python walk far more); what it cannot write is looked at anyway."""
    try:
        return b'xtension":[' in orjson.dumps(resource, default=str)
    except TypeError:  # orjson.JSONEncodeError included
        return True


def all_clean(resource: dict[str, Any], model_accepts: Judge, extension_accepts: Judge) -> bool:
    """True only when the model would accept `resource` as it is: every Extension in it is
    accepted by the Extension model (remembered, or judged now) and the resource without its
    Extensions is accepted by its model. False means "not known": run the full model. Only
    worth calling when may_have_extensions."""
    found: list[Any] = []
    view = without_extensions(resource, found)
    for extension in found:
        key = _memo_key(extension)
        if key is not None and key in _accepted:
            continue
        if not extension_accepts(extension):
            return False
        if key is not None:
            _remember(key)
    return model_accepts(view)
