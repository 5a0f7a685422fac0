"""PKCE (RFC 7636), S256 only: `plain` and missing challenges are refused for every client,
public or confidential (authlib's defaults would allow both; we do not use its grant)."""

from __future__ import annotations

import base64
import hashlib
import re

from app.auth.secrets import constant_time_equal

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def valid_challenge(challenge: str | None, method: str | None) -> bool:
    return method == "S256" and challenge is not None and bool(_CHALLENGE.match(challenge))


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str | None, challenge: str) -> bool:
    if verifier is None or not _VERIFIER.match(verifier):
        return False
    return constant_time_equal(s256(verifier), challenge)
