"""HL7 v2 data types -> FHIR data types, one function per IG datatype map.

Each function takes one repetition and the :class:`Where` it came from (to report bad dates)
and returns a FHIR JSON dict, or None when the repetition carries nothing FHIR could use.
The IG maps followed (github.com/HL7/v2-to-fhir ``mappings/datatypes``, STU1 "E2" sheets):
CX[Identifier], EI[Identifier], XPN[HumanName], XAD[Address], XTN[ContactPoint],
CWE[CodeableConcept] (also CE/CNE/CF, which share the first components), XCN[Practitioner],
NDL[PractitionerRole] (its person, as XCN[Practitioner]), DR[Period]; PL[Location] is
``locations``. DTM -> dateTime/instant is Where.datetime/instant (context.py).
Deviations are named where they happen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hl7_adapters.escapes import Delimiters
from hl7_adapters.mapping import identifiers as ids
from hl7_adapters.mapping import periods
from hl7_adapters.mapping import tables as t
from hl7_adapters.mapping.context import Where, val
from hl7_adapters.mapping.lookups import look_up
from hl7_adapters.values import Repetition, fhir_integer

_HL7_TABLE = re.compile(r"HL7(\d{4})")
_TIME_START = re.compile(r"\d{4}")

JSON = dict[str, Any]


def compact(data: JSON) -> JSON:
    """Drop empty values so that no FHIR element is sent empty."""
    return {k: v for k, v in data.items() if v not in (None, "", [], {})}


# --------------------------------------------------------------------------- codes


def coding_system(name: str, oid: str = "") -> str | None:
    """CWE.3 (a table 0396 name, an OID or a URI) -> FHIR code system URI, None if unknown."""
    name = name.strip()
    found = t.CODING_SYSTEMS_0396.get(name.upper())
    if found:
        return found
    table = _HL7_TABLE.fullmatch(name.upper())
    if table:
        return f"{t.V2}{table.group(1)}"
    if ids.is_oid(name):
        return f"urn:oid:{name}"
    if ":" in name and " " not in name:
        return name  # already a URI
    oid = oid.strip()
    if oid and ids.is_oid(oid):
        return f"urn:oid:{oid}"  # CWE.14 coding system OID
    return None


def _coding(code: str, display: str, system_name: str, version: str = "", oid: str = "") -> JSON:
    if not code:
        return {}
    # An unknown or local ("L", "99zzz") coding system: the code is kept without a system.
    known = coding_system(system_name, oid) if system_name or oid else None
    return compact(
        {"system": known, "version": version or None, "code": code, "display": display or None}
    )


def codeable_concept(rep: Repetition | None, table: str = "") -> JSON | None:
    """CWE/CE/CNE -> CodeableConcept: triplets 1-3, 4-6 and 10-12, CWE.9 as text.

    Without any code, CWE.2 becomes the text so that a text-only value is not lost. ``table``:
    the HL7 table a coded field is bound to (PV1-36 -> 0112); a code sent without a coding
    system (CWE.3, or an IS field, which has none) is of that table and gets its system
    (IG IS/CWE[CodeableConcept]: "http://terminology.hl7.org/CodeSystem/v2-" + table), so a
    discharge disposition "01" is not a bare code nobody can interpret.
    """
    if rep is None:
        return None
    return _concept(lambda n: val(rep, n), table)


def component_concept(rep: Repetition | None, component: int, table: str = "") -> JSON | None:
    """A CWE that is one component of a composite (DLD.1): its parts are subcomponents."""
    if rep is None:
        return None
    parts = [p.strip() for p in rep.subcomponents(component)]
    return _concept(lambda n: parts[n - 1] if n <= len(parts) else "", table)


def _concept(part: Callable[[int], str], table: str) -> JSON | None:
    """codeable_concept over CWE parts, however the CWE is nested."""
    first_system = part(3) or (f"HL7{table}" if table and not part(14) else "")
    codings = [
        _coding(part(1), part(2), first_system, part(7), part(14)),
        _coding(part(4), part(5), part(6), part(8), part(17)),
        _coding(part(10), part(11), part(12), part(13), part(20)),
    ]
    codings = [c for c in codings if c]
    text = part(9) or (part(2) if not codings else "")
    result = compact({"coding": codings, "text": text or None})
    return result or None


def mapped_concept(
    rep: Repetition | None, table: dict[str, t.Code], v2_table: str, where: Where
) -> JSON | None:
    """A CWE mapped through an IG concept map: the FHIR coding first, the v2 coding kept.

    An unknown code is a warning; whatever text was sent stays as CodeableConcept.text.
    """
    if rep is None:
        return None
    original = val(rep, 1)
    unknown = "{name}: '{code}' is not in HL7 table " + v2_table
    target = look_up(table, original, where, unknown)
    if target is None:
        text = val(rep, 9) or val(rep, 2) or original
        return {"text": text} if text else None
    codings = [
        compact({"system": target.system, "code": target.code, "display": target.display or None})
    ]
    if (t.V2 + v2_table, original) != (target.system, target.code):
        codings.append(
            compact({"system": t.V2 + v2_table, "code": original, "display": val(rep, 2) or None})
        )
    return compact({"coding": codings, "text": val(rep, 9) or None})


# --------------------------------------------------------------------------- identifiers


def identifier_type(code: str, where: Where) -> JSON | None:
    """CX.5 via table 0203; an unknown type keeps its text and is reported."""
    code = code.strip()
    if not code:
        return None
    unknown = "{name}: identifier type '{code}' is not in HL7 table 0203"
    display = look_up(t.IDENTIFIER_TYPE_0203, code, where, unknown)
    if display is None:
        return {"text": code}
    return {"coding": [{"system": t.V2 + "0203", "code": code.upper(), "display": display}]}


def cx_identifier(rep: Repetition, where: Where, default_type: str = "") -> JSON | None:
    """CX -> Identifier (IG CX[Identifier]): value, system + assigner from CX.4, type CX.5,
    period CX.7/CX.8. None when CX.1 is empty (no value, no identifier)."""
    value = val(rep, 1)
    if not value:
        return None
    hd = (val(rep, 4, 1), val(rep, 4, 2), val(rep, 4, 3))
    period = periods.period(where, val(rep, 7), where, val(rep, 8), (7, 8))
    return compact(
        {
            "type": identifier_type(val(rep, 5) or default_type, where),
            "system": ids.hd_system(*hd),
            "value": value,
            "period": period or None,
            "assigner": ids.assigner(*hd),
        }
    )


def ei_identifier(rep: Repetition | None, type_code: str = "") -> JSON | None:
    """EI -> Identifier (IG EI[Identifier]): EI.1 value, system from EI.2-4 by the HD rule.

    IHE PCD sends ``<EUI-64>^EUI-64`` (the namespace names the scheme): that is the IEEE
    EUI-64 identifier system, not a namespace.
    """
    value = val(rep, 1)
    if not value:
        return None
    namespace, uid, kind = val(rep, 2), val(rep, 3), val(rep, 4)
    if not uid and namespace.upper() in ("EUI-64", "EUI64"):
        system: str | None = ids.EUI64_SYSTEM
    else:
        system = ids.hd_system(namespace, uid, kind)
    typ = (
        {
            "coding": [
                {
                    "system": t.V2 + "0203",
                    "code": type_code,
                    "display": t.IDENTIFIER_TYPE_0203[type_code],
                }
            ]
        }
        if type_code
        else None
    )
    return compact({"type": typ, "system": system, "value": value})


# --------------------------------------------------------------------------- names


def _period(where: Where, start: str, end: str, component: int) -> JSON | None:
    return periods.period(where, start, where, end, (component, component)) or None


def human_name(rep: Repetition, where: Where, name_type: int = 7) -> JSON | None:
    """XPN -> HumanName (IG XPN[HumanName], XCN[Practitioner] for the name); ``name_type`` is
    10 inside an XCN."""
    offset = 0 if name_type == 7 else 1  # XCN: XPN.1 is XCN.2, ...
    family = val(rep, 1 + offset, 1)  # FN.1 surname
    given = [g for g in (val(rep, 2 + offset), val(rep, 3 + offset)) if g]
    # suffix: XPN.4 (Jr), XPN.6 (degree, PhD) and the professional suffix (XPN.14, XCN.21: MD)
    professional = val(rep, 14 if name_type == 7 else 21)
    parts = (val(rep, 4 + offset), val(rep, 6 + offset), professional)
    suffix = list(dict.fromkeys(s for s in parts if s))
    prefix = [p for p in (val(rep, 5 + offset),) if p]
    if not (family or given or prefix or suffix):
        return None
    use = None
    code = val(rep, name_type).upper()
    if code:
        use = t.NAME_USE_0200.get(code)  # a known type may have no FHIR use
        unknown = "{name}: name type '{code}' is not in HL7 table 0200"
        look_up(t.NAME_CODES_0200, code, where, unknown, component=name_type)
    period = None
    if name_type == 7:
        period = _period(where, val(rep, 12), val(rep, 13), 12) or _period(
            where, val(rep, 10, 1), val(rep, 10, 2), 10
        )
    return compact(
        {
            "use": use,
            "family": family,
            "given": given,
            "prefix": prefix,
            "suffix": suffix,
            "period": period,
        }
    )


def name_display(name: JSON | None) -> str:
    if not name:
        return ""
    parts = [
        *name.get("prefix", []),
        *name.get("given", []),
        name.get("family", ""),
        *name.get("suffix", []),
    ]
    return " ".join(p for p in parts if p)


# --------------------------------------------------------------------------- address


def address(rep: Repetition, where: Where) -> JSON | None:
    """XAD -> Address (IG XAD[Address]).

    Deviation: the first line is SAD.1 (street address) as sent; only when it is empty are
    SAD.3 (dwelling number) and SAD.2 (street name) joined into it ("1000 Hospital Lane")
    instead of ADXP extensions. (SAD.2 and SAD.3 are parts of SAD.1, not more of the line.)
    """
    street = val(rep, 1, 1) or " ".join(p for p in (val(rep, 1, 3), val(rep, 1, 2)) if p)
    lines = [line for line in (street, val(rep, 2)) if line]
    kind = val(rep, 7).upper()
    use = t.ADDRESS_USE_0190.get(kind)
    typ = t.ADDRESS_TYPE_0190.get(kind)
    if kind:
        unknown = "{name}: address type '{code}' is not in HL7 table 0190"
        look_up(t.ADDRESS_CODES_0190, val(rep, 7), where, unknown, component=7)
    data = {
        "line": lines,
        "city": val(rep, 3),
        "state": val(rep, 4),
        "postalCode": val(rep, 5),
        "country": val(rep, 6),
        "district": val(rep, 9),
    }
    if not any(data.values()):
        return None
    period = _period(where, val(rep, 13), val(rep, 14), 13) or _period(
        where, val(rep, 12, 1), val(rep, 12, 2), 12
    )
    return compact({"use": use, "type": typ, **data, "period": period})


# --------------------------------------------------------------------------- telecom


def contact_point(rep: Repetition, where: Where, default_use: str | None = None) -> JSON | None:
    """XTN -> ContactPoint (IG XTN[ContactPoint]).

    Value: XTN.4 for Internet/X.400; else XTN.12, else "+XTN.5 XTN.6 XTN.7 XXTN.8" when the
    parts are sent, else XTN.1. Deviation: an XTN with XTN.1 but no XTN.3 (every v2.2/v2.3
    phone number) gets system "phone" rather than a data-absent-reason extension, because
    XTN.1 is by definition a telephone number and FHIR needs a system for a value.
    """
    equipment = val(rep, 3)
    kind = equipment.upper()
    if kind in ("INTERNET", "X.400"):
        value = val(rep, 4)
    else:
        local = val(rep, 7)
        composed = ""
        if local:
            parts = [f"+{val(rep, 5)}" if val(rep, 5) else "", val(rep, 6), local]
            composed = " ".join(p for p in parts if p)
            if val(rep, 8):
                composed += f" X{val(rep, 8)}"
        value = val(rep, 12) or composed or val(rep, 1) or val(rep, 4)
    if not value:
        return None
    system = None
    if kind:
        unknown = "{name}: equipment type '{code}' is not in HL7 table 0202"
        system = look_up(t.TELECOM_EQUIPMENT_0202, equipment, where, unknown, component=3)
    if system is None:
        system = "email" if "@" in value and not val(rep, 1) else "phone"
    if kind == "INTERNET" and "@" not in value:
        system = "url"
    use = t.TELECOM_USE_0201.get(val(rep, 2).upper()) or default_use
    if kind == "CP":
        use = "mobile"
    rank = val(rep, 18)
    return compact(
        {
            "system": system,
            "value": value,
            "use": use,
            "rank": number if (number := fhir_integer(rank)) else None,  # positiveInt
            "period": _period(where, val(rep, 13), val(rep, 14), 13),
        }
    )


# --------------------------------------------------------------------------- people/places


def xcn_identifier(rep: Repetition, where: Where) -> JSON | None:
    """XCN.1 + XCN.9 (assigning authority) + XCN.13 (type) -> Identifier."""
    value = val(rep, 1)
    if not value:
        return None
    hd = (val(rep, 9, 1), val(rep, 9, 2), val(rep, 9, 3))
    return compact(
        {
            "type": identifier_type(val(rep, 13), where),
            "system": ids.hd_system(*hd),
            "value": value,
            "assigner": ids.assigner(*hd),
        }
    )


def practitioner(rep: Repetition, where: Where) -> tuple[JSON | None, JSON | None, str]:
    """XCN -> (Practitioner, its Identifier, display) per IG XCN[Practitioner].

    The Practitioner is None when XCN.1 is empty: without an identifier nothing can find it
    again, so the caller references it by display only instead of creating a duplicate per
    message.
    """
    name = human_name(rep, where, name_type=10)
    display = name_display(name) or val(rep, 1)
    identifier = xcn_identifier(rep, where)
    if identifier is None:
        return None, None, display
    resource = compact(
        {
            "resourceType": "Practitioner",
            "identifier": [identifier],
            "name": [name] if name else None,
        }
    )
    return resource, identifier, display


def ei_identifier_from(rep: Repetition, component: int) -> JSON | None:
    """An EI held in one component (subcomponents EI.1-4), e.g. PL.10."""
    value = val(rep, component, 1)
    if not value:
        return None
    system = ids.hd_system(val(rep, component, 2), val(rep, component, 3), val(rep, component, 4))
    return compact({"system": system, "value": value})


def ndl_person(rep: Repetition, d: Delimiters, codec: str) -> Repetition:
    """NDL (OBR-32..35) -> its person (NDL.1, a CNN) laid out as an XCN, for XCN[Practitioner].

    CNN's parts are subcomponents of NDL.1 (``id&family&given&middle&suffix&prefix&degree&
    source table&authority namespace&authority id&authority type``), in the XCN order but
    with the assigning authority as three parts where XCN.9 is one. Many feeds send an XCN
    there instead (``444^HIPPOCRATES^HOWARD``: samples 18 and 20 of the shared corpus), so
    NDL.1 without subcomponents is read as the XCN it then is -- unless NDL.2 (start time)
    holds a time, which no XCN.2 (family name) does: then it is an NDL with only an id.
    """
    head = rep.components()[0] if rep.components() else ""
    if d.subcomponent not in head and not _TIME_START.match(rep.get(2)):
        return rep
    parts = head.split(d.subcomponent)
    xcn = parts[:8] + [""] * (8 - len(parts[:8])) + [d.subcomponent.join(parts[8:11])]
    return Repetition(d.component.join(xcn), d, codec)
