"""Synthetic HL7 v2 traffic for bench/run_hl7.py: ADT^A01/A08 and ORU^R01 for a pool of
patients, generated here (no sample files are read), seeded, every MSH-10 unique.

What a message looks like, and why:

* ADT^A01 registers a new patient (two PID-3 identifiers, MR and SS, name, birth date,
  gender, home address, phone, marital status) and admits them: PV1 with a bed (one Location
  per ward^room^bed), an attending doctor from a pool of 40 (a Practitioner found or created
  by identifier) and a visit number (the Encounter's match).
* ADT^A08 updates a registered patient: new address and phone, same visit.
* ORU^R01 is one lab panel for a registered patient: PID, PV1 naming their visit, ORC and OBR
  with unique placer/filler numbers, then 5-10 numeric OBX with LOINC codes, UCUM units,
  reference ranges and H/L/N flags.

MSH-7 and EVN-2 are the time the message is generated, to 0.1 ms, so later messages for a
patient carry later event times (the ordering clock then applies them; two updates of one
patient raced over two connections may still arrive reversed, and the older one is then
acknowledged AA with a warning: counted as a warning, not an error).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
          "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
          "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
          "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson"]  # fmt: skip
GIVEN = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
         "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
         "Thomas", "Sarah", "Charles", "Karen", "Ana", "Luis", "Mei", "Omar", "Ingrid"]  # fmt: skip
STREETS = ["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Pine Rd", "Lake View Blvd"]
CITIES = [("Springfield", "IL", "627"), ("Madison", "WI", "537"), ("Columbus", "OH", "432"),
          ("Salem", "OR", "973"), ("Albany", "NY", "122")]  # fmt: skip
WARDS = ["MED", "SURG", "CARD", "ONC", "NEURO", "ORTHO", "PED", "ICU"]
MARITAL = ["S", "M", "D", "W"]

# (LOINC, name, UCUM unit, low, high, decimals) per panel; OBR-4 code and name first.
Test = tuple[str, str, str, float, float, int]
PANELS: list[tuple[str, str, list[Test]]] = [
    ("58410-2", "CBC panel - Blood by Automated count", [
        ("6690-2", "Leukocytes", "10*3/uL", 4.0, 11.0, 1),
        ("789-8", "Erythrocytes", "10*6/uL", 4.2, 5.9, 2),
        ("718-7", "Hemoglobin", "g/dL", 12.0, 17.5, 1),
        ("4544-3", "Hematocrit", "%", 36.0, 52.0, 1),
        ("787-2", "MCV", "fL", 80.0, 100.0, 1),
        ("785-6", "MCH", "pg", 27.0, 33.0, 1),
        ("786-4", "MCHC", "g/dL", 32.0, 36.0, 1),
        ("788-0", "Erythrocyte distribution width", "%", 11.5, 14.5, 1),
        ("777-3", "Platelets", "10*3/uL", 150.0, 400.0, 0),
        ("32623-1", "Platelet mean volume", "fL", 7.5, 11.5, 1)]),
    ("51990-0", "Basic metabolic panel - Blood", [
        ("2951-2", "Sodium", "mmol/L", 135.0, 145.0, 0),
        ("2823-3", "Potassium", "mmol/L", 3.5, 5.1, 1),
        ("2075-0", "Chloride", "mmol/L", 98.0, 107.0, 0),
        ("2028-9", "Carbon dioxide", "mmol/L", 22.0, 29.0, 0),
        ("3094-0", "Urea nitrogen", "mg/dL", 7.0, 20.0, 0),
        ("2160-0", "Creatinine", "mg/dL", 0.6, 1.3, 2),
        ("2345-7", "Glucose", "mg/dL", 70.0, 99.0, 0),
        ("17861-6", "Calcium", "mg/dL", 8.6, 10.3, 1)]),
    ("57698-3", "Lipid panel with direct LDL", [
        ("2093-3", "Cholesterol", "mg/dL", 100.0, 200.0, 0),
        ("2571-8", "Triglyceride", "mg/dL", 40.0, 150.0, 0),
        ("2085-9", "HDL Cholesterol", "mg/dL", 40.0, 60.0, 0),
        ("18262-6", "LDL Cholesterol direct", "mg/dL", 50.0, 100.0, 0),
        ("9830-1", "Cholesterol/HDL ratio", "{ratio}", 1.0, 5.0, 1)]),
    ("24325-3", "Hepatic function panel", [
        ("1742-6", "ALT", "U/L", 7.0, 56.0, 0),
        ("1920-8", "AST", "U/L", 10.0, 40.0, 0),
        ("6768-6", "Alkaline phosphatase", "U/L", 44.0, 147.0, 0),
        ("1975-2", "Bilirubin total", "mg/dL", 0.1, 1.2, 1),
        ("1751-7", "Albumin", "g/dL", 3.5, 5.0, 1),
        ("2885-2", "Protein", "g/dL", 6.0, 8.3, 1),
        ("2324-2", "GGT", "U/L", 9.0, 48.0, 0)]),
]  # fmt: skip


def hl7_time(t: float) -> str:
    """Epoch seconds as an HL7 DTM in UTC with 0.1 ms: YYYYMMDDHHMMSS.SSSS+0000."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(t)) + f".{int(t * 10000) % 10000:04d}+0000"


