"""Trigger event -> message structure (HL7 table 0354), for when MSH-9.3 is missing or wrong.

A declarative table written by hand from HL7 table 0354 as published with v2.5.1-v2.8
(structure -> the trigger events that use it), with the differences of v2.1-v2.3.1 as
overrides. hl7apy 1.3.5 was checked for this knowledge: its per-version ``HL70354`` tables list
structure IDs only (no events), and its parser derives the structure from MSH-9.3 or else
``<type>_<trigger>`` -- which is wrong for A04/A08 (ADT_A01), A28/A31 (ADT_A05), A40 (ADT_A39).
The tests cross-check every structure named here against the message definitions hl7apy ships.

Why it matters: real senders put ``ADT_A04`` or ``ADT_A40`` in MSH-9.3 (not structure IDs) or
leave it out (v2.2/v2.3 have no MSH-9.3); the mapper and the optional hl7apy validation need
the real structure to know which segment groups to expect.
"""

from __future__ import annotations

# Structure ID -> trigger events using it (v2.5.1 and later; most also hold for v2.4/v2.5).
_TABLE_0354: dict[str, tuple[str, ...]] = {
    "ADT_A01": ("A01", "A04", "A08", "A13"),
    "ADT_A02": ("A02",),
    "ADT_A03": ("A03",),
    "ADT_A05": ("A05", "A14", "A28", "A31"),
    "ADT_A06": ("A06", "A07"),
    "ADT_A09": ("A09", "A10", "A11"),
    "ADT_A12": ("A12",),
    "ADT_A15": ("A15",),
    "ADT_A16": ("A16",),
    "ADT_A17": ("A17",),
    "ADT_A20": ("A20",),
    "ADT_A21": ("A21", "A22", "A23", "A25", "A26", "A27", "A29", "A32", "A33"),
    "ADT_A24": ("A24",),
    "ADT_A37": ("A37",),
    "ADT_A38": ("A38",),
    "ADT_A39": ("A39", "A40", "A41", "A42"),
    "ADT_A43": ("A43",),
    "ADT_A45": ("A45",),
    "ADT_A50": ("A50", "A51"),
    "ADT_A52": ("A52", "A53"),
    "ADT_A54": ("A54", "A55"),
    "ADT_A60": ("A60",),
    "ADT_A61": ("A61", "A62"),
    "QRY_A19": ("A19",),
    "ADR_A19": ("A19",),
    "BAR_P01": ("P01",),
    "BAR_P02": ("P02",),
    "BAR_P05": ("P05",),
    "BAR_P06": ("P06",),
    "BAR_P10": ("P10",),
    "BAR_P12": ("P12",),
    "DFT_P03": ("P03",),
    "DFT_P11": ("P11",),
    "ORU_R01": ("R01",),
    "ORU_R30": ("R30",),
    "ORU_R31": ("R31",),
    "ORU_R32": ("R32",),
    "ORU_W01": ("W01",),
    "OUL_R21": ("R21",),
    "OUL_R22": ("R22",),
    "OUL_R23": ("R23",),
    "OUL_R24": ("R24",),
    "ORM_O01": ("O01",),
    "ORR_O02": ("O02",),
    "OMG_O19": ("O19",),
    "ORG_O20": ("O20",),
    "OML_O21": ("O21",),
    "ORL_O22": ("O22",),
    "OMI_O23": ("O23",),
    "ORI_O24": ("O24",),
    "RDE_O11": ("O11", "O25"),
    "RRE_O12": ("O12", "O26"),
    "RDS_O13": ("O13",),
    "RAS_O17": ("O17",),
    "MDM_T01": ("T01", "T03", "T05", "T07", "T09", "T11"),
    "MDM_T02": ("T02", "T04", "T06", "T08", "T10"),
    "VXQ_V01": ("V01",),
    "VXX_V02": ("V02",),
    "VXR_V03": ("V03",),
    "VXU_V04": ("V04",),
    "SIU_S12": tuple(f"S{n}" for n in range(12, 25)) + ("S26",),
    "SRM_S01": tuple(f"S{n:02d}" for n in range(1, 12)),
    "SRR_S01": tuple(f"S{n:02d}" for n in range(1, 12)),
    "PPR_PC1": ("PC1", "PC2", "PC3"),
    "REF_I12": ("I12", "I13", "I14", "I15"),
    "RRI_I12": ("I12", "I13", "I14", "I15"),
    "QBP_Q11": ("Q11",),
    "QBP_Q21": ("Q21", "Q22", "Q23", "Q24", "Q25"),
    "RSP_K11": ("K11",),
    "RSP_K21": ("K21",),
    "RSP_K22": ("K22",),
    "RSP_K23": ("K23", "K24"),
    "ERP_R09": ("R09",),
    "MFN_M02": ("M02",),
    "MFN_M05": ("M05",),
}

# Versions before 2.4 had no ADT_A05 (A05/A14/A28/A31 used ADT_A01) nor ADT_A12 (ADT_A09).
_OLD_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1")
_OLD_OVERRIDES: dict[tuple[str, str], str] = {
    **{("ADT", t): "ADT_A01" for t in ("A05", "A14", "A28", "A31")},
    ("ADT", "A12"): "ADT_A09",
}

_BY_EVENT: dict[tuple[str, str], str] = {
    (structure[:3], event): structure
    for structure, events in _TABLE_0354.items()
    for event in events
}

# Every structure a (type, trigger) has had in some version: a declared MSH-9.3 from this set
# is accepted as the sender's (valid) choice rather than "corrected".
_ALTERNATIVES: dict[tuple[str, str], frozenset[str]] = {
    key: frozenset({value, _OLD_OVERRIDES.get(key, value)}) for key, value in _BY_EVENT.items()
}

KNOWN_STRUCTURES: frozenset[str] = frozenset(_TABLE_0354) | {"ACK"}


def _is_old(version: str | None) -> bool:
    return bool(version) and str(version).strip() in _OLD_VERSIONS


def structure_for(message_type: str, trigger: str, version: str | None = None) -> str | None:
    """The message structure for MSH-9.1/MSH-9.2 in a version (default: v2.5+), or None."""
    mtype, event = message_type.strip().upper(), trigger.strip().upper()
    if mtype == "ACK":
        return "ACK"  # the general acknowledgment uses one structure for every trigger
    if _is_old(version) and (mtype, event) in _OLD_OVERRIDES:
        return _OLD_OVERRIDES[(mtype, event)]
    return _BY_EVENT.get((mtype, event))


def resolve_structure(
    message_type: str, trigger: str, declared: str = "", version: str | None = None
) -> tuple[str | None, str | None]:
    """(structure to use, warning or None) given MSH-9 as sent.

    A declared MSH-9.3 is kept when it is the table's answer for some version, or when the table
    does not know the trigger; otherwise the table's structure replaces it, with a warning.
    """
    declared = declared.strip().upper()
    expected = structure_for(message_type, trigger, version)
    if expected is None:
        return (declared or None), None
    if not declared:
        return expected, None
    key = (message_type.strip().upper(), trigger.strip().upper())
    if declared == expected or declared in _ALTERNATIVES.get(key, frozenset()):
        return declared, None
    return (
        expected,
        f"MSH-9.3 {declared!r} is not the structure of {key[0]}^{key[1]}; using {expected}",
    )


def events_of(structure: str) -> tuple[str, ...]:
    """The trigger events using a structure (v2.5+ table), e.g. for documentation and tests."""
    return _TABLE_0354.get(structure.strip().upper(), ())
