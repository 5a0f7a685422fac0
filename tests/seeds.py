"""Seeds for the seeded random tests, from an environment variable: `3,7,11`, `1-200`, or
both (`1-20,31`); the default when it is unset."""

from __future__ import annotations

import os


def seeds_from_env(name: str, default: str) -> list[int]:
    found: list[int] = []
    for part in os.environ.get(name, default).split(","):
        first, _, last = part.strip().partition("-")
        found += range(int(first), int(last or first) + 1)
    return found
