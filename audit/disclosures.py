"""Accounting of disclosures for one patient (45 CFR 164.528): when, to whom, what, and why.

Read from the audit trail through the one door, with the caller's grant (so asking is itself
audited, and only a compliance officer or a `system/AuditEvent.rs` client may ask): every
successful RESTful interaction that read or executed something concerning the patient,
i.e. AuditEvents with `patient=Patient/{id}`, `type=rest`, `action=R,E` and `outcome=0`,
oldest first, all pages.

What each AuditEvent gives (see audit/events.py for its shape):

* date       AuditEvent.recorded
* recipient  the client agent's client_id (who.identifier, system urn:medisentinel:client),
             and the user agent's fhirUser reference and username (altId), when a user acted
* what       the resources returned (entity role 4, `Type/id/_history/n`); for a search or
             a history listing (which record their query, not each result) the listing as
             the request line names it, `Type?criteria`, `Type/_history?_since=...`
* query      the request line the recipient sent
* purpose    AuditEvent.purposeOfEvent when the request stated one (else empty)

The sign-in pages' own patient look-ups (the picker's list, the consent page's patient;
client agent `medisentinel-sign-in`) are left out: the server shows the user signing in whom
they may choose, before the app holds any token, and nothing goes to the app. So are an HL7 v2
feed's reads and searches while it applies a message: its sender gets an ACK. Both stay in
the trail.

Disclosures the rule exempts (to the individual, for treatment, payment or operations...)
are listed too: telling them apart needs knowledge the trail does not hold.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from app.context import RequestContext
from app.errors import InvalidRequest
from app.fhir import jsonio, storage
from app.fhir.instants import to_instant
from app.fhir.search import SearchParams
from app.fhir.search.values import date_range
from app.fhir.service import FhirService
from app.fhir.validation import is_valid_id
from audit.events import EVENT_TYPE, FEED_LOOKUP, SIGN_IN_CLIENT
from audit.web.facts import facts_of

PAGE_SIZE = 1000
DISCLOSING_ACTIONS = "R,E"
CSV_COLUMNS = ("date", "client_id", "user", "username", "what", "query", "purpose",
               "interaction", "event")  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or with a time and a zone).
_DATE = re.compile(
    r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class Recipient:
    client_id: str | None
    user: str | None  # fhirUser reference, e.g. Practitioner/123
    username: str | None


@dataclass(frozen=True)
class Disclosure:
    date: str
    recipient: Recipient
    what: tuple[str, ...]
    query: str | None
    purpose: str | None
    interaction: str | None  # the restful-interaction code: read, search-type ...
    event: str  # AuditEvent/id: the record this line comes from

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "recipient": {
                "client_id": self.recipient.client_id,
                "user": self.recipient.user,
                "username": self.recipient.username,
            },
            "what": list(self.what),
            "query": self.query,
            "purpose": self.purpose,
            "interaction": self.interaction,
            "event": self.event,
        }


@dataclass
class Accounting:
    patient: str  # Patient/id
    generated: str
    since: str | None = None
    until: str | None = None
    disclosures: list[Disclosure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "generated": self.generated,
            "from": self.since,
            "to": self.until,
            "disclosures": [d.to_json() for d in self.disclosures],
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for d in self.disclosures:
            row = [d.date, d.recipient.client_id, d.recipient.user, d.recipient.username,
                   " ".join(d.what), d.query, d.purpose, d.interaction, d.event]  # fmt: skip
            writer.writerow([_cell(v) for v in row])
        return out.getvalue()


def _cell(value: str | None) -> str:
    """A CSV cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    text = value or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def date_bound(value: str | None, name: str) -> str | None:
    """A from/to bound as given (a FHIR date or dateTime), None when empty; 400 otherwise."""
    if not value:
        return None
    value = value.strip()
    if not _DATE.match(value):
        raise InvalidRequest(f"{name} must be a date (YYYY-MM-DD) or a dateTime, not {value!r}")
    return value


