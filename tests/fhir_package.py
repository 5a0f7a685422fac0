"""The official R4 examples package (hl7.fhir.r4.examples 4.0.1), fetched once with `npm pack`.

Looked for, in order: $MEDISENTINEL_FHIR_EXAMPLES_DIR; the per-user cache
(~/.cache/medisentinel/hl7.fhir.r4.examples-4.0.1/package), filled by `npm pack` on first use.
Tests that need it skip with a clear message only when npm is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medisentinel"
UNPACKED = CACHE / "hl7.fhir.r4.examples-4.0.1" / "package"


@cache
def examples_dir() -> Path | None:
    override = os.environ.get("MEDISENTINEL_FHIR_EXAMPLES_DIR")
    if override and Path(override).is_dir():
        return Path(override)
    if (UNPACKED / "package.json").exists():
        return UNPACKED
    if shutil.which("npm") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", PACKAGE, "--silent"],
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=600,
        )
        tarball = next(Path(tmp).glob("*.tgz"))
        target = UNPACKED.parent
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(partial, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # atomic: a half-unpacked cache is never used
    return UNPACKED


def require_examples_dir() -> Path:
    """The unpacked package, or skip the calling test when npm is absent."""
    path = examples_dir()
    if path is None:
        pytest.skip("npm is not installed: cannot fetch hl7.fhir.r4.examples@4.0.1")
    return path
