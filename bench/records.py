"""Synthetic but realistic patient records for the benchmark (deterministic).

`order_sign_request(n)` returns the seed's order-sign request (same patient, same Privigen
draft order) with a prefetch holding exactly `n` resources: the Patient, the diagnosis and
infection history, years of laboratory results (CBC with differential, renal and liver panels,
weights, serum protein electrophoresis, HIV screening, pneumococcal serotype titers, the IgG
timeline before and on treatment), a minority of Observations the rules do not read (vitals,
lipids, glucose: EHRs often return more than the code filter asked for), medications (the IVIG
history as administrations, dispenses, requests and statements, plus everyday drugs),
immunizations and encounters. The shares by type follow a chronically ill adult's chart; the
record is the same for the same `n` and `seed`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED_REQUEST = ROOT / "fhir_fixtures" / "seed" / "order-sign-request.json"
SIZES = (10, 200, 1000, 5000)

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
ORDER_DAY = dt.date(2025, 11, 20)  # the seed draft order's authoredOn
HISTORY_START = dt.date(2014, 1, 1)
IVIG_START = dt.date(2025, 1, 8)  # first documented infusion (the seed's dateAsserted is later)

# (code, display, unit, typical value, spread) of laboratory panels the prefetch query asks for
CBC = [
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 6.5, 2.0),
    ("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "10*6/uL", 4.6, 0.4),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 13.6, 1.2),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 41.0, 3.0),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 250.0, 50.0),
]
DIFF = [
    ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count", "%", 58.0, 8.0),
    ("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count", "%", 30.0, 6.0),
    ("5905-5", "Monocytes/100 leukocytes in Blood by Automated count", "%", 7.0, 2.0),
    ("713-8", "Eosinophils/100 leukocytes in Blood by Automated count", "%", 3.0, 1.0),
    ("706-2", "Basophils/100 leukocytes in Blood by Automated count", "%", 0.7, 0.3),
    ("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*3/uL", 3.8, 1.0),
    ("731-0", "Lymphocytes [#/volume] in Blood by Automated count", "10*3/uL", 1.9, 0.5),
]
RENAL = [
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.9, 0.15),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 14.0, 4.0),
]
LIVER = [
    (
        "1742-6",
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        24.0,
        8.0,
    ),
    (
        "1920-8",
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        22.0,
        6.0,
    ),
    (
        "6768-6",
        "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        80.0,
        20.0,
    ),
    ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 0.2),
    ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 4.2, 0.3),
]
SPEP = [
    ("2885-2", "Protein [Mass/volume] in Serum or Plasma", "g/dL", 6.4, 0.4),
    ("2862-1", "Albumin [Mass/volume] in Serum or Plasma by Electrophoresis", "g/dL", 3.9, 0.3),
]
# Observations the rules do not read (outside the prefetch code filter)
OTHER = [
    ("8867-4", "Heart rate", "/min", 74.0, 10.0),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.4),
    ("9279-1", "Respiratory rate", "/min", 16.0, 2.0),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 97.0, 1.5),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 95.0, 12.0),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 185.0, 25.0),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 120.0, 40.0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.5, 0.3),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 139.0, 2.0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.3),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 1.8, 0.6),
]
SEROTYPES = [
    ("85954-6", "1"),
    ("86080-9", "3"),
    ("86107-0", "4"),
    ("86129-4", "5"),
    ("25295-7", "6B"),
    ("22552-4", "7F"),
    ("86147-6", "8"),
    ("86166-6", "9N"),
    ("30153-1", "9V"),
    ("85974-4", "12F"),
    ("85991-8", "14"),
    ("17635-4", "18C"),
    ("86021-3", "19F"),
    ("86061-9", "23F"),
]
# (code, display, clinical status) of problems unrelated to the IG criteria
OTHER_CONDITIONS = [
    ("I10", "Essential (primary) hypertension", "active"),
    ("E78.5", "Hyperlipidemia, unspecified", "active"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis", "active"),
    ("J45.909", "Unspecified asthma, uncomplicated", "active"),
    ("M54.50", "Low back pain, unspecified", "resolved"),
    ("F41.1", "Generalized anxiety disorder", "active"),
    ("J30.9", "Allergic rhinitis, unspecified", "active"),
    ("R51.9", "Headache, unspecified", "resolved"),
    ("E55.9", "Vitamin D deficiency, unspecified", "resolved"),
    ("Z87.891", "Personal history of nicotine dependence", "active"),
]
INFECTIONS = [
    ("J01.91", "Acute recurrent sinusitis, unspecified"),
    ("J18.9", "Pneumonia, unspecified organism"),
    ("J20.9", "Acute bronchitis, unspecified"),
    ("H66.90", "Otitis media, unspecified, unspecified ear"),
    ("J32.9", "Chronic sinusitis, unspecified"),
]
EVERYDAY_DRUGS = [
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("617318", "atorvastatin 20 MG Oral Tablet"),
    ("314231", "omeprazole 20 MG Delayed Release Oral Capsule"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("308182", "amoxicillin 500 MG Oral Capsule"),
    ("562251", "amoxicillin 875 MG / clavulanate 125 MG Oral Tablet"),
    ("197516", "cetirizine 10 MG Oral Tablet"),
    ("310965", "ibuprofen 200 MG Oral Tablet"),
]
VACCINES = [
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("115", "Tdap"),
    ("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
    ("187", "Zoster vaccine recombinant"),
]

# Share of the non-core resources by kind (a chronically ill adult's chart is mostly labs)
MIX = [
    ("lab", 0.62),
    ("other-obs", 0.10),
    ("encounter", 0.09),
    ("medication", 0.09),
    ("condition", 0.05),
    ("immunization", 0.05),
]


def seed_request() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SEED_REQUEST.read_text(encoding="utf-8"))
    return data


class _Gen:
    def __init__(self, patient_id: str, rng: random.Random, tag: str = "") -> None:
        self.pid = patient_id
        self.rng = rng
        self.count = 0
        self.tag = tag

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.tag}-{self.count}"

    def day(self, start: dt.date = HISTORY_START, end: dt.date = ORDER_DAY) -> dt.date:
        return start + dt.timedelta(days=self.rng.randrange(max((end - start).days, 1)))

    def instant(self, day: dt.date) -> str:
        hour, minute = self.rng.randrange(7, 18), self.rng.randrange(60)
        return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00-05:00"

    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def observation(
        self, code: str, display: str, value: float, unit: str, when: str, category: str
    ) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": self._id("obs"),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": category,
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": LOINC, "code": code, "display": display}],
                "text": display,
            },
            "subject": self.subject(),
            "effectiveDateTime": when,
            "issued": when,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        }

    def lab_visit(self, day: dt.date) -> list[dict[str, Any]]:
        """One blood draw: a CBC, often with differential, renal and liver panels."""
        when = self.instant(day)
        panel = list(CBC)
        if self.rng.random() < 0.6:
            panel += DIFF
        if self.rng.random() < 0.7:
            panel += RENAL
        if self.rng.random() < 0.5:
            panel += LIVER
        if self.rng.random() < 0.1:
            panel += SPEP
        return [
            self.observation(c, d, round(self.rng.gauss(v, s), 2), u, when, "laboratory")
            for c, d, u, v, s in panel
        ]

    def weight(self, day: dt.date) -> dict[str, Any]:
        kg = round(self.rng.gauss(68.0, 1.5), 1)
        return self.observation(
            "29463-7", "Body weight", kg, "kg", self.instant(day), "vital-signs"
        )

    def other_observation(self) -> dict[str, Any]:
        c, d, u, v, s = self.rng.choice(OTHER)
        cat = "vital-signs" if u in ("/min", "Cel", "%") and c != "4548-4" else "laboratory"
        return self.observation(
            c, d, round(self.rng.gauss(v, s), 2), u, self.instant(self.day()), cat
        )

    def igg(self, day: dt.date, mg_dl: float) -> dict[str, Any]:
        obs = self.observation(
            "2465-3",
            "IgG [Mass/volume] in Serum or Plasma",
            mg_dl,
            "mg/dL",
            self.instant(day),
            "laboratory",
        )
        obs["referenceRange"] = [
            {
                "low": {"value": 700, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
                "high": {"value": 1600, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
            }
        ]
        return obs

    def hiv_screen(self, day: dt.date) -> dict[str, Any]:
        obs = self.observation(
            "56888-1",
            "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay",
            0.0,
            "1",
            self.instant(day),
            "laboratory",
        )
        del obs["valueQuantity"]
        obs["valueCodeableConcept"] = {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"}
            ],
            "text": "Non-reactive",
        }
        return obs

    def titers(self, day: dt.date, post: bool) -> list[dict[str, Any]]:
        when = self.instant(day)
        return [
            self.observation(
                code,
                f"Streptococcus pneumoniae Danish serotype {st} IgG Ab in Serum",
                round(self.rng.uniform(0.3, 1.2) if post else self.rng.uniform(0.1, 0.6), 2),
                "ug/mL",
                when,
                "laboratory",
            )
            for code, st in SEROTYPES
        ]

    def condition(
        self,
        system: str,
        code: str,
        display: str,
        clinical: str,
        onset: dt.date,
        category: str = "problem-list-item",
    ) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": self._id("cond"),
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": clinical,
                    }
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": category,
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": system, "code": code, "display": display}],
                "text": display,
            },
            "subject": self.subject(),
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
        }

    def infection(self, day: dt.date) -> dict[str, Any]:
        code, display = self.rng.choice(INFECTIONS)
        return self.condition(ICD10, code, display, "resolved", day, "encounter-diagnosis")

    def encounter(self, day: dt.date, infection: bool = False) -> dict[str, Any]:
        res: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": self._id("enc"),
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
                "display": "ambulatory",
            },
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "185349003",
                            "display": "Encounter for check up",
                        }
                    ]
                }
            ],
            "subject": self.subject(),
            "period": {"start": self.instant(day), "end": self.instant(day)},
        }
        if infection:
            code, display = self.rng.choice(INFECTIONS)
            res["reasonCode"] = [{"coding": [{"system": ICD10, "code": code, "display": display}]}]
        return res

    def privigen(self) -> dict[str, Any]:
        return {
            "coding": [{"system": NDC, "code": "44206-439-40", "display": "Privigen 40 g/400 mL"}],
            "text": "Privigen (immune globulin intravenous, human) 10% liquid",
        }

    def ivig_administration(self, day: dt.date) -> dict[str, Any]:
        return {
            "resourceType": "MedicationAdministration",
            "id": self._id("ivig-admin"),
            "status": "completed",
            "medicationCodeableConcept": self.privigen(),
            "subject": self.subject(),
            "effectivePeriod": {"start": self.instant(day), "end": self.instant(day)},
            "dosage": {
                "route": {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "47625008",
                            "display": "Intravenous route",
                        }
                    ]
                },
                "dose": {"value": 40, "unit": "g", "system": UCUM, "code": "g"},
            },
        }

    def ivig_dispense(self, day: dt.date) -> dict[str, Any]:
        return {
            "resourceType": "MedicationDispense",
            "id": self._id("ivig-disp"),
            "status": "completed",
            "medicationCodeableConcept": self.privigen(),
            "subject": self.subject(),
            "quantity": {"value": 40, "unit": "g", "system": UCUM, "code": "g"},
            "whenHandedOver": self.instant(day),
        }

    def drug_request(self, day: dt.date) -> dict[str, Any]:
        code, display = self.rng.choice(EVERYDAY_DRUGS)
        return {
            "resourceType": "MedicationRequest",
            "id": self._id("medrx"),
            "status": self.rng.choice(["active", "completed", "stopped"]),
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": code, "display": display}],
                "text": display,
            },
            "subject": self.subject(),
            "authoredOn": day.isoformat(),
            "dosageInstruction": [{"text": "as directed"}],
        }

    def drug_statement(self, day: dt.date) -> dict[str, Any]:
        code, display = self.rng.choice(EVERYDAY_DRUGS)
        return {
            "resourceType": "MedicationStatement",
            "id": self._id("medst"),
            "status": self.rng.choice(["active", "completed"]),
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": code, "display": display}],
                "text": display,
            },
            "subject": self.subject(),
            "effectiveDateTime": day.isoformat(),
            "dateAsserted": day.isoformat(),
        }

    def immunization(self, day: dt.date) -> dict[str, Any]:
        code, display = self.rng.choice(VACCINES)
        return {
            "resourceType": "Immunization",
            "id": self._id("imm"),
            "status": "completed",
            "vaccineCode": {
                "coding": [{"system": CVX, "code": code, "display": display}],
                "text": display,
            },
            "patient": self.subject(),
            "occurrenceDateTime": day.isoformat(),
        }


def _core(gen: _Gen, seed: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """What every record has (the clinically meaningful part), in priority order."""
    pre = seed["prefetch"]
    cvid = next(e["resource"] for e in pre["conditions"]["entry"] if e["resource"]["id"] == "cvid")
    ppsv23 = pre["immunizations"]["entry"][0]["resource"]
    core: list[dict[str, Any]] = [copy.deepcopy(pre["patient"]), copy.deepcopy(cvid)]
    # pre-treatment IgG, then infections, vaccine challenge, first infusion, troughs on treatment
    core.append(gen.igg(dt.date(2024, 9, 3), 412.0))
    core += [gen.infection(dt.date(2024, 2, 10)), gen.infection(dt.date(2024, 6, 2))]
    core.append(copy.deepcopy(ppsv23))
    core.append(gen.ivig_administration(IVIG_START))
    core.append(gen.igg(dt.date(2025, 3, 12), 742.0))
    core.append(gen.weight(dt.date(2025, 10, 30)))
    core.append(gen.igg(dt.date(2025, 9, 9), 815.0))
    if n > 40:
        core += gen.titers(dt.date(2024, 9, 16), post=False)
        core += gen.titers(dt.date(2024, 10, 21), post=True)
        core.append(gen.infection(dt.date(2024, 8, 20)))
        core.append(gen.igg(dt.date(2023, 5, 2), 455.0))
        core.append(gen.hiv_screen(dt.date(2024, 9, 3)))
    return core[:n]


def make_resources(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` resources of one patient (the seed's), deterministic for (n, seed)."""
    base = seed_request()
    tag = "" if seed == 7 else f"-s{seed}"  # other seeds: other ids too (distinct records)
    gen = _Gen(base["context"]["patientId"], random.Random(seed * 100_003 + n), tag)
    out = _core(gen, base, n)
    rest = n - len(out)
    if rest <= 0:
        return out
    quotas = {kind: int(rest * share) for kind, share in MIX}
    quotas["lab"] += rest - sum(quotas.values())
    # labs: visits spread over the years, every 4 weeks on IVIG (trough IgG + CBC + renal)
    labs: list[dict[str, Any]] = []
    infusion_days: list[dt.date] = []
    day = IVIG_START + dt.timedelta(days=28)
    while day < ORDER_DAY:
        infusion_days.append(day)
        day += dt.timedelta(days=28)
    visit = 0
    while len(labs) < quotas["lab"]:
        if visit < len(infusion_days) and gen.rng.random() < 0.3:
            labs.append(gen.igg(infusion_days[visit], round(gen.rng.gauss(780.0, 40.0))))
            visit += 1
        if gen.rng.random() < 0.15:
            labs.append(gen.weight(gen.day()))
        labs += gen.lab_visit(gen.day())
    out += labs[: quotas["lab"]]
    out += [gen.other_observation() for _ in range(quotas["other-obs"])]
    out += [
        gen.encounter(gen.day(), infection=gen.rng.random() < 0.15)
        for _ in range(quotas["encounter"])
    ]
    meds: list[dict[str, Any]] = []
    for i in range(quotas["medication"]):
        pick = i % 4
        if pick == 0 and infusion_days:
            meds.append(gen.ivig_administration(infusion_days[(i // 4) % len(infusion_days)]))
        elif pick == 1 and infusion_days:
            meds.append(gen.ivig_dispense(infusion_days[(i // 4) % len(infusion_days)]))
        elif pick == 2:
            meds.append(gen.drug_request(gen.day()))
        else:
            meds.append(gen.drug_statement(gen.day()))
    out += meds
    conds = []
    for i in range(quotas["condition"]):
        if i % 3 == 0:
            conds.append(gen.infection(gen.day(dt.date(2019, 1, 1))))
        else:
            code, display, status = gen.rng.choice(OTHER_CONDITIONS)
            conds.append(gen.condition(ICD10, code, display, status, gen.day()))
    out += conds
    out += [gen.immunization(gen.day()) for _ in range(quotas["immunization"])]
    return out


PREFETCH_KEY_OF = {
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "MedicationAdministration": "medicationAdministrations",
    "MedicationDispense": "medicationDispenses",
    "Immunization": "immunizations",
    "Encounter": "encounters",
}


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def _observation_keys() -> tuple[str, dict[tuple[str, str], str]]:
    """The service's Observation prefetch keys: the first one, and (system, code) -> key."""
    from cds_service import knowledge, record

    first = ""
    by_code: dict[tuple[str, str], str] = {}
    for spec in record.prefetch_keys(knowledge.default()):
        if spec.resource_type != "Observation":
            continue
        first = first or spec.key
        for param in spec.query.split("?", 1)[-1].split("&"):
            name, _, value = param.partition("=")
            if name == "code":
                for item in value.split(","):
                    system, _, code = item.rpartition("|")
                    by_code.setdefault((system, code), spec.key)
    return first, by_code


def prefetch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The prefetch object an EHR would send for these resources (every key present).

    Observations go to the key whose code filter names their code, as the service's templates
    ask (observations / labs / titers); codes no template names (vitals, lipids) go to the first
    Observation key, as an EHR that over-returns would send them."""
    first_obs, obs_key = _observation_keys()
    groups: dict[str, list[dict[str, Any]]] = {k: [] for k in PREFETCH_KEY_OF.values()}
    groups.update({k: [] for k in obs_key.values()})
    out: dict[str, Any] = {"patient": None}
    for r in resources:
        if r["resourceType"] == "Patient":
            out["patient"] = r
        elif r["resourceType"] == "Observation":
            coding = r["code"]["coding"][0]
            groups[obs_key.get((coding["system"], coding["code"]), first_obs)].append(r)
        else:
            groups[PREFETCH_KEY_OF[r["resourceType"]]].append(r)
    out.update({k: bundle(v) for k, v in groups.items()})
    return out


def order_sign_request(n: int, seed: int = 7, with_prefetch: bool = True) -> dict[str, Any]:
    """The seed order-sign request with a prefetch of `n` resources (or none, for FHIR fetch)."""
    req = seed_request()
    if with_prefetch:
        req["prefetch"] = prefetch(make_resources(n, seed))
    else:
        req.pop("prefetch", None)
    return req


def count_resources(request: dict[str, Any]) -> int:
    total = 0
    for value in (request.get("prefetch") or {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            total += len(value.get("entry", []))
        elif isinstance(value, dict):
            total += 1
    return total
