"""HTTP preconditions on writes (RFC 9110 13.1): If-Match and If-None-Match against the
current version of the resource written. A failed one is 412, before anything is written."""

from __future__ import annotations

from app.errors import PreconditionFailed
from app.fhir.storage import StoredVersion


def check_if_match(if_match: str | None, current: StoredVersion) -> None:
    """RFC 9110 13.1.1: a list of entity tags, or "*" (any current representation)."""
    if not if_match:
        return
    tags = [tag.strip() for tag in if_match.split(",")]
    if "*" in tags:
        if current.deleted:
            raise PreconditionFailed(f"If-Match * but {current.resource_type}/{current.id} "
                                     "is deleted")  # fmt: skip
        return
    if str(current.version_id) not in {tag.removeprefix("W/").strip('"') for tag in tags}:
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {current.version_id}"
        )


def check_if_match_absent(if_match: str | None, rtype: str, rid: str) -> None:
    """RFC 9110 13.1.1: If-Match (even "*") is false when there is no current representation."""
    if if_match:
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
