"""The official R4 examples package (hl7.fhir.r4.examples 4.0.1), fetched once with `npm pack`.

Looked for, in order: $MEDISENTINEL_FHIR_EXAMPLES_DIR; the per-user cache
($MEDISENTINEL_CACHE_DIR, default ~/.cache/medisentinel), filled by `npm pack` on first use.
Tests that need it skip with a clear message only when npm is absent; a failed download fails.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# The resource types whose official examples every example-driven test exercises.
CORE_EXAMPLE_TYPES = (
    "Patient",
    "Practitioner",
    "Organization",
    "Location",
    "Encounter",
    "Device",
    "Observation",
    "DiagnosticReport",
    "Task",
    "Communication",
    "Provenance",
    "SupplyRequest",
    "SupplyDelivery",
)

PACKAGE = "hl7.fhir.r4.examples"
VERSION = "4.0.1"
CACHE_ROOT = Path(
    os.environ.get("MEDISENTINEL_CACHE_DIR", Path.home() / ".cache" / "medisentinel")
).expanduser()

# --------------------------------------------------------------------------- package cache


@dataclass(frozen=True)
class ExamplePackage:
    directory: Path | None = None
    skip_reason: str | None = None
    error: str | None = None


def _is_examples_package(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("name") == PACKAGE and manifest.get("version") == VERSION


def _npm_pack_into_cache(npm: str) -> Path:
    """`npm pack` the examples into CACHE_ROOT and unpack them there (atomically)."""
    target = CACHE_ROOT / f"{PACKAGE}-{VERSION}"
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_ROOT, prefix=".download-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(work), "--silent"],
            cwd=work,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tarballs = list(work.glob("*.tgz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"npm pack left {len(tarballs)} tarballs in {work}")
        unpacked = work / "unpacked"
        with tarfile.open(tarballs[0], "r:gz") as archive:
            archive.extractall(unpacked, filter="data")
        if not _is_examples_package(unpacked / "package"):
            raise RuntimeError(f"{tarballs[0].name} is not {PACKAGE}@{VERSION}")
        try:
            os.rename(unpacked, target)
        except OSError:
            # Another process may have filled the cache meanwhile; keep its copy if it is good.
            if not _is_examples_package(target / "package"):
                raise
    return target / "package"


@functools.cache
def examples_package() -> ExamplePackage:
    cached = CACHE_ROOT / f"{PACKAGE}-{VERSION}" / "package"
    for candidate in (_override(), cached):
        if _is_examples_package(candidate):
            return ExamplePackage(directory=candidate)
    npm = shutil.which("npm")
    if npm is None:
        return ExamplePackage(
            skip_reason=f"npm is not installed: cannot fetch {PACKAGE}@{VERSION} with `npm pack`"
        )
    try:
        return ExamplePackage(directory=_npm_pack_into_cache(npm))
    except (OSError, RuntimeError, subprocess.SubprocessError, tarfile.TarError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        return ExamplePackage(error=f"could not fetch {PACKAGE}@{VERSION} with npm pack: {detail}")


def _override() -> Path:
    return Path(os.environ.get("MEDISENTINEL_FHIR_EXAMPLES_DIR", "/nonexistent"))


def examples_dir() -> Path | None:
    return examples_package().directory


@functools.cache
def core_example_files() -> tuple[str, ...]:
    """File names `<Type>-*.json` whose resourceType is that type, for CORE_EXAMPLE_TYPES
    (empty when the package is unavailable)."""
    directory = examples_dir()
    if directory is None:
        return ()
    names = []
    for rtype in CORE_EXAMPLE_TYPES:
        for path in sorted(directory.glob(f"{rtype}-*.json")):
            if json.loads(path.read_bytes()).get("resourceType") == rtype:
                names.append(path.name)
    return tuple(names)


def require_examples_dir() -> Path:
    """The unpacked package; skip when npm is absent, fail when the download failed."""
    package = examples_package()
    if package.skip_reason:
        pytest.skip(package.skip_reason)
    if package.error:
        pytest.fail(package.error)
    assert package.directory is not None
    return package.directory
