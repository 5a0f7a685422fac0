"""docker-compose.yml and the Dockerfile, read against the compose spec (no Docker engine in
the test environment): what the server writes to disk must outlive the container."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _workdir_and_user() -> tuple[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    return re.findall(r"^WORKDIR (\S+)", text, re.M)[-1], re.findall(r"^USER (\S+)", text, re.M)[-1]


def test_compose_keeps_the_master_key_on_a_named_volume() -> None:
    from app.settings import Settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    app = compose["services"]["app"]
    if "MEDISENTINEL_MASTER_KEY" in app.get("environment", {}):
        return  # a key given outright needs no file
    workdir, _ = _workdir_and_user()
    key_dir = str(Path(workdir) / Settings.model_fields["master_key_file"].default.parent)
    mounts = dict(volume.split(":")[1::-1] for volume in app.get("volumes", []))
    assert key_dir in mounts, f"{key_dir} (the master key) is not on a volume"
    assert mounts[key_dir] in (compose.get("volumes") or {}), "not a declared named volume"


def test_dockerfile_creates_the_data_directory_for_its_user() -> None:
    # A named volume copies the owner of the image's directory; one Docker creates is root's,
    # and the unprivileged server could not write its master key there.
    workdir, user = _workdir_and_user()
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"install -d -o {user} -g {user}\b.* {workdir}/data\b", text)
