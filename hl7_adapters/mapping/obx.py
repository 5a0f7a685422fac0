"""OBX value, units, reference range, flags and status (IG OBX[Observation], OBX-2..11).

OBX-2 decides Observation.value[x] (IG rows for OBX-5):

=========== ============================================================================
NM          valueQuantity (OBX-6 units); a value that is not an HL7 NM is an error (102)
SN          IG SN maps: ``<>`` or ``+`` -> valueString, ``:``/``/`` -> valueRatio,
            ``-`` -> valueRange, otherwise valueQuantity with SN.1 as comparator; a value
            that parses as none of these -> valueString (the IG's last row). Leniency: an SN
            sent unsplit (``<0.10`` in SN.1) is read as comparator and number.
ST TX FT    valueString (repetitions joined by line breaks; FT formatting already resolved)
CE CWE CNE  valueCodeableConcept
CF IS ID    valueCodeableConcept
DT          valueDateTime (a date); TS/DTM valueDateTime
TM          valueTime
NR          valueRange
DR          valuePeriod (DR.1 start, DR.2 end; IG DR[Period])
ED          extension valueAttachment (R4 has no Observation.valueAttachment; the IG OBX map
            uses the R5 element's cross-version extension): ED.3 (with ED.2) the contentType,
            ED.5 the data, as base64 (sent Base64: kept; Hex or A: converted, IG ED map)
RP          the same extension: RP.1 the url, RP.3/RP.4 the contentType (IG RP map)
NA          valueSampledData (IG NA[SampledData]; the rules are in ``sampled``): the
            repetitions are the rows of one array, so they never become components
=========== ============================================================================

Any other type is reported as a warning and its value left out. Several OBX-5 repetitions of
a non-text type become Observation.component entries, one per repetition, each with the
OBX-3 code (IG OBX[Observation-Component]).

Units (OBX-6): ``Quantity.code``/``system`` only when OBX-6.3 names a known code system
(UCUM -> http://unitsofmeasure.org, MDC -> urn:iso:std:iso:11073:10101, ...); otherwise only
``unit`` text, because "mg/dl^^ISO+" is not a UCUM code. Reference range (OBX-7): always
``text``; ``low``/``high`` too when it reads "a-b", "a - b" or "a to b", one bound when it
reads "<x", "<=x" (high) or ">x", ">=x" (low).
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal
from typing import Any

from hl7_adapters.mapping import datatypes as dt
from hl7_adapters.mapping import periods
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import Where, first, val
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.mapping.numbers import decimal, json_number
from hl7_adapters.mapping.sampled import sampled_data
from hl7_adapters.values import Repetition, Segment

JSON = dict[str, Any]
_NUMBER = r"([+-]?(?:\d+\.?\d*|\.\d+))"  # a decimal as senders write it, captured
_RANGE = re.compile(rf"\s*{_NUMBER}\s*(?:-|to)\s*{_NUMBER}\s*", re.IGNORECASE)
_BOUND = re.compile(rf"\s*(<=|>=|<|>)\s*{_NUMBER}\s*")
_UNSPLIT_SN = re.compile(rf"\s*(<=|>=|<>|<|>|=)?\s*{_NUMBER}\s*")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?([+-]\d{4})?")
_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">="}
TEXT_TYPES = frozenset({"ST", "TX", "FT"})
UNMAPPED_TYPES = t.VALUE_TYPES_0125 - {
    "NM",
    "SN",
    "ST",
    "TX",
    "FT",
    "CE",
    "CWE",
    "CNE",
    "CF",
    "IS",
    "ID",
    "DT",
    "TS",
    "DTM",
    "TM",
    "NR",
    "DR",
    "ED",
    "RP",
    "NA",
}
VALUE_ATTACHMENT = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.valueAttachment"
)
_MIME_TOP = frozenset({"application", "audio", "image", "model", "multipart", "text", "video"})
# ED.3/RP.4 subtypes senders use instead of a MIME type (HL7 table 0291 and common practice).
_SUBTYPE_MIME = {
    "PDF": "application/pdf",
    "RTF": "application/rtf",
    "HTML": "text/html",
    "XML": "text/xml",
    "JPEG": "image/jpeg",
    "JPG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "DICOM": "application/dicom",
    "OCTET-STREAM": "application/octet-stream",
}


def units(obx: Segment) -> JSON:
    """OBX-6 as the unit part of a Quantity (rule in the module doc)."""
    rep = first(obx, 6)
    if rep is None:
        return {}
    code, text, system_name = val(rep, 1), val(rep, 2), val(rep, 3)
    system = dt.coding_system(system_name) if system_name else None
    out: JSON = {"unit": text or code} if text or code else {}
    if system and code:
        out.update({"system": system, "code": code})
    return out


def quantity(number: Decimal, unit: JSON, comparator: str = "") -> JSON:
    out: JSON = {"value": json_number(number)}
    if comparator in _COMPARATORS:
        out["comparator"] = _COMPARATORS[comparator]
    out.update(unit)
    return out


def _sn(rep: Repetition, unit: JSON, raw: str) -> tuple[str, Any]:
    comparator, num1, sep, num2 = (val(rep, i) for i in (1, 2, 3, 4))
    if not num1 and not sep and not num2:
        unsplit = _UNSPLIT_SN.fullmatch(comparator)
        if unsplit:
            comparator, num1 = unsplit.group(1) or "", unsplit.group(2)
    first_number, second = decimal(num1), decimal(num2)
    if comparator != "<>" and sep != "+":
        if sep in (":", "/") and first_number is not None and second is not None:
            return "valueRatio", {
                "numerator": quantity(first_number, unit),
                "denominator": quantity(second, {}),
            }
        if sep == "-" and first_number is not None and second is not None:
            return "valueRange", {
                "low": quantity(first_number, unit),
                "high": quantity(second, unit),
            }
        if sep not in (":", "/", "-") and first_number is not None and not num2:
            return "valueQuantity", quantity(first_number, unit, comparator)
    text = " ".join(p for p in (comparator, num1, sep, num2, unit.get("unit", "")) if p)
    return "valueString", text or raw


def _time(text: str) -> str | None:
    found = _TM.fullmatch(text.strip())
    if not found:
        return None
    hh, mm, ss = found.group(1), found.group(2) or "00", found.group(3) or "00"
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        return None
    return f"{hh}:{mm}:{ss}{found.group(4) or ''}"


def one_value(kind: str, rep: Repetition, where: Where, unit: JSON) -> tuple[str, Any] | None:
    """(value[x] element name, value) for one OBX-5 repetition of type ``kind``."""
    if kind == "NM":
        raw = val(rep, 1)
        number = decimal(raw)
        if number is None:
            where.error(102, f"OBX-5: '{raw}' is not a number (OBX-2 is NM)", 1)
            return None
        return "valueQuantity", quantity(number, unit)
    if kind == "SN":
        return _sn(rep, unit, where.text(rep))
    if kind in TEXT_TYPES:
        text = where.text(rep)
        return ("valueString", text) if text else None
    if kind in ("CE", "CWE", "CNE", "CF"):
        concept = dt.codeable_concept(rep)
        return ("valueCodeableConcept", concept) if concept else None
    if kind in ("IS", "ID"):
        code = val(rep, 1)
        return ("valueCodeableConcept", {"coding": [{"code": code}]}) if code else None
    if kind == "DT":
        date = where.date(val(rep, 1), 1)
        return ("valueDateTime", date) if date else None
    if kind in ("TS", "DTM"):
        moment = where.datetime(val(rep, 1), 1)
        return ("valueDateTime", moment) if moment else None
    if kind == "TM":
        time = _time(val(rep, 1))
        if time is None:
            where.warn(102, f"OBX-5: '{val(rep, 1)}' is not a valid time; left out", 1)
        return ("valueTime", time) if time else None
    if kind == "DR":
        period = periods.period(where, val(rep, 1), where, val(rep, 2), (1, 2))
        return ("valuePeriod", period) if period else None
    if kind == "NR":
        low, high = decimal(val(rep, 1)), decimal(val(rep, 2))
        rng = {k: quantity(v, unit) for k, v in (("low", low), ("high", high)) if v is not None}
        return ("valueRange", rng) if rng else None
    return None


def _content_type(kind: str, subtype: str) -> str | None:
    """A MIME type from a v2 type/subtype pair: "application"+"pdf", "AP"+"PDF", "text/html"."""
    if "/" in subtype:
        return subtype.lower()
    if kind.lower() in _MIME_TOP and subtype:
        return f"{kind.lower()}/{subtype.lower()}"
    return _SUBTYPE_MIME.get(subtype.upper())


def _encoded_data(rep: Repetition, where: Where) -> JSON | None:
    """ED -> Attachment (IG ED[Attachment]): ED.5 as base64, ED.3 (ED.2) the contentType."""
    data, encoding = val(rep, 5), val(rep, 4).upper()
    if not data:
        return None
    try:
        if encoding == "HEX":
            data = base64.b64encode(bytes.fromhex(data)).decode()
        elif encoding == "A":
            data = base64.b64encode(data.encode()).decode()
        else:  # Base64 (and unnamed): carried as sent, whitespace dropped
            data = "".join(data.split())
            base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        where.warn(102, f"OBX-5: ED data is not valid {encoding or 'Base64'}; value left out", 5)
        return None
    # att-1: an Attachment with data SHALL have a contentType; data of no known type is
    # opaque bytes (RFC 2046 application/octet-stream).
    mime = _content_type(val(rep, 2), val(rep, 3)) or "application/octet-stream"
    return {"contentType": mime, "data": data}


def _reference_pointer(rep: Repetition) -> JSON | None:
    """RP -> Attachment (IG RP[Attachment]): RP.1 the url, RP.3/RP.4 the contentType."""
    url = val(rep, 1)
    if not url:
        return None
    attachment: JSON = {"url": url}
    mime = _content_type(val(rep, 3), val(rep, 4))
    if mime:
        attachment["contentType"] = mime
    return attachment


def _attachments(kind: str, reps: list[tuple[int, Repetition]], where: Where) -> JSON:
    found = [
        a
        for i, rep in reps
        if (a := _encoded_data(rep, where.sub(5, i)) if kind == "ED" else _reference_pointer(rep))
    ]
    return (
        {"extension": [{"url": VALUE_ATTACHMENT, "valueAttachment": a} for a in found]}
        if found
        else {}
    )


def values(obx: Segment, where: Where, code: JSON) -> JSON:
    """value[x] or component[] for an OBX (rules in the module doc)."""
    reps = where.reps(5)
    if not reps:
        return {}
    kind = val(first(obx, 2)).upper()
    at5 = where.sub(5)
    if not kind:
        at5.warn(101, "OBX-2 (value type) is empty; OBX-5 read as ST")
        kind = "ST"
    unknown = "OBX-2: '{code}' is not a value type (HL7 table 0125); OBX-5 left out"
    if look_up(t.VALUE_TYPES_0125, kind, where.sub(2), unknown) is None:
        return {}
    if kind in UNMAPPED_TYPES:
        where.sub(2).warn(102, f"OBX-5 of type {kind} is not mapped; value left out")
        return {}
    if kind in ("ED", "RP"):
        return _attachments(kind, reps, where)
    unit = units(obx)
    if kind == "NA":  # the repetitions are the rows of one array, not separate values
        return sampled_data(reps, where, unit)
    if kind in TEXT_TYPES:
        text = "\n".join(s for _, rep in reps if (s := at5.text(rep)))
        return {"valueString": text} if text else {}
    mapped = [one_value(kind, rep, at5.sub(5, i), unit) for i, rep in reps]
    found = [m for m in mapped if m is not None]
    if len(reps) == 1:
        return dict(found)
    return {"component": [{"code": code, name: value} for name, value in found]}


def reference_range(obx: Segment, unit: JSON) -> list[JSON]:
    """OBX-7 -> referenceRange: always ``text`` (IG); ``low``/``high`` too when it parses
    (the IG: "if sufficiently parseable"), as ``a-b``/``a to b`` or one bound, ``<x``/``<=x``
    (high) or ``>x``/``>=x`` (low). FHIR bounds are inclusive and a SimpleQuantity has no
    comparator, so ``<0.10`` gives high 0.10: the text keeps the sender's strictness."""
    rep = first(obx, 7)
    text = val(rep, 1) if rep is not None else ""
    if not text:
        return []
    out: JSON = {"text": text}
    found = _RANGE.fullmatch(text)
    if found:
        low, high = decimal(found.group(1)), decimal(found.group(2))
        if low is not None and high is not None and low <= high:
            out["low"] = quantity(low, unit)
            out["high"] = quantity(high, unit)
    elif bound := _BOUND.fullmatch(text):
        number = decimal(bound.group(2))
        if number is not None:
            out["high" if bound.group(1).startswith("<") else "low"] = quantity(number, unit)
    return [out]