def _check_order(since: str | None, until: str | None) -> None:
    """A range that ends before it begins is a mistake: answered as such (400), not with an
    empty accounting that would read as "nothing was disclosed"."""
    start, end = date_range(since or ""), date_range(until or "")
    if start is not None and end is not None and start[0] >= end[1]:
        raise InvalidRequest(f"from ({since}) is after to ({until})")


def criteria(
    patient_id: str, since: str | None = None, until: str | None = None
) -> list[tuple[str, str]]:
    pairs = [
        ("patient", f"Patient/{patient_id}"),
        ("type", f"{EVENT_TYPE}|rest"),
        ("action", DISCLOSING_ACTIONS),
        ("outcome", "0"),
    ]
    if since:
        pairs.append(("date", f"ge{since}"))
    if until:
        pairs.append(("date", f"le{until}"))
    return pairs


def account(
    service: FhirService,
    ctx: RequestContext,
    patient_id: str,
    *,
    since: str | None = None,
    until: str | None = None,
    page_size: int = PAGE_SIZE,
) -> Accounting:
    """Every disclosure of the patient's data in [since, until] (dates or instants, inclusive),
    oldest first. Raises what the door raises (403 without an AuditEvent scope)."""
    if not is_valid_id(patient_id):
        raise InvalidRequest(f"{patient_id!r} is not a valid resource id")
    _check_order(since, until)
    accounting = Accounting(
        f"Patient/{patient_id}", to_instant(storage.now_us()), since or None, until or None
    )
    base = [*criteria(patient_id, since, until), ("_sort", "date"), ("_count", str(page_size))]
    cursor: str | None = None
    with service.unit_of_work(ctx, write=False) as uow:
        while True:
            pairs = base + ([("_page", cursor)] if cursor else [])
            params = SearchParams.parse(pairs, "AuditEvent", strict=True)
            result = service.search(uow, "AuditEvent", params)
            for version in result.versions:
                if version.content is not None:
                    found = disclosure_of(jsonio.loads(version.content))
                    if _disclosed(found):
                        accounting.disclosures.append(found)
            cursor = result.next_page
            if not cursor:
                break
    return accounting


def _disclosed(found: Disclosure) -> bool:
    """False for the server's own look-ups, whose results went to no recipient: the sign-in
    pages' (shown to the user signing in, before the app holds a token) and an HL7 v2 feed's
    while applying a message (its sender gets an ACK, nothing read)."""
    if found.recipient.client_id == SIGN_IN_CLIENT:
        return False
    return not (found.query or "").startswith(FEED_LOOKUP)


def disclosure_of(event: dict[str, Any]) -> Disclosure:
    facts = facts_of(event)
    return Disclosure(
        date=facts.recorded,
        recipient=Recipient(facts.client_id, facts.user, facts.username),
        what=facts.resources or _searched(facts.request, facts.query),
        query=facts.request or facts.query,
        purpose=facts.purpose,
        interaction=facts.subtype or None,
        event=f"AuditEvent/{facts.id}",
    )


def _searched(request_line: str | None, query: str | None) -> tuple[str, ...]:
    """What a search disclosed, as the search itself: `Observation?subject=Patient/1`."""
    if not request_line:
        return ()
    _method, _, target = request_line.partition(" ")
    path = urlsplit(target).path.removeprefix("/fhir").strip("/")
    # `Observation?code=x`, `Observation/_history?_since=...`, `?_type=Observation&...` (a
    # system-wide search): the listing the recipient was sent, not a single resource.
    listed = "/".join(s for s in path.split("/") if s and s != "_search")
    # The recorded query (a POST _search's form too), else the request line's own.
    criteria_text = unquote(query or urlsplit(target).query)
    if not criteria_text:
        return (listed,) if listed else ()
    return (f"{listed}?{criteria_text}",)
