"""PID -> Patient beyond the core elements, as data (IG segment map PID[Patient], and
PID[Race] / PID[EthnicGroup] to Observation). mapping/demographics.py reads these rows.

Fields of PID the IG's PID[Patient] map leaves without a FHIR target (or names only an
extension it has not defined, "extension??-..."), and which are therefore not mapped:
PID-18 (the IG maps it in PID[Account], another resource), PID-27 (veterans military status,
"extension??-veteranMilitaryStatus"), PID-31 (identity unknown, "extension??-
identityUnknown"), PID-32 (no target), PID-33 (meta.lastUpdated, which a FHIR server sets
itself), PID-34 ("Meta.extension??-lastUpdatedFacility"), PID-37 and PID-38 (no target).
"""

from __future__ import annotations

from hl7_adapters.mapping.tables import EXTENSION, V3_ROLE, Code

# IG PID[Patient]: PID fields the IG carries as FHIR core Patient extensions. "family":
# valueString, an XPN's family name (PID-6); "concept": valueCodeableConcept (PID-17);
# "address": valueAddress.text from an ST (PID-23 birth place); "code": a complex extension
# whose "code" sub-extension holds the CWE (PID-26 citizenship and PID-39 tribal
# citizenship, both repeating and both patient-citizenship; PID-28 nationality). One
# extension per repetition; (field, extension URL, kind, HL7 table).
CITIZENSHIP = EXTENSION + "patient-citizenship"
PID_EXTENSIONS: tuple[tuple[int, str, str, str], ...] = (
    (6, EXTENSION + "patient-mothersMaidenName", "family", ""),
    (17, EXTENSION + "patient-religion", "concept", "0006"),
    (23, EXTENSION + "patient-birthPlace", "address", ""),
    (26, CITIZENSHIP, "code", "0171"),
    (28, EXTENSION + "patient-nationality", "code", "0212"),
    (39, CITIZENSHIP, "code", "0171"),
)

# IG PID[Patient]: PID-35 (species, table 0446) and PID-36 (breed, table 0447) are the
# "species" and "breed" sub-extensions of the one core extension patient-animal, whose
# species is required (R4: 1..1): a breed without a species is left out, with a warning.
# (field, sub-extension, HL7 table); the first row is the required one.
ANIMAL = EXTENSION + "patient-animal"
PID_ANIMAL: tuple[tuple[int, str, str], ...] = ((35, "species", "0446"), (36, "breed", "0447"))

# IG CX[RelatedPerson-Mother] (PID-21, mother's identifier): a RelatedPerson of the patient
# carrying the mother's identifiers. The map's rows set only patient and identifier; the
# relationship MTH (v3 RoleCode "mother") says what the map's name does.
MOTHER = Code(V3_ROLE, "MTH", "mother")

# IG PID[Race] and PID[EthnicGroup] to Observation: PID-10 (table 0005) and PID-22 (0189)
# are Observations of the patient (status final, the CWE as valueCodeableConcept), not
# Patient elements. The IG assigns no Observation.code; the LOINC codes are local choices.
LOINC = "http://loinc.org"
PID_OBSERVATIONS: tuple[tuple[int, str, Code, str], ...] = (
    (10, "race", Code(LOINC, "32624-9", "Race"), "0005"),
    (22, "ethnicity", Code(LOINC, "69490-1", "Ethnicity OMB.1997"), "0189"),
)
SOCIAL_HISTORY = Code(
    "http://terminology.hl7.org/CodeSystem/observation-category", "social-history", "Social History"
)
