"""From received bytes to the ACK: parse, find duplicates, map, apply, store, audit, answer.

One message, one transaction: the resources it produces (through the door, see apply.py), its
Provenance, its row in the message store and its message-level AuditEvent commit together,
and the ACK goes back only after that commit returned. The ACK's bytes are decided inside the
transaction so that they are stored with the message (a re-send gets exactly them back); they
are released to the sender only once the commit has succeeded. If anything fails, the
transaction rolls back and the message is stored again, raw, with status `error`, in a
transaction of its own, and the sender gets AE/CE (ERR 207): nothing was applied, and it may
send again or wait for `medisentinel hl7 reprocess`.

Decisions (docs/hl7v2.md has the whole story):

* Batches (FHS/BHS): every message is processed and committed on its own, exactly as if sent
  alone; the reply is a batch of their ACKs (batch_ack.py). Several messages in one frame
  without an envelope are answered the same way, their ACKs one after the other.
* Duplicates: the same sender (MSH-3 + MSH-4), control id (MSH-10) and content (SHA-256 of
  the bytes with line ends normalised, store.content_hash) as an accepted message get the
  original ACK back; nothing is applied, a `duplicate` row and an audit record are written.
  A re-send of a message that failed is a retry: it is processed, and the earlier failed
  rows become `superseded`.
* The same control id with different bytes is processed as the new message it is (refusing it
  would lose data from a sender that reset its counter) and is not silent: its row links the
  earlier message, and the AA carries a warning ERR (205, severity W, MSH-10).
* Ordering: messages touching the same patient or the same matched resource are serialized
  by locks taken first in the transaction (locks.py); the event-time clock keeps an
  older update from overwriting newer data.
* Concurrent edits (409/412) and PostgreSQL serialization failures are retried (3 attempts).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.context import RequestContext, Trail
from app.fhir.service import FhirService
from app.fhir.storage import UnitOfWork
from audit.events import SUCCESS, Entities, EventKind
from audit.events import Outcome as AuditOutcome
from audit.trail import AuditTrail, actor_of
from hl7_adapters import checks, store
from hl7_adapters.ack import (
    AckError,
    build_ack,
    build_nak,
    build_unreadable_ack,
    split_first,
)
from hl7_adapters.applied import Applied, MessageRef
from hl7_adapters.apply import Applier
from hl7_adapters.batch_ack import batch_ack
from hl7_adapters.er7 import Hl7ParseError, Message, parse_batch, parse_messages
from hl7_adapters.locks import LocksNeeded, lock_keys, plan_keys
from hl7_adapters.mapping.plan import MappingError, MappingResult, UnsupportedMessage
from hl7_adapters.optional import within_grant
from hl7_adapters.outcomes import Decision, event_time, failure, msa1, retryable, row_error
from hl7_adapters.tables import QUEUED

log = logging.getLogger(__name__)

Mapper = Callable[[Message], MappingResult]
# Who acts for a message: the HTTP caller's token (one context), or the feed identity that
# MLLP derives from the message's sending application (see feeds.feed_identity).
ContextFor = Callable[[Message | None], RequestContext]

STATUS: dict[str, str] = {"accept": "accepted", "error": "error", "reject": "rejected"}


def default_mapper(msg: Message, *, default_offset: str | None = None) -> MappingResult:
    """The package's mapping (imported late: the listener must start even while it is absent
    or broken; every message then waits in the error queue for a reprocess).
    `default_offset`: the feeds' zone for times sent without one (settings)."""
    from hl7_adapters.mapping import map_message  # type: ignore[attr-defined]

    result: MappingResult = map_message(msg, default_offset=default_offset)
    return result


@dataclass
class Attempt:
    msg: Message
    row: dict[str, Any]  # the message store row being built
    mapped: MappingResult | Decision  # the mapping, or why there is none
    ctx: RequestContext
    force: bool  # always answer, even when MSH-15/16 asked for no acknowledgment
    reprocess: bool = False  # re-running a stored message: its row is updated in place
    original: Any | None = None  # the accepted receipt this one re-sends (a duplicate)
    warnings: list[AckError] = field(default_factory=list)  # found while looking back
    notes: list[AckError] = field(default_factory=list)  # the parser's repairs (checks.py)
    reapply: bool = False  # re-applying an accepted message: it stays accepted, come what may
    before: list[str] = field(default_factory=list)  # what it produced before (reapply)
    decision: Decision | None = None  # how this attempt ended
    held_locked: bool = False  # lock the levels above a Location up front (locks.py)
    more_keys: tuple[str, ...] = ()  # and these, that the applier found it needs (a merge's)