@dataclass
class Person:
    mrn: str
    ssn: str
    family: str
    given: str
    middle: str
    birth: str
    sex: str
    marital: str
    bed: str  # ward^room^bed^facility
    doctor: str  # XCN: id^family^given^^^Dr.
    visit: str
    registered: bool = False  # its A01 was acknowledged: ORUs and A08s may name it


class Traffic:
    """The message generator: one instance per benchmark run (shared by its connections)."""

    def __init__(self, seed: int, run_tag: str) -> None:
        self.rng = random.Random(seed)
        self.tag = run_tag  # makes MSH-10, MRNs and order numbers unique across runs
        self.seq = 0
        self.people: list[Person] = []
        self.registered: list[Person] = []
        self.doctors = [
            f"D{1000 + i}^{self.rng.choice(FAMILY)}^{self.rng.choice(GIVEN)}^^^Dr."
            for i in range(40)
        ]

    def _control_id(self) -> str:
        self.seq += 1
        return f"{self.tag}{self.seq:08d}"

    def _msh(self, app: str, facility: str, kind: str) -> tuple[str, str]:
        now = hl7_time(time.time())
        control = self._control_id()
        return now, (
            f"MSH|^~\\&|{app}|{facility}|MEDISENTINEL|HUB|{now}||{kind}|{control}|P|2.5.1"
            "|||AL|NE||UNICODE UTF-8\r"
        )

    def _address(self) -> tuple[str, str]:
        r = self.rng
        city, state, zip3 = r.choice(CITIES)
        street = f"{r.randint(1, 9999)} {r.choice(STREETS)}"
        address = f"{street}^^{city}^{state}^{zip3}{r.randint(10, 99)}^USA^H"
        phone = f"({r.randint(200, 999)})555-{r.randint(0, 9999):04d}^PRN^PH"
        return address, phone

    def _pid(self, p: Person, *, full: bool) -> str:
        ids = f"{p.mrn}^^^GENHOSP&1.2.3.4&ISO^MR~{p.ssn}^^^SSA&2.16.840.1.113883.4.1&ISO^SS"
        name = f"{p.family}^{p.given}^{p.middle}"
        if not full:
            return f"PID|1||{ids}||{name}||{p.birth}|{p.sex}\r"
        address, phone = self._address()
        return f"PID|1||{ids}||{name}||{p.birth}|{p.sex}|||{address}||{phone}|||{p.marital}\r"

    def _pv1(self, p: Person, admitted: str) -> str:
        fields = ["PV1", "1", "I", p.bed, "", "", "", p.doctor, "", "", "MED"]
        fields += [""] * 8 + [p.visit] + [""] * 24 + [admitted]  # PV1-19, PV1-44
        return "|".join(fields) + "\r"

    # ------------------------------------------------------------ messages

    def admit(self) -> tuple[str, bytes, Person]:
        """ADT^A01 for a new patient."""
        r, n = self.rng, len(self.people)
        p = Person(
            mrn=f"{self.tag}{n:07d}",
            ssn=f"{r.randint(100, 899)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}",
            family=r.choice(FAMILY),
            given=r.choice(GIVEN),
            middle=r.choice(GIVEN)[0],
            birth=f"{r.randint(1930, 2020)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}",
            sex=r.choice("MF"),
            marital=r.choice(MARITAL),
            bed=f"{r.choice(WARDS)}^{r.randint(100, 129)}^{r.choice('AB')}^GENHOSP",
            doctor=r.choice(self.doctors),
            visit=f"V{self.tag}{n:07d}",
        )
        self.people.append(p)
        now, msh = self._msh("REGADT", "GENHOSP", "ADT^A01^ADT_A01")
        body = msh + f"EVN|A01|{now}\r" + self._pid(p, full=True) + self._pv1(p, now)
        return "A01", body.encode(), p

    def update(self) -> tuple[str, bytes, Person]:
        """ADT^A08 for a registered patient: a new address and phone."""
        p = self.rng.choice(self.registered)
        now, msh = self._msh("REGADT", "GENHOSP", "ADT^A08^ADT_A01")
        body = msh + f"EVN|A08|{now}\r" + self._pid(p, full=True) + self._pv1(p, now)
        return "A08", body.encode(), p

    def result(self) -> tuple[str, bytes, Person]:
        """ORU^R01: one panel of 5-10 numeric results for a registered patient."""
        r = self.rng
        p = r.choice(self.registered)
        code, name, tests = r.choice(PANELS)
        picked = tests if len(tests) <= 5 else r.sample(tests, r.randint(5, len(tests)))
        now, msh = self._msh("LABSYS", "CORELAB", "ORU^R01^ORU_R01")
        observed = hl7_time(time.time() - r.randint(600, 7200))
        order = f"{self.tag}{self.seq:08d}"
        obr = ["OBR", "1", f"P{order}^EPIC", f"F{order}^LAB", f"{code}^{name}^LN", "", "",
               observed, "", "", "", "", "", "", observed, "", p.doctor, "", "", "", "", "",
               now, "", "", "F"]  # fmt: skip
        lines = [
            msh,
            self._pid(p, full=False),
            self._pv1(p, ""),
            f"ORC|RE|P{order}^EPIC|F{order}^LAB||CM\r",
            "|".join(obr) + "\r",
        ]
        for i, (loinc, tname, unit, low, high, decimals) in enumerate(picked, start=1):
            value = r.gauss((low + high) / 2, (high - low) / 3)
            value = max(value, 0.0)
            flag = "H" if value > high else "L" if value < low else "N"
            shown = f"{value:.{decimals}f}"
            lines.append(
                f"OBX|{i}|NM|{loinc}^{tname}^LN||{shown}|{unit}^{unit}^UCUM"
                f"|{low:g}-{high:g}|{flag}|||F|||{observed}\r"
            )
        return "ORU", "".join(lines).encode(), p

    def mixed(self) -> tuple[str, bytes, Person]:
        """40 % ADT (a quarter of them admissions of new patients, the rest A08), 60 % ORU."""
        roll = self.rng.random()
        if roll < 0.10 or not self.registered:
            return self.admit()
        if roll < 0.40:
            return self.update()
        return self.result()

    def acknowledged(self, kind: str, person: Person) -> None:
        if kind == "A01" and not person.registered:
            person.registered = True
            self.registered.append(person)
