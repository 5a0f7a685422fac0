"""The hook point: a hook can refuse (403), and a failing hook aborts the whole write (500),
with an OperationOutcome and nothing stored."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.errors import Forbidden
from app.fhir.hooks import Hook, Interaction
from app.fhir.storage import UnitOfWork
from tests.conftest import LiveServer
from tests.helpers import FHIR_JSON, patient, unique


class RefuseFamily(Hook):
    """Refuses creates of Patients with a marked family name; blows up before commit for another."""

    def __init__(self, refused: str, explosive: str) -> None:
        self.refused, self.explosive = refused, explosive
        self.failures: list[Exception] = []

    def authorize(self, uow: UnitOfWork, interaction: Interaction) -> None:
        if interaction.name == "read" and interaction.id == self.refused:
            raise Forbidden("not for you")

    def before_commit(self, uow: UnitOfWork) -> None:
        for change in uow.changes:
            if change.version.content and self.explosive.encode() in change.version.content:
                raise RuntimeError("audit store unavailable")

    def on_failure(self, ctx: object, interaction: object, error: Exception) -> None:
        self.failures.append(error)


@pytest.fixture
def hook(live_server: LiveServer) -> Iterator[RefuseFamily]:
    installed = RefuseFamily(refused=unique("ref"), explosive=unique("Boom"))
    pipeline = live_server.app.state.pipeline
    pipeline.add(installed)
    yield installed
    pipeline.hooks.remove(installed)


def test_authorize_hook_refusal_is_403(client: httpx.Client, hook: RefuseFamily) -> None:
    client.put(f"/Patient/{hook.refused}", json=patient(id=hook.refused), headers=FHIR_JSON)
    response = client.get(f"/Patient/{hook.refused}")
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"


def test_failing_hook_aborts_the_write_with_500_outcome(
    client: httpx.Client, hook: RefuseFamily
) -> None:
    rid = unique("boom")
    body = patient(id=rid, name=[{"family": hook.explosive}])
    response = client.put(f"/Patient/{rid}", json=body, headers=FHIR_JSON)
    assert response.status_code == 500
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.text and "audit store" not in response.text
    assert client.get(f"/Patient/{rid}").status_code == 404
    assert any(isinstance(e, RuntimeError) for e in hook.failures)