class Hl7Ingest:
    def __init__(
        self,
        service: FhirService,
        trail: AuditTrail,
        *,
        mapper: Mapper | None = None,
        attempts: int = 3,
        processing_ids: frozenset[str] = checks.PRODUCTION,
    ) -> None:
        self.service = service
        self.trail = trail
        self.mapper = mapper or default_mapper
        self.processing_ids = processing_ids  # MSH-11 values taken (checks.refusal)
        self.applier = Applier(service)
        self.attempts = attempts

    # ------------------------------------------------------------ entry points

    def handle(
        self,
        raw: bytes,
        *,
        channel: str,
        peer: str | None,
        ctx: RequestContext | ContextFor,
        always_ack: bool = False,
    ) -> bytes:
        """The ACK (or batch of ACKs) for `raw`, after everything it caused has committed:
        `respond`'s replies one after the other (HTTP answers them in one body)."""
        replies = self.respond(raw, channel=channel, peer=peer, ctx=ctx, always_ack=always_ack)
        return b"".join(replies)

    def respond(
        self,
        raw: bytes,
        *,
        channel: str,
        peer: str | None,
        ctx: RequestContext | ContextFor,
        always_ack: bool = False,
    ) -> list[bytes]:
        """The replies for `raw`, each to go out as one MLLP frame: the ACK(s) (in enhanced
        mode the commit ACKs), then the application ACKs enhanced mode asks for after them
        (ack.py); a batch is answered in one batch of ACKs. Empty replies when the sender
        asked for no acknowledgment (and `always_ack` is off). Never raises: a bug here
        still answers, with a NAK (207)."""
        context_for = ctx if callable(ctx) else (lambda _msg, c=ctx: c)
        try:
            try:
                batch = parse_batch(raw)
            except Hl7ParseError as exc:
                return [self._unreadable(raw, str(exc), channel, peer, context_for)]
            if not batch.messages:
                return [self._unreadable(raw, "no MSH segment found", channel, peer, context_for)]
            acks = [
                split_first(self._received(m, channel, peer, context_for, always_ack))
                for m in batch.messages
            ]
            if not batch.is_batch:  # one message; or several in one frame: each answered
                return [b"".join(first for first, _ in acks), b"".join(rest for _, rest in acks)]
            return [batch_ack(batch, [a for pair in acks for a in pair if a])]
        except Exception:
            log.exception("HL7 input of %d bytes could not be handled", len(raw))
            return [build_nak(raw, AckError(207, "Application internal error"))]

    def refuse_oversize(
        self, head: bytes, size: int, error: AckError, *, channel: str, peer: str | None,
        ctx: ContextFor,
    ) -> bytes:  # fmt: skip
        """A message over the size limit is not processed: AR/CR with `error`, and its first
        bytes are kept, with its size and the reason, as a `truncated` row (outside the error
        queue: a cut message must never be reprocessed; the sender has to send it again)."""
        try:
            found = parse_messages(head)
        except Hl7ParseError:
            found = []
        msg = found[0] if found else None
        ack = build_nak(head, error, "reject")
        row = store.new_row(head, msg, channel=channel, peer=peer)
        kept = f"{error.text}; its first {len(head)} of {size} bytes are kept"
        row.update(status=store.TRUNCATED, ack=ack, ack_code=msa1(ack), error=kept)
        try:
            self._store_alone(self._context(ctx, msg), row, reprocessed=False)
        except Exception:
            log.exception("an oversize HL7 message could not be stored")
        return ack

    def reprocess(
        self, message_id: str, ctx: ContextFor, *, accepted: bool = False
    ) -> dict[str, Any]:
        """Run a stored error/rejected message again (after a mapping fix); its row records
        the new outcome. Raises LookupError (unknown id) or ValueError (not in the queue).

        ``accepted``: re-apply an accepted message instead (after a mapping improvement),
        through the same door: its upserts find their resources and update them, so nothing
        is duplicated, and a message whose mapping would create a resource again (nothing
        identifies it, e.g. a visit without number or time) is left alone. The row stays
        `accepted` whatever happens (its resources are there); the summary says
        ``reapplied`` and, when not, why."""
        stored = store.load(self.service.engine, message_id)
        if stored is None:
            raise LookupError(f"no message {message_id} in the store")
        wanted = ("accepted",) if accepted else QUEUED
        if stored.status not in wanted:
            hint = " (re-apply it with --accepted)" if stored.status == "accepted" else ""
            raise ValueError(f"message {message_id} is {stored.status}; only {wanted} rerun{hint}")
        raw = bytes(stored.raw)
        try:
            messages = parse_batch(raw).messages
        except Hl7ParseError as exc:
            messages, problem = [], str(exc)
        else:
            problem = f"holds {len(messages)} messages, not one"
        reason = None
        if len(messages) == 1:
            msg = messages[0]
            row = store.new_row(raw, msg, channel=stored.channel, peer=stored.peer)
            row["id"] = stored.id
            mapped = self._map(msg)
            row["event_time"] = event_time(mapped, msg)
            context = self._context(ctx, msg)
            notes = checks.warnings(msg)
            reason = not_reappliable(mapped) if accepted else None
            if reason is None:
                before = json.loads(stored.produced) if accepted and stored.produced else []
                attempt = Attempt(msg, row, mapped, context, True, reprocess=True, notes=notes)
                attempt.reapply, attempt.before = accepted, before
                self._run(attempt)
                ended = attempt.decision
                if accepted and ended is not None and ended.outcome != "accept":
                    reason = ended.detail or "applying it failed"
        elif accepted:
            reason = f"unreadable now: {problem}"
        else:
            row = store.new_row(raw, None, channel=stored.channel, peer=stored.peer)
            row.update(id=stored.id, status="rejected", error=f"still unreadable: {problem}")
            self._store_alone(self._context(ctx, None), row, reprocessed=True)
        found = store.load(self.service.engine, message_id)
        assert found is not None
        if not accepted:
            return store.summary(found)
        return {**store.summary(found), "reapplied": reason is None, "reason": reason}

    # ------------------------------------------------------------ one message

    def _received(
        self,
        msg: Message,
        channel: str,
        peer: str | None,
        context_for: ContextFor,
        force: bool,
    ) -> bytes:
        row = store.new_row(msg.raw, msg, channel=channel, peer=peer)
        mapped = self._map(msg)
        row["event_time"] = event_time(mapped, msg)
        context = self._context(context_for, msg)
        return self._run(Attempt(msg, row, mapped, context, force, notes=checks.warnings(msg)))

    def _map(self, msg: Message) -> MappingResult | Decision:
        refused = checks.refusal(msg, self.processing_ids)
        if refused is not None:
            return Decision("reject", [refused], refused.text)
        try:
            return self.mapper(msg)
        except MappingError as exc:
            return Decision("error", list(exc.errors), str(exc))
        except UnsupportedMessage as exc:
            return Decision("reject", [exc.error], str(exc))
        except Exception as exc:  # a mapping bug: the message waits for a fix, then reprocess
            log.exception("mapping failed on a %s^%s message", msg.message_code, msg.trigger_event)
            error = AckError(207, "the message could not be mapped (application error)")
            return Decision("error", [error], f"mapping failed: {type(exc).__name__}: {exc}", True)

    def _run(self, attempt: Attempt) -> bytes:
        """Commit the message (retrying concurrent-edit failures); on failure store it as
        failed in a transaction of its own. Returns the ACK bytes."""
        for number in range(1, self.attempts + 1):
            try:
                return self._commit(attempt)
            except Exception as exc:
                if retryable(exc) and number < self.attempts:
                    continue
                decision = failure(exc)
                break
        return self._conclude_failed(attempt, decision)

    def _commit(self, a: Attempt) -> bytes:
        try:
            return self._commit_once(a)
        except LocksNeeded as needed:  # keys found busy late: again, all locked first
            a.held_locked, a.more_keys = True, (*a.more_keys, *needed.keys)
            return self._commit_once(a)

    def _commit_once(self, a: Attempt) -> bytes:
        with self.service.unit_of_work(a.ctx, write=True) as uow:
            mapped = a.mapped if isinstance(a.mapped, MappingResult) else None
            if mapped is not None:
                mapped = within_grant(mapped, a.ctx.grant)
            keys = plan_keys(mapped, held=a.held_locked) if mapped else []
            lock_keys(uow, [_message_key(a.row), *keys, *a.more_keys])
            supersedes = [] if a.reprocess else self._look_back(uow, a)
            if a.original is not None:
                reply = self._conclude(uow, a, Decision("accept"), None, [])
            elif mapped is None:
                assert isinstance(a.mapped, Decision)
                reply = self._conclude(uow, a, a.mapped, None, supersedes)
            else:
                ref = _message_ref(a.row)
                applied = self.applier.apply(
                    uow, mapped, ref, event_time=a.row["event_time"], held_locked=a.held_locked
                )
                warnings = [*mapped.warnings, *applied.warnings]
                reply = self._conclude(uow, a, Decision("accept", warnings), applied, supersedes)
        return reply

    def _look_back(self, uow: UnitOfWork, a: Attempt) -> list[str]:
        """Mark a re-send of an accepted message as a duplicate (with the ACK to repeat), note
        a reused control id; the failed receipts of the same bytes that this one supersedes."""
        a.original, a.warnings = None, []
        a.row["control_id_reuse_of"] = None
        if not a.row["control_id"]:  # refused (checks.refusal); no id to recognise it by
            return []
        seen = store.earlier(uow, a.row)
        a.original = seen.accepted
        if seen.accepted is not None:
            return []
        if seen.other_content is not None:
            a.row["control_id_reuse_of"] = seen.other_content
            text = (
                f"control id {a.row['control_id']} was used before for a different message; "
                "processed as a new message"
            )
            a.warnings.append(AckError(205, text, "W", "MSH", 1, 10))
        return seen.failed

    def _conclude(
        self,
        uow: UnitOfWork,
        a: Attempt,
        decision: Decision,
        applied: Applied | None,
        supersedes: list[str],
    ) -> bytes:
        """Fix the ACK, fill in the row, save it and the message's audit record (in `uow`)."""
        row, original = a.row, a.original
        a.decision = decision
        errors = [*decision.errors, *a.warnings, *a.notes]
        if original is not None and original.ack is not None and not original.reprocess_count:
            ack = bytes(original.ack)  # exactly what the original got
        else:  # (a reprocessed original's ACK told of its failure: the answer now is this)
            ack = build_ack(a.msg, decision.outcome, errors, force=a.force) or b""
        if original is not None:
            row.update(status="duplicate", duplicate_of=original.id)
        else:
            row.update(status=STATUS[decision.outcome], duplicate_of=None)
        produced = applied.produced if applied else []
        if a.reapply:  # what it produced first stays listed, the versions written now after
            produced = [*a.before, *produced]
        row.update(
            ack=ack or None,
            ack_code=msa1(ack),
            error=row_error(decision.detail, a.notes),
            produced=store.produced_json(produced),
            provenance_id=applied.provenance_id if applied else None,
        )
        store.save(uow, row, reprocessed=a.reprocess, supersedes=supersedes)
        self._audit(uow, a.ctx, row, decision, produced, applied.patients if applied else [])
        return ack

    def _conclude_failed(self, a: Attempt, decision: Decision) -> bytes:
        """The message failed and its transaction rolled back: keep it, raw, as failed."""
        a.original = None  # a duplicate's answer needs its commit to stand: this one failed
        if a.reapply:  # still accepted: the first application stands; the failure is audited
            a.decision = decision
            try:
                with self.service.unit_of_work(a.ctx, write=True) as uow:
                    self._audit(uow, a.ctx, {**a.row, "status": "error"}, decision, [], [])
            except Exception:
                log.exception("a failed re-application could not be audited (id %s)", a.row["id"])
            return b""
        try:
            with self.service.unit_of_work(a.ctx, write=True) as uow:
                supersedes = [] if a.reprocess else store.earlier(uow, a.row).failed
                return self._conclude(uow, a, decision, None, supersedes)
        except Exception:
            log.exception("a failed HL7 message could not be stored (id %s)", a.row["id"])
            errors = [*decision.errors, *a.notes]  # not stored: CE in enhanced mode
            ack = build_ack(a.msg, decision.outcome, errors, force=a.force, stored=False)
            return ack or b""

    def _unreadable(
        self, raw: bytes, problem: str, channel: str, peer: str | None, context_for: ContextFor
    ) -> bytes:
        """Input with no readable MSH: AR/CR, and the bytes kept as a rejected message."""
        ack = build_unreadable_ack(raw, problem)
        row = store.new_row(raw, None, channel=channel, peer=peer)
        row.update(status="rejected", ack=ack, ack_code=msa1(ack), error=problem)
        try:
            self._store_alone(self._context(context_for, None), row, reprocessed=False)
        except Exception:
            log.exception("unreadable HL7 input could not be stored")
        return ack

    def _store_alone(self, ctx: RequestContext, row: dict[str, Any], *, reprocessed: bool) -> None:
        with self.service.unit_of_work(ctx, write=True) as uow:
            store.save(uow, row, reprocessed=reprocessed, supersedes=[])
            self._audit(uow, ctx, row, Decision("reject", detail=row["error"] or ""), [], [])

    # ------------------------------------------------------------ audit and identity

    def _audit(
        self,
        uow: UnitOfWork,
        ctx: RequestContext,
        row: dict[str, Any],
        decision: Decision,
        produced: list[str],
        patients: list[str],
    ) -> None:
        """The message-level AuditEvent (the door records each interaction besides)."""
        status = row["status"]
        about = f"HL7 v2 message {row['id']} ({_kind(row)}"
        if row["control_id"]:
            about += f", control id {row['control_id']}"
        about += f") {status}"
        if status == "duplicate":
            about += f" of {row['duplicate_of']}"
        if status in ("accepted", "duplicate"):
            outcome = SUCCESS
        else:
            text = store.clean(decision.detail, 1000) or status  # it may quote any byte sent
            outcome = AuditOutcome("8" if decision.internal else "4", text)
        entities = Entities(resources=produced, patients=patients, description=about)
        record = self.trail.build(EventKind.hl7v2(_kind(row)), actor_of(ctx), outcome, entities)
        self.trail.append_in(uow, [record])

    @staticmethod
    def _context(context_for: ContextFor, msg: Message | None) -> RequestContext:
        """A context of its own per message: its own request id and audit notes."""
        ctx = context_for(msg)
        what = f"HL7 {_kind_of(msg)}" + (f" #{store.clean(msg.control_id)}" if msg else "")
        line = f"{ctx.request_line} {what}".strip()
        return dataclasses.replace(
            ctx, request_id=uuid.uuid4().hex, trail=Trail(), request_line=line
        )


