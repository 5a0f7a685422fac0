"""HL7 v2 "empty means no change" for the elements made by more than one field, beyond those
of tests/test_hl7_empty_fields.py: AllergyIntolerance.reaction (AL1-4, AL1-5), the PID-12
county inside the PID-11 address, Patient.contact (NK1 organisations), RelatedPerson.identifier
(NK1-12, NK1-33, NK1-37) and the PID extensions made by two fields (PID-26/39, PID-35/36).
Each: a field left empty keeps what is stored, ``""`` removes it, a value replaces only what
the feed made, and an entry another client added survives. Through the running server."""

from __future__ import annotations

from typing import Any

import httpx

from hl7_adapters.mapping.demographics import extension_part
from hl7_adapters.mapping.sources import unmarked, without_marks
from tests.hl7_messages import accepted, adt_message, segment
from tests.test_hl7_http import hl7, server_root  # noqa: F401  (fixtures)
from tests.test_hl7_ingest import search, unique_id

__all__ = ["hl7", "server_root"]

JSON = dict[str, Any]


def patient_of(client: httpx.Client, mrn: str) -> JSON:
    [patient] = search(client, "Patient", identifier=mrn)
    return patient


def allergy_of(client: httpx.Client, mrn: str) -> JSON:
    [allergy] = search(
        client, "AllergyIntolerance", patient=f"Patient/{patient_of(client, mrn)['id']}"
    )
    return allergy


def without_meta(resource: JSON) -> JSON:
    return {k: v for k, v in resource.items() if k != "meta"}


def al1(**fields: str) -> str:
    return segment(
        "AL1",
        {1: "1", 2: "DA", 3: "PCN^Penicillin^L", **{int(k[1:]): v for k, v in fields.items()}},
    )


