"""HL7 v2 code tables and their FHIR targets, as data.

Each table follows the v2-to-FHIR IG (HL7 International, STU1, https://hl7.org/fhir/uv/v2mappings
/ build https://build.fhir.org/ig/HL7/v2-to-fhir/) concept map named in its comment; the source
CSVs live in github.com/HL7/v2-to-fhir under ``mappings/codesystems``. Where the IG leaves a
v2 code unmapped but FHIR needs a value (a required ``status``), the gap is filled here and the
row is marked ``# local``: those are this server's choices, not the IG's.

Keeping the tables apart from the code keeps a reviewer's question ("what does OBX-11 'R'
become?") answerable by reading one line.
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    system: str
    code: str
    display: str = ""


V2 = "http://terminology.hl7.org/CodeSystem/v2-"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
V3_NULL = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:iso:std:iso:11073:10101"

# IG "AdministrativeSex" (HL7 table 0001 -> administrative-gender).
GENDER_0001: dict[str, str] = {
    "F": "female",
    "M": "male",
    "O": "other",
    "U": "unknown",
    "A": "other",
    "N": "other",
}

# IG "MaritalStatus" (table 0002 -> v3 MaritalStatus / NullFlavor).
MARITAL_0002: dict[str, Code] = {
    "A": Code(V3_MARITAL, "L", "Legally Separated"),
    "D": Code(V3_MARITAL, "D", "Divorced"),
    "M": Code(V3_MARITAL, "M", "Married"),
    "S": Code(V3_MARITAL, "S", "Never Married"),
    "W": Code(V3_MARITAL, "W", "Widowed"),
    "C": Code(V3_MARITAL, "C", "Common Law"),
    "G": Code(V3_MARITAL, "T", "Domestic partner"),
    "P": Code(V3_MARITAL, "T", "Domestic partner"),
    "R": Code(V3_MARITAL, "T", "Domestic partner"),
    "E": Code(V3_MARITAL, "L", "Legally Separated"),
    "N": Code(V3_MARITAL, "A", "Annulled"),
    "I": Code(V3_MARITAL, "I", "Interlocutory"),
    "B": Code(V3_MARITAL, "U", "unmarried"),
    "U": Code(V3_NULL, "UNK", "Unknown"),
    "O": Code(V3_NULL, "OTH", "Other"),
    "T": Code(V3_NULL, "NAVU", "Not available"),
}

# IG "PatientClass[EncounterClass]" (table 0004 -> Encounter.class).
PATIENT_CLASS_0004: dict[str, Code] = {
    "E": Code(V3_ACT, "EMER", "emergency"),
    "I": Code(V3_ACT, "IMP", "inpatient encounter"),
    "O": Code(V3_ACT, "AMB", "ambulatory"),
    "P": Code(V3_ACT, "PRENC", "pre-admission"),
    "R": Code(V2 + "0004", "R", "Recurring patient"),
    "B": Code(V2 + "0004", "B", "Obstetrics"),
    "C": Code(V2 + "0004", "C", "Commercial Account"),
    "N": Code(V2 + "0004", "N", "Not Applicable"),
    "U": Code(V2 + "0004", "U", "Unknown"),
}

# IG "PatientClass[EncounterStatus]": the status when neither the event nor PV1-45 says more.
PATIENT_CLASS_STATUS_0004: dict[str, str] = {
    "E": "in-progress",
    "I": "in-progress",
    "O": "in-progress",
    "P": "planned",
    "R": "in-progress",
    "B": "in-progress",
    "C": "in-progress",
    "N": "in-progress",
    "U": "unknown",
}

# IG "Event[EncounterStatus]" (table 0003 trigger -> Encounter.status). The IG maps A08 to
# "unknown"; we do not, because an A08 upserts the stored Encounter and "unknown" would
# overwrite a real status: A08 (and A28/A31) take the PV1-derived status instead.
EVENT_ENCOUNTER_STATUS: dict[str, str] = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "planned",
    "A05": "planned",
    "A11": "cancelled",
    "A13": "in-progress",
    # Events the IG's concept map leaves out; their statuses follow the v2.5 chapter 3 event
    # definitions and the R4 EncounterStatus definitions (onleave: "the Encounter has begun,
    # but the patient is temporarily on leave").
    "A06": "in-progress",  # change an outpatient to an inpatient: same visit, new class
    "A07": "in-progress",  # change an inpatient to an outpatient
    "A12": "in-progress",  # cancel transfer: still admitted, at the previous location
    "A14": "planned",  # pending admit
    "A21": "onleave",  # patient goes on a leave of absence
    "A22": "in-progress",  # patient returns from a leave of absence
    "A27": "cancelled",  # cancel pending admit (A14)
    "A38": "cancelled",  # cancel pre-admit (A05)
}

# IG table HL70201 -> ContactPoint.use (other 0201 codes have no use).
TELECOM_USE_0201: dict[str, str] = {"PRN": "home", "WPN": "work", "PRS": "mobile"}

# IG table HL70202 -> ContactPoint.system (CP: phone with use "mobile", per the IG).
TELECOM_EQUIPMENT_0202: dict[str, str] = {
    "PH": "phone",
    "FX": "fax",
    "MD": "other",
    "CP": "phone",
    "SAT": "other",
    "BP": "pager",
    "INTERNET": "email",
    "X.400": "email",
    "TDD": "other",
    "TTY": "other",
}

# IG XAD map with "AddressType[Use]" and "AddressType[Type]" (table 0190).
ADDRESS_USE_0190: dict[str, str] = {
    "BA": "old",
    "BI": "billing",
    "C": "temp",
    "B": "work",
    "H": "home",
    "O": "work",
}
ADDRESS_TYPE_0190: dict[str, str] = {"M": "postal", "SH": "postal"}
ADDRESS_CODES_0190 = frozenset("BA BI N BDL F C B H L M O P RH BR S SH TM V HV".split())

# IG "NameType" (table 0200 -> HumanName.use). Codes of 0200 the IG leaves unmapped are
# valid and simply give no use; codes outside 0200 are reported.
NAME_USE_0200: dict[str, str] = {
    "BAD": "old",
    "D": "usual",
    "L": "official",
    "M": "maiden",
    "MSK": "anonymous",
    "N": "nickname",
    "NAV": "temp",
    "R": "official",
    "TEMP": "temp",
}
NAME_CODES_0200 = frozenset("A B BAD C D F I K L M MSK N NAV NB NOUSE P R REL S T TEMP U".split())

# HL7 table 0203 (identifier type), the codes most feeds use; CX.5 -> Identifier.type.
IDENTIFIER_TYPE_0203: dict[str, str] = {
    "AM": "American Express",
    "AN": "Account number",
    "ANC": "Account number Creditor",
    "AND": "Account number debitor",
    "ANON": "Anonymous identifier",
    "ANT": "Temporary Account Number",
    "APRN": "Advanced Practice Registered Nurse number",
    "BA": "Bank Account Number",
    "BC": "Bank Card Number",
    "BCT": "Birth Certificate",
    "BR": "Birth registry number",
    "BRN": "Breed Registry Number",
    "CC": "Cost Center number",
    "CY": "County number",
    "DDS": "Dentist license number",
    "DEA": "Drug Enforcement Administration registration number",
    "DI": "Diner's Club card",
    "DL": "Driver's license number",
    "DN": "Doctor number",
    "DO": "Osteopathic License number",
    "DP": "Diplomatic Passport",
    "DPM": "Podiatrist license number",
    "DR": "Donor Registration Number",
    "DS": "Discover Card",
    "EI": "Employee number",
    "EN": "Employer number",
    "ESN": "Staff Enterprise Number",
    "FI": "Facility ID",
    "GI": "Guarantor internal identifier",
    "GL": "General ledger number",
    "GN": "Guarantor external identifier",
    "HC": "Health Card Number",
    "IND": "Indigenous/Aboriginal",
    "JHN": "Jurisdictional health number (Canada)",
    "LI": "Labor and industries number",
    "LN": "License number",
    "LR": "Local Registry ID",
    "MA": "Patient Medicaid number",
    "MB": "Member Number",
    "MC": "Patient's Medicare number",
    "MCD": "Practitioner Medicaid number",
    "MCN": "Microchip Number",
    "MCR": "Practitioner Medicare number",
    "MD": "Medical License number",
    "MI": "Military ID number",
    "MR": "Medical record number",
    "MRT": "Temporary Medical Record Number",
    "MS": "MasterCard",
    "NE": "National employer identifier",
    "NH": "National Health Plan Identifier",
    "NI": "National unique individual identifier",
    "NII": "National Insurance Organization Identifier",
    "NIIP": "National Insurance Payor Identifier (Payor)",
    "NP": "Nurse practitioner number",
    "NPI": "National provider identifier",
    "OD": "Optometrist license number",
    "PA": "Physician Assistant number",
    "PCN": "Penitentiary/correctional institution Number",
    "PE": "Living Subject Enterprise Number",
    "PEN": "Pension Number",
    "PI": "Patient internal identifier",
    "PN": "Person number",
    "PNT": "Temporary Living Subject Number",
    "PPN": "Passport number",
    "PRC": "Permanent Resident Card Number",
    "PRN": "Provider number",
    "PT": "Patient external identifier",
    "QA": "QA number",
    "RI": "Resource identifier",
    "RN": "Registered Nurse Number",
    "RPH": "Pharmacist license number",
    "RR": "Railroad Retirement number",
    "RRI": "Regional registry ID",
    "SB": "Social Beneficiary Identifier",
    "SID": "Specimen Identifier",
    "SL": "State license",
    "SN": "Subscriber Number",
    "SR": "State registry ID",
    "SS": "Social Security number",
    "TAX": "Tax ID number",
    "TN": "Treaty Number/ (Canada)",
    "U": "Unspecified identifier",
    "UPIN": "Medicare/CMS (formerly HCFA)'s Universal Physician Identification numbers",
    "VN": "Visit number",
    "VS": "VISA",
    "WC": "WIC identifier",
    "WCN": "Workers' Comp Number",
    "XX": "Organization identifier",
    "FILL": "Filler Identifier",
    "PLAC": "Placer Identifier",
}

# IG "Relationship" (table 0063 -> RelatedPerson.relationship).
RELATIONSHIP_0063: dict[str, Code] = {
    "SEL": Code(V3_ROLE, "ONESELF", "self"),
    "SPO": Code(V3_ROLE, "SPS", "spouse"),
    "DOM": Code(V3_ROLE, "SIGOTHR", "significant other"),
    "CHD": Code(V3_ROLE, "CHILD", "child"),
    "GCH": Code(V3_ROLE, "GRNDCHILD", "grandchild"),
    "NCH": Code(V3_ROLE, "NCHILD", "natural child"),
    "SCH": Code(V3_ROLE, "STPCHLD", "step child"),
    "FCH": Code(V3_ROLE, "CHLDFOST", "foster child"),
    "DEP": Code(V2 + "0063", "DEP", "Handicapped dependent"),
    "WRD": Code(V2 + "0063", "WRD", "Ward of court"),
    "PAR": Code(V3_ROLE, "PRN", "parent"),
    "MTH": Code(V3_ROLE, "MTH", "mother"),
    "FTH": Code(V3_ROLE, "FTH", "father"),
    "CGV": Code(V2 + "0063", "CGV", "Care giver"),
    "GRD": Code(V2 + "0063", "GRD", "Guardian"),
    "GRP": Code(V3_ROLE, "GRPRN", "grandparent"),
    "EXF": Code(V3_ROLE, "EXT", "extended family member"),
    "SIB": Code(V3_ROLE, "SIB", "sibling"),
    "BRO": Code(V3_ROLE, "BRO", "brother"),
    "SIS": Code(V3_ROLE, "SIS", "sister"),
    "FND": Code(V3_ROLE, "FRND", "unrelated friend"),
    "OAD": Code(V2 + "0063", "OAD", "Other adult"),
    "EME": Code(V2 + "0063", "EME", "Employee"),
    "EMR": Code(V2 + "0131", "E", "Employer"),
    "ASC": Code(V2 + "0063", "ASC", "Associate"),
    "EMC": Code(V2 + "0131", "C", "Emergency Contact"),
    "OWN": Code(V2 + "0063", "OWN", "Owner"),
    "TRA": Code(V2 + "0063", "TRA", "Trainer"),
    "MGR": Code(V2 + "0063", "MGR", "Manager"),
    "NON": Code(V2 + "0063", "NON", "None"),
    "UNK": Code(V2 + "0131", "U", "Unknown"),
    "OTH": Code(V2 + "0131", "O", "Other"),
}

# HL7 table 0131 (contact role, NK1-7), kept as v2 codes (IG NK1 map: relationship[2]).
CONTACT_ROLE_0131: dict[str, str] = {
    "C": "Emergency Contact",
    "E": "Employer",
    "F": "Federal Agency",
    "I": "Insurance Company",
    "N": "Next-of-Kin",
    "O": "Other",
    "S": "State Agency",
    "U": "Unknown",
}

# IG "AllergenType[AllergyIntoleranceCategory]" (table 0127; MA/MC have no category).
ALLERGEN_CATEGORY_0127: dict[str, str] = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "biologic",
    "PA": "environment",
    "LA": "environment",
}
ALLERGEN_CODES_0127 = frozenset({"DA", "FA", "MA", "MC", "EA", "AA", "PA", "LA"})
# IG "AllergyType": every allergen type except a contraindication is an allergy.
ALLERGY_TYPE_0127: dict[str, str] = {c: "allergy" for c in ALLERGEN_CODES_0127 - {"MC"}}

# IG "AllergySeverity[AllergyIntolerance.criticality]" and "[...reaction.severity]" (0128).
ALLERGY_CRITICALITY_0128: dict[str, str] = {"SV": "high", "MI": "low"}
ALLERGY_SEVERITY_0128: dict[str, str] = {"SV": "severe", "MO": "moderate", "MI": "mild"}
ALLERGY_SEVERITY_CODES_0128 = frozenset({"SV", "MO", "MI", "U"})

# IG "InterpretationCodes": table 0078 codes are carried into v3 ObservationInterpretation,
# which holds every one of them below (display from v3).
INTERPRETATION_0078: dict[str, str] = {
    "<": "Off scale low",
    ">": "Off scale high",
    "A": "Abnormal",
    "AA": "Critical abnormal",
    "AC": "Anti-complementary substances present",
    "B": "Better",
    "CAR": "Carrier",
    "D": "Significant change down",
    "DET": "Detected",
    "E": "Equivocal",
    "EX": "outside threshold",
    "EXP": "Expected",
    "H": "High",
    "HH": "Critical high",
    "HU": "Significantly high",
    "HX": "above high threshold",
    "I": "Intermediate",
    "IE": "Insufficient evidence",
    "IND": "Indeterminate",
    "L": "Low",
    "LL": "Critical low",
    "LU": "Significantly low",
    "LX": "below low threshold",
    "MS": "moderately susceptible",
    "N": "Normal",
    "NCL": "No CLSI defined breakpoint",
    "ND": "Not detected",
    "NEG": "Negative",
    "NR": "Non-reactive",
    "NS": "Non-susceptible",
    "OBX": "Interpretation qualifiers in separate OBX segments",
    "POS": "Positive",
    "QCF": "Quality control failure",
    "R": "Resistant",
    "RR": "Reactive",
    "S": "Susceptible",
    "SDD": "Susceptible-dose dependent",
    "SYN-R": "Synergy - resistant",
    "SYN-S": "Synergy - susceptible",
    "TOX": "Cytotoxic substance present",
    "U": "Significant change up",
    "UNE": "Unexpected",
    "VS": "very susceptible",
    "W": "Worse",
    "WR": "Weakly reactive",
}

# IG "ObservationResultStatusCodesInterpretation" (table 0085 -> Observation.status).
RESULT_STATUS_0085: dict[str, str] = {
    "A": "amended",
    "B": "amended",  # local: appended report, original values unchanged
    "C": "corrected",
    "D": "entered-in-error",
    "F": "final",
    "I": "registered",  # local: specimen in lab, results pending
    "N": "final",  # local: "not asked" is a final statement; dataAbsentReason says why
    "O": "registered",  # local: order detail only, no result
    "P": "preliminary",
    "R": "preliminary",  # local: entered, not verified
    "S": "preliminary",  # local: partial results (deprecated in v2.6)
    "U": "final",  # local: status changed to final without retransmission
    "V": "final",  # local: verified final
    "W": "entered-in-error",
    "X": "cancelled",
}

# IG "ResultStatus[Non-Queries]" (table 0123, OBR-25 -> DiagnosticReport.status).
RESULT_STATUS_0123: dict[str, str] = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",  # local: IG leaves it open, "partial" is FHIR's "some results available"
    "P": "preliminary",
    "C": "corrected",
    "R": "partial",
    "F": "final",
    "X": "cancelled",
    "M": "corrected",  # local: corrected, not final
    "N": "partial",  # local: procedure completed, results pending
}

# Table 0123 codes the IG's ResultStatus[Non-Queries] map marks "IF NOT MAPPED ERROR": they
# answer a query (no such order / no such patient), they report no result.
RESULT_STATUS_0123_REFUSED: dict[str, str] = {
    "Y": "no order on record for this test",
    "Z": "no record of this patient",
}

# HL7 table 0136 (Y/N indicator -> boolean).
YES_NO_0136: dict[str, bool] = {"Y": True, "N": False}

# HL7 table 0125 (OBX-2 value types). The mapped ones are in hl7_adapters.mapping.obx.
VALUE_TYPES_0125 = frozenset(
    "AD CCD CE CF CK CN CNE CP CQ CWE CX DR DT DTM ED FT GTS ID IS MA MO NA NM NR PN RP "
    "SN ST TM TN TS TX XAD XCN XON XPN XTN".split()
)

# HL7 table 0396 (coding system names in CWE.3/6/12) -> FHIR code system URIs.
# "HL7nnnn" is handled by rule (http://terminology.hl7.org/CodeSystem/v2-nnnn); local codes
# ("L", "99zzz") and unknown names get a Coding without a system.
CODING_SYSTEMS_0396: dict[str, str] = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "UCUM": UCUM,
    "MDC": MDC,
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://hl7.org/fhir/sid/mvx",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "HCPCS": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "ISO3166_1": "urn:iso:std:iso:3166",
    "ISO3166_2": "urn:iso:std:iso:3166:-2",
    "ISO639": "urn:ietf:bcp:47",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "NUCC": "http://nucc.org/provider-taxonomy",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "ATC": "http://www.whocc.no/atc",
    "NCIT": "http://ncimeta.nci.nih.gov",
    "UMLS": "http://www.nlm.nih.gov/research/umls",
}

# Location.physicalType (location-physical-type) of the Location each PL component names
# (mapping/locations.py): PL.3 bed, PL.2 room, PL.8 floor, PL.1 point of care, PL.7 building,
# PL.4 facility.
PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
PL_PHYSICAL_TYPE: dict[int, Code] = {
    3: Code(PHYSICAL_TYPE, "bd", "Bed"),
    2: Code(PHYSICAL_TYPE, "ro", "Room"),
    8: Code(PHYSICAL_TYPE, "lvl", "Level"),
    1: Code(PHYSICAL_TYPE, "wa", "Ward"),
    7: Code(PHYSICAL_TYPE, "bu", "Building"),
    4: Code(PHYSICAL_TYPE, "si", "Site"),
}

# FHIR core extensions (mapping/visit_tables.py, pid_tables.py name the ones they use).
EXTENSION = "http://hl7.org/fhir/StructureDefinition/"
