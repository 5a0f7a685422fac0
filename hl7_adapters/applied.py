"""What the HL7 applier (apply.py) takes and gives, apart from the plan: the message it is
applying (MessageRef, for the Provenance), what applying it produced (Applied), and the
error that makes the message AE (ApplyError). Kept apart so that the parts of the applier
(merging.py) and its callers (ingest.py, outcomes.py) share them without importing apply.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from hl7_adapters.ack import AckError


class ApplyError(Exception):
    """The message cannot be applied as mapped (an ambiguous match, an unknown survivor):
    AE with this error. Raised before anything is committed; the unit rolls back."""

    def __init__(self, error: AckError) -> None:
        super().__init__(error.text)
        self.error = error


@dataclass(frozen=True)
class MessageRef:
    """What the Provenance says about the message and its sender."""

    id: str  # the message store id
    code: str  # MSH-9.1
    trigger: str  # MSH-9.2
    control_id: str
    sending_application: str
    sending_facility: str


@dataclass
class Applied:
    produced: list[str] = field(default_factory=list)  # Type/id/_history/n, in write order
    resolved: dict[str, str] = field(default_factory=dict)  # full_url -> Type/id
    patients: list[str] = field(default_factory=list)  # Patient ids the message concerns
    warnings: list[AckError] = field(default_factory=list)
    provenance_id: str | None = None
