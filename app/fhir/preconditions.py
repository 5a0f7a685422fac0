"""HTTP preconditions on writes (RFC 9110 13.1): If-Match and If-None-Match against the
current version of the resource written. A failed one is 412, before anything is written.
And the criteria of conditional interactions (If-None-Exist, conditional update/delete)."""

from __future__ import annotations

import re

from app.errors import InvalidRequest, Issue, PreconditionFailed
from app.fhir.search import SearchParams
from app.fhir.storage import StoredVersion

# R4 http.html#concurrency: the ETag is a weak tag holding the versionId, `W/"23"`, and
# If-Match sends it back. The strong form `"23"` is taken as well (HAPI and Medplum read
# both; RFC 9110 would never let a strong tag match a weak one, but FHIR says the tag is
# the version). This server's versionIds are positive integers without leading zeros.
VERSION_TAG = re.compile(r'(?:W/)?"([1-9][0-9]{0,17})"')


def if_match_versions(if_match: str) -> frozenset[int] | None:
    """The versions an If-Match header names; None for `*` (any current version).

    Anything else (`W/1`, `1`, `"abc"`, `W/"x"`, `*` inside a list) is 400 naming the
    header: read leniently it would be some other version, or none, and the write would
    pass or fail for a reason the client never stated."""
    if if_match.strip() == "*":
        return None
    versions = set()
    # RFC 9110 5.6.1: empty list elements (`W/"1", `) are ignored; a list of none names nothing
    tags = [tag.strip() for tag in if_match.split(",") if tag.strip()] or [if_match.strip()]
    for tag in tags:
        match = VERSION_TAG.fullmatch(tag)
        if match is None:
            message = (
                f"If-Match: '{tag}' is not an entity tag of a version of this server "
                '(W/"n", the ETag a read or write answered with, or *)'
            )
            # R4 OperationOutcome.issue.location: "For HTTP errors, will be 'http.' + the
            # parameter name"; a header is no element, so there is no expression.
            issue = Issue("error", "invalid", message, location=("http.If-Match",))
            raise InvalidRequest(message, issues=[issue])
        versions.add(int(match.group(1)))
    return frozenset(versions)


def check_if_match_syntax(if_match: str | None) -> None:
    """400 for a malformed If-Match before anything else is looked at (existence, other
    preconditions, a conditional write's matches), so that it is never answered as a 412."""
    if if_match:
        if_match_versions(if_match)


def check_if_match(if_match: str | None, current: StoredVersion) -> None:
    """RFC 9110 13.1.1: a list of entity tags, or "*" (any current representation)."""
    if not if_match:
        return
    versions = if_match_versions(if_match)
    if current.deleted:
        # A deleted resource has no current representation, so no tag matches it: not `*`,
        # nor the deletion's own number (the ETag of its 410), which let a PUT bring it back
        # and a DELETE of it pass where a resource never there gets 412.
        raise PreconditionFailed(
            f"If-Match {if_match} but {current.resource_type}/{current.id} is deleted"
        )
    if versions is None:
        return
    if current.version_id not in versions:
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {current.version_id}"
        )


def check_if_match_absent(if_match: str | None, rtype: str, rid: str) -> None:
    """RFC 9110 13.1.1: If-Match (even "*") is false when there is no current representation."""
    if if_match:
        if_match_versions(if_match)  # a malformed one is 400 whether or not the resource exists
        raise PreconditionFailed(f"If-Match given but {rtype}/{rid} does not exist")


def check_if_none_match(if_none_match: str | None, current: StoredVersion | None) -> None:
    """RFC 9110 13.1.2 on a write: false (412) when the resource has a current version and
    the header is "*" or lists its entity tag; a deleted resource has none, so a PUT with
    `If-None-Match: *` creates only where nothing lives."""
    if not if_none_match or current is None or current.deleted:
        return
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")}
    if "*" in tags or str(current.version_id) in tags:
        raise PreconditionFailed(
            f"If-None-Match {if_none_match}: {current.resource_type}/{current.id} exists "
            f"(version {current.version_id})"
        )


def conditional_params(rtype: str, query: str, limit: int) -> SearchParams:
    """Conditional criteria (strict: an unknown parameter is an error), at most `limit`."""
    params = SearchParams.parse_query(query, rtype, strict=True)
    if not params.criteria:
        raise InvalidRequest("conditional criteria are empty")
    return params.with_count(limit)
