"""PV1 / PV2 -> Encounter as data (IG segment maps PV1[Encounter] and PV2[Encounter]);
mapping/encounter.py reads these rows.

Not mapped from these two segments, and why: PV2-10 and PV2-21/40 (the IG names only
extensions it has not defined, "extension?-..."), and the fields the IG leaves without a
target.
"""

from __future__ import annotations

from hl7_adapters.mapping.tables import EXTENSION, V2, V3_PARTICIPATION, Code

# IG PV1[Encounter] / PV2[Encounter]: participant types for their XCN fields.
REFERRER = Code(V3_PARTICIPATION, "REF", "referrer")
PV1_PARTICIPANTS: tuple[tuple[int, Code], ...] = (
    (7, Code(V3_PARTICIPATION, "ATND", "attender")),
    (8, REFERRER),
    (9, Code(V3_PARTICIPATION, "CON", "consultant")),
    (17, Code(V3_PARTICIPATION, "ADM", "admitter")),
    (52, Code(V3_PARTICIPATION, "PART", "Participation")),  # other healthcare provider
)
PV2_PARTICIPANTS: tuple[tuple[int, Code], ...] = ((13, REFERRER),)  # referral source
# IG PV1[Encounter]: Encounter.hospitalization from PV1 CWE fields; (field, element, HL7
# table, whether the FHIR element repeats).
PV1_HOSPITALIZATION: tuple[tuple[int, str, str, bool], ...] = (
    (13, "reAdmission", "0092", False),
    (14, "admitSource", "0023", False),
    (16, "specialCourtesy", "0099", True),  # VIP indicator
    (36, "dischargeDisposition", "0112", False),
    (38, "dietPreference", "0114", True),
)
# IG PV1[Encounter]: PV1-37 (DLD) is hospitalization.destination, a Location whose type is
# DLD.1 (IG DLD[Location-Discharge], HL7 table 0113); DLD.2 (effective date) has no target.
DISCHARGE_LOCATION_TABLE = "0113"

# IG PV1[Encounter]: PV1-40 (bed status, HL7 table 0116) is Location.operationalStatus of the
# most granular level of PV1-3, when PV1-3 names a room or a bed (the IG's condition); R4
# binds operationalStatus to the v2-0116 value set.
BED_STATUS = V2 + "0116"
BED_STATUS_0116 = {
    "C": Code(BED_STATUS, "C", "Closed"),
    "H": Code(BED_STATUS, "H", "Housekeeping"),
    "I": Code(BED_STATUS, "I", "Isolated"),
    "K": Code(BED_STATUS, "K", "Contaminated"),
    "O": Code(BED_STATUS, "O", "Occupied"),
    "U": Code(BED_STATUS, "U", "Unoccupied"),
}

# IG PV1[Encounter]: Encounter.location from PV1's PLs; (field, status, temporary). A None
# status goes by the patient class (P, preadmit: planned; else active). PV1-11 and PV1-43
# are temporary locations: the IG marks them with the core extension
# subject-locationClassification, code "temporary" (the IG writes the value set's URL as the
# system; the code is defined by the code system below, which that value set includes).
PV1_LOCATIONS: tuple[tuple[int, str | None, bool], ...] = (
    (3, None, False),  # assigned patient location
    (6, "completed", False),  # prior patient location
    (11, "active", True),  # temporary location
    (42, "reserved", False),  # pending location
    (43, "completed", True),  # prior temporary location
)
MODE_OF_ARRIVAL = EXTENSION + "encounter-modeOfArrival"  # PV2-38 (core extension)
LOCATION_CLASSIFICATION = EXTENSION + "subject-locationClassification"
TEMPORARY = Code("http://hl7.org/fhir/subject-locationClassification", "temporary", "Temporary")

# IG PV2[Encounter]: PV2-8 and PV2-9 are "extension-plannedStartDate" and
# "extension-plannedDischargeDate", R5's Encounter.plannedStartDate and .plannedEndDate
# ("the planned end date/time (or discharge date)"); in R4 an R5 element is carried by its
# cross-version extension, whose URL FHIR defines. (field, extension URL), valueDateTime.
R5_ELEMENT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-"
PV2_DATETIME_EXTENSIONS: tuple[tuple[int, str], ...] = (
    (8, R5_ELEMENT + "Encounter.plannedStartDate"),
    (9, R5_ELEMENT + "Encounter.plannedEndDate"),
)
# IG PV2[Encounter]: PV2-22 (visit protection indicator, ID with HL7 table 0136 Y/N) is a
# meta.security Coding (IG ID[Coding]: the table as system).
PROTECTION_SYSTEM = V2 + "0136"

# IG concept map EncounterPriority: PV2-25 (HL7 table 0217) -> v3 ActPriority.
ACT_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
PRIORITY_0217 = {
    "1": Code(ACT_PRIORITY, "EM", "emergency"),
    "2": Code(ACT_PRIORITY, "UR", "urgent"),
    "3": Code(ACT_PRIORITY, "EL", "elective"),
}