# ---------------------------------------------------------------- helpers


def _kind_of(msg: Message | None) -> str:
    if msg is None:
        return "unreadable"
    return f"{store.clean(msg.message_code, 16)}^{store.clean(msg.trigger_event, 16)}"


def _kind(row: dict[str, Any]) -> str:
    if not (row["message_code"] or row["trigger_event"]):
        return "unreadable" if not row["control_id"] else "unknown"
    return f"{row['message_code']}^{row['trigger_event']}"


def _message_key(row: dict[str, Any]) -> str:
    return f"hl7:{row['sending_application']}|{row['sending_facility']}|{row['control_id']}"


def _message_ref(row: dict[str, Any]) -> MessageRef:
    return MessageRef(
        row["id"],
        row["message_code"],
        row["trigger_event"],
        row["control_id"],
        row["sending_application"],
        row["sending_facility"],
    )


def not_reappliable(mapped: MappingResult | Decision) -> str | None:
    """Why an accepted message cannot be re-applied without harm; None when it can."""
    if isinstance(mapped, Decision):
        return f"the mapping refuses it now: {mapped.detail}"
    again = sorted({p.resource_type for p in mapped.planned if p.mode == "create"})
    if again:
        return (
            f"it would create {', '.join(again)} again: nothing identifies "
            "such a resource across messages (no visit or order number)"
        )
    return None
