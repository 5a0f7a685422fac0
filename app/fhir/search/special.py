"""Search parameters that are no criteria on index rows and that this server refuses (in
lenient handling too) rather than ignore, since ignoring them would answer another search
than the one asked for: `_contained` other than `false`, a named `_query`."""

from __future__ import annotations

from dataclasses import replace

from app.errors import InvalidRequest

# R4 search.html, "Contained Resources": what a search returns of contained resources.
# Only the default is served (matches are never contained resources; chains still look into
# them): returning them, or their containers, is refused rather than ignored, since ignoring
# `_contained=true` would answer with other resources than the ones asked for.
CONTAINED_PARAMS = {"_contained": ("false", "true", "both"),
                    "_containedType": ("container", "contained")}  # fmt: skip


def check_contained(name: str, value: str) -> None:
    allowed = CONTAINED_PARAMS[name]
    if value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", expression=name)
    if name == "_contained" and value != "false":
        raise not_supported(
            f"_contained={value} is not supported: contained resources are searched only "
            "through chains (subject.name=...), and a search returns stored resources only",
            name,
        )


def named_query_refused(name: str) -> InvalidRequest:
    """R4 search 3.1.1.8: a server SHALL refuse a search whose `_query` it does not know; this
    server knows none, so it is refused in lenient handling too (ignoring it would run some
    other search than the one asked for)."""
    return not_supported(f"the named query '{name}' (_query) is not supported", "_query")


def not_supported(message: str, expression: str) -> InvalidRequest:
    """A 400 whose issue code is `not-supported`: FHIR defines what was asked, this server
    does not do it."""
    error = InvalidRequest(message, expression=expression)
    error.issues = [replace(i, code="not-supported") for i in error.issues]
    return error