def interpretations(obx: Segment, where: Where) -> list[JSON]:
    """OBX-8 repetitions via table 0078 -> v3 ObservationInterpretation; unknown ones warn."""
    out = []
    at8 = where.sub(8)
    for i, rep in at8.reps():
        code = val(rep, 1)
        unknown = "OBX-8: '{code}' is not in HL7 table 0078; left out"
        display = look_up(t.INTERPRETATION_0078, code, at8.sub(8, i), unknown)
        if display is None:
            continue
        concept: JSON = {
            "coding": [{"system": t.V3_INTERPRETATION, "code": code.upper(), "display": display}]
        }
        if val(rep, 9):
            concept["text"] = val(rep, 9)
        out.append(concept)
    return out


def status(obx: Segment, where: Where) -> str:
    """OBX-11 via table 0085; missing or unknown -> "unknown" with a warning."""
    found = look_up(
        t.RESULT_STATUS_0085,
        val(first(obx, 11)).upper(),
        where.sub(11),
        "OBX-11: '{code}' is not in HL7 table 0085; status unknown",
        empty="OBX-11 (result status) is empty; status unknown",
    )
    return "unknown" if found is None else found


DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ABSENT_BY_STATUS = {"X": "cannot-be-obtained", "N": "not-asked"}


def data_absent_reason(obx: Segment) -> JSON | None:
    """IG OBX-11 rows: X -> cannot-be-obtained, N -> not-asked (only when no value)."""
    reason = ABSENT_BY_STATUS.get(val(first(obx, 11)).upper())
    return {"coding": [{"system": DATA_ABSENT, "code": reason}]} if reason else None