def test_allergy_severity_and_reaction_merge_field_by_field(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """AL1-4 (severity, and criticality) and AL1-5 (manifestation) make the feed's one
    reaction: each left empty keeps its part, "" removes it, a value replaces it; a reaction
    another client added stays throughout."""
    mrn = unique_id("P")
    accepted(hl7, adt_message("A01", "20240301100000", mrn, al1(f4="SV", f5="Hives", f6="2020")))
    stored = allergy_of(client, mrn)
    [reaction] = stored["reaction"]
    assert (reaction["severity"], reaction["manifestation"]) == ("severe", [{"text": "Hives"}])
    assert stored["criticality"] == "high"
    theirs = {"manifestation": [{"text": "Nausea"}], "description": "seen by the GP"}
    body = {**without_meta(stored), "reaction": [*stored["reaction"], theirs]}
    assert client.put(f"/AllergyIntolerance/{stored['id']}", json=body).status_code == 200

    def feeds(allergy: JSON) -> JSON:
        [mine, other] = allergy["reaction"]
        assert other == theirs
        return {k: v for k, v in mine.items() if k != "extension"}

    accepted(hl7, adt_message("A08", "20240302100000", mrn, al1(f5="Rash")))  # AL1-4 empty
    after = allergy_of(client, mrn)
    assert feeds(after) == {"severity": "severe", "manifestation": [{"text": "Rash"}]}
    assert after["criticality"] == "high"
    accepted(hl7, adt_message("A08", "20240303100000", mrn, al1(f4="MI")))  # AL1-5 empty
    after = allergy_of(client, mrn)
    assert feeds(after) == {"severity": "mild", "manifestation": [{"text": "Rash"}]}
    assert after["criticality"] == "low"
    assert after["onsetDateTime"] == "2020"  # AL1-6 left empty throughout
    accepted(hl7, adt_message("A08", "20240304100000", mrn, al1(f4='""', f6='""')))
    after = allergy_of(client, mrn)
    assert feeds(after) == {"manifestation": [{"text": "Rash"}]}
    assert "criticality" not in after and "onsetDateTime" not in after
    accepted(hl7, adt_message("A08", "20240305100000", mrn, al1(f4="MO", f5="Hives")))
    after = allergy_of(client, mrn)  # MO: a severity without criticality
    assert feeds(after) == {"severity": "moderate", "manifestation": [{"text": "Hives"}]}
    assert "criticality" not in after
    accepted(hl7, adt_message("A08", "20240306100000", mrn, al1(f4="SV", f5='""')))
    after = allergy_of(client, mrn)
    assert after["reaction"] == [theirs]  # the feed's reaction gone, the client's kept
    assert after["criticality"] == "high"


def test_an_allergy_severity_without_reaction_makes_none(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """R4 requires a reaction's manifestation: AL1-4 alone is criticality, no reaction."""
    mrn = unique_id("P")
    accepted(hl7, adt_message("A01", "20240301100000", mrn, al1(f4="MI")))
    allergy = allergy_of(client, mrn)
    assert allergy["criticality"] == "low" and "reaction" not in allergy


def related_person_of(client: httpx.Client, mrn: str) -> JSON:
    patient = patient_of(client, mrn)
    [kin] = search(client, "RelatedPerson", patient=f"Patient/{patient['id']}")
    return kin


def test_next_of_kin_identifiers_merge_per_field(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """RelatedPerson.identifier: the NK1 key, NK1-12 (employee number), NK1-33 (the
    party's identifiers), NK1-37 (SSN), each marked with its field: an NK1 leaving one empty
    keeps its identifier, "" removes it, a value replaces only it; one a client added stays."""
    mrn = unique_id("P")
    nk1 = {1: "1", 2: "Roe^Ann", 3: "SPO^Spouse^HL70063", 12: "E1^^^ACME", 33: "K1^^^HOSP"}
    nk1[37] = "123-45-6789"

    def values(kin: JSON) -> list[str]:
        return [i["value"] for i in kin["identifier"][1:]]  # the key first

    accepted(hl7, adt_message("A01", "20240301100000", mrn, segment("NK1", nk1)))
    kin = related_person_of(client, mrn)
    assert values(kin) == ["E1", "K1", "123-45-6789"]
    theirs = {"system": "urn:example:badge", "value": "B7"}
    body = {**without_meta(kin), "identifier": [*kin["identifier"], theirs]}
    assert client.put(f"/RelatedPerson/{kin['id']}", json=body).status_code == 200
    only_33 = {n: v for n, v in nk1.items() if n not in (12, 37)} | {33: "K2^^^HOSP"}
    accepted(hl7, adt_message("A08", "20240302100000", mrn, segment("NK1", only_33)))
    assert values(related_person_of(client, mrn)) == ["E1", "K2", "123-45-6789", "B7"]
    nulled = {**only_33, 12: '""', 33: "", 37: '""'}
    accepted(hl7, adt_message("A08", "20240303100000", mrn, segment("NK1", nulled)))
    assert values(related_person_of(client, mrn)) == ["K2", "B7"]


def test_organisation_contacts_replace_only_the_feeds(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """An NK1 naming an organisation is a Patient.contact: a message with one replaces the
    contacts the feed stored, keeps one a client added, and a message without any keeps
    them all."""
    mrn = unique_id("P")
    employer = {1: "1", 3: "EMR^Employer^HL70063", 13: "Acme Corp"}
    accepted(hl7, adt_message("A01", "20240301100000", mrn, segment("NK1", employer)))
    patient = patient_of(client, mrn)
    assert [c["organization"]["display"] for c in patient["contact"]] == ["Acme Corp"]
    theirs = {"name": {"family": "Guardian"}}
    body = {**without_meta(patient), "contact": [*patient["contact"], theirs]}
    assert client.put(f"/Patient/{patient['id']}", json=body).status_code == 200
    accepted(hl7, adt_message("A08", "20240302100000", mrn))  # no NK1: all kept
    assert patient_of(client, mrn)["contact"][1] == theirs
    other = {**employer, 13: "Globex"}
    accepted(hl7, adt_message("A08", "20240303100000", mrn, segment("NK1", other)))
    after = patient_of(client, mrn)["contact"]
    assert [c.get("organization", {}).get("display") for c in after] == ["Globex", None]
    assert after[1] == theirs


def test_the_county_merges_apart_from_its_address(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """PID-12 (county) is the district of the one PID-11 address: an A08 sending PID-11
    without PID-12 keeps the county on the new address, PID-12 alone replaces only the
    district, "" removes only it; an address a client added stays."""
    mrn = unique_id("P")

    def sent(when: str, **fields: str) -> list[JSON]:
        pid = {5: "Doe^Jane", **{int(k[1:]): v for k, v in fields.items()}}
        accepted(hl7, adt_message("A08", when, mrn, pid=pid))
        return [unmarked(a) for a in patient_of(client, mrn)["address"]]

    assert sent("20240301100000", f11="1 Main St^^Town^ST", f12="CtyA") == [
        {"line": ["1 Main St"], "city": "Town", "state": "ST", "district": "CtyA"}
    ]
    patient = patient_of(client, mrn)
    theirs = {"city": "Elsewhere"}
    body = {**without_meta(patient), "address": [*patient["address"], theirs]}
    assert client.put(f"/Patient/{patient['id']}", json=body).status_code == 200
    assert sent("20240302100000", f11="2 Oak Rd^^City^ST") == [
        {"line": ["2 Oak Rd"], "city": "City", "state": "ST", "district": "CtyA"},
        theirs,
    ]
    assert sent("20240303100000", f12="CtyB") == [
        {"line": ["2 Oak Rd"], "city": "City", "state": "ST", "district": "CtyB"},
        theirs,
    ]
    version = patient_of(client, mrn)["meta"]["versionId"]
    assert sent("20240303110000", f11="2 Oak Rd^^City^ST", f12="CtyB")[0]["district"] == "CtyB"
    assert patient_of(client, mrn)["meta"]["versionId"] == version  # nothing changed
    assert sent("20240304100000", f12='""') == [
        {"line": ["2 Oak Rd"], "city": "City", "state": "ST"},
        theirs,
    ]


CITIZENSHIP = "http://hl7.org/fhir/StructureDefinition/patient-citizenship"
ANIMAL = "http://hl7.org/fhir/StructureDefinition/patient-animal"


def test_citizenship_merges_per_field(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """PID-26 (citizenship) and PID-39 (tribal citizenship) are both patient-citizenship:
    each field's extensions (its code marked with the field) are replaced, kept or removed
    apart from the other's; one a client added stays."""
    mrn = unique_id("P")

    def codes(when: str, **fields: str) -> list[str]:
        pid = {5: "Doe^Jane", **{int(k[1:]): v for k, v in fields.items()}}
        accepted(hl7, adt_message("A08", when, mrn, pid=pid))
        found = patient_of(client, mrn).get("extension") or []
        return [
            sub["valueCodeableConcept"]["coding"][0]["code"]
            for e in found
            if e["url"] == CITIZENSHIP
            for sub in e["extension"]
        ]

    assert codes("20240301100000", f26="US", f39="NAV") == ["US", "NAV"]
    patient = patient_of(client, mrn)
    theirs = {"url": CITIZENSHIP, "extension": [{"url": "code", "valueCodeableConcept": {
        "coding": [{"system": "urn:iso:std:iso:3166", "code": "CA"}]}}]}  # fmt: skip
    body = {**without_meta(patient), "extension": [*patient["extension"], theirs]}
    assert client.put(f"/Patient/{patient['id']}", json=body).status_code == 200
    assert codes("20240302100000", f26="MX") == ["MX", "NAV", "CA"]  # PID-39 empty: kept
    assert codes("20240303100000", f39="HOP") == ["MX", "HOP", "CA"]
    assert codes("20240304100000", f26='""', f39="HOP") == ["HOP", "CA"]
    assert codes("20240305100000", f39='""') == ["CA"]


def test_a_citizenship_stored_unmarked_or_sent_by_the_other_field(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """A citizenship stored without the mark (before marks, or by a client) that equals one
    the message sends is that one (replaced in place, marked, not doubled); the same code
    sent by PID-26 while PID-39 holds it is each field's own (PID-39 left empty keeps it)."""
    mrn = unique_id("P")
    pid = {5: "Doe^Jane", 26: "US"}
    accepted(hl7, adt_message("A01", "20240301100000", mrn, pid=pid))
    patient = patient_of(client, mrn)
    body = {**without_meta(patient), "extension": without_marks(patient["extension"])}
    assert client.put(f"/Patient/{patient['id']}", json=body).status_code == 200
    accepted(hl7, adt_message("A08", "20240302100000", mrn, pid=pid))
    [again] = patient_of(client, mrn)["extension"]
    assert again == patient["extension"][0]  # marked again, one extension
    accepted(hl7, adt_message("A08", "20240303100000", mrn, pid={5: "Doe^Jane", 39: "US"}))
    accepted(hl7, adt_message("A08", "20240304100000", mrn, pid={5: "Doe^Jane", 26: "MX"}))
    parts = [extension_part(e) for e in patient_of(client, mrn)["extension"]]
    assert parts == [f"{CITIZENSHIP}|PID-26", f"{CITIZENSHIP}|PID-39"]


def test_species_and_breed_merge_apart(
    hl7: httpx.Client,  # noqa: F811
    client: httpx.Client,
) -> None:
    """PID-35 (species) and PID-36 (breed) are the one patient-animal: either left empty
    keeps its sub-extension, PID-36 "" removes the breed, PID-35 "" the whole extension."""
    mrn = unique_id("P")

    def animal(when: str, **fields: str) -> dict[str, str]:
        pid = {5: "Rex", **{int(k[1:]): v for k, v in fields.items()}}
        accepted(hl7, adt_message("A08", when, mrn, pid=pid))
        found = [e for e in patient_of(client, mrn).get("extension") or [] if e["url"] == ANIMAL]
        return {
            s["url"]: s["valueCodeableConcept"]["coding"][0]["code"]
            for e in found
            for s in e["extension"]
        }

    assert animal("20240301100000", f35="DOG", f36="LAB") == {"species": "DOG", "breed": "LAB"}
    assert animal("20240302100000", f35="CAT") == {"species": "CAT", "breed": "LAB"}
    assert animal("20240303100000", f36="POO") == {"species": "CAT", "breed": "POO"}
    assert animal("20240304100000", f36='""') == {"species": "CAT"}
    assert animal("20240305100000", f36="POO") == {"species": "CAT", "breed": "POO"}
    assert animal("20240306100000", f35='""') == {}
    assert animal("20240307100000", f36="LAB") == {}  # a breed alone has no species to join
