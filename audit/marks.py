"""What verify asks of the signed checkpoints beyond their signatures: that none is missing.

Anyone who can write the database can delete `audit_checkpoint` rows (not re-sign them), and a
chain without checkpoints can be rewritten and re-hashed at will. So:

* numbered checkpoints (checkpoints.py) must run 1, 2, 3 ... with each one's `prev` the digest
  of the one before: deleting any but the newest leaves a gap or a broken link;
* servers sign the heads every `audit_checkpoint_seconds` (and when they start and stop), so
  a record that no checkpoint covers although the trail's newest record is more than two
  intervals younger means checkpoints are missing: deleting the newest checkpoints (or all)
  is caught as long as newer records exist. A trail whose server simply stopped, or crashed,
  before its next checkpoint has only young unanchored records, which are no finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.fhir.instants import to_instant
from audit.checkpoints import Checkpoint, Heads

DEFAULT_INTERVAL = 300  # Settings.audit_checkpoint_seconds' default
GRACE_INTERVALS = 2  # one round may fail ("a failed round only delays the next")


def sequence(valid: list[Checkpoint]) -> list[str]:
    """Gaps and broken links in the numbered checkpoints (valid ones, oldest first)."""
    numbered = [m for m in valid if m.n is not None]
    if not numbered:
        return []
    problems = []
    if numbered[0].n != 1:
        problems.append(f"checkpoints 1..{_n(numbered[0]) - 1} are missing (deleted)")
    for before, after in zip(numbered, numbered[1:], strict=False):
        if _n(after) > _n(before) + 1:
            problems.append(f"checkpoints {_n(before) + 1}..{_n(after) - 1} are missing (deleted)")
        elif _n(after) != _n(before) + 1:
            problems.append(f"checkpoint {after.id} is numbered {after.n} after {before.n}")
        elif after.prev != before.digest:
            problems.append(f"checkpoint {after.id} does not follow checkpoint {before.id}")
    return problems


def _n(mark: Checkpoint) -> int:
    return mark.n or 0


def covered(valid: list[Checkpoint], anchors: Heads) -> dict[int, int]:
    """Per partition, the last pseq some signed checkpoint or archive marker covers."""
    upto = {pid: pseq for pid, (pseq, _) in anchors.items()}
    for mark in valid:
        for pid, (pseq, _) in mark.heads.items():
            upto[pid] = max(upto.get(pid, 0), pseq)
    return upto


@dataclass
class Tail:
    """One partition's walk, as far as coverage goes."""

    covered: int  # records up to this pseq are covered by a checkpoint
    first_uncovered: int | None = None
    oldest_uncovered: int | None = None  # recorded (µs) of the oldest record not covered
    newest: int | None = None  # recorded (µs) of the newest record walked

    def saw(self, pseq: int, recorded: int) -> None:
        self.newest = recorded if self.newest is None else max(self.newest, recorded)
        if pseq <= self.covered:
            return
        if self.first_uncovered is None:
            self.first_uncovered = pseq
        if self.oldest_uncovered is None or recorded < self.oldest_uncovered:
            self.oldest_uncovered = recorded


def unanchored(tails: dict[int, Tail], interval: int) -> list[tuple[int, int, str]]:
    """(partition, first uncovered pseq, detail) for records that should be covered."""
    newest = max((t.newest for t in tails.values() if t.newest is not None), default=None)
    if newest is None:
        return []
    limit = newest - GRACE_INTERVALS * interval * 1_000_000
    return [
        (
            pid,
            tail.first_uncovered or 0,
            f"records from {to_instant(tail.oldest_uncovered)} on are covered by no signed "
            f"checkpoint, though the newest record ({to_instant(newest)}) is more than "
            f"{GRACE_INTERVALS} checkpoint intervals ({interval} s) younger: checkpoints deleted",
        )
        for pid, tail in sorted(tails.items())
        if tail.oldest_uncovered is not None and tail.oldest_uncovered < limit
    ]
