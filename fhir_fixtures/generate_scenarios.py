"""Build the scenario fixtures: fhir_fixtures/<scenario>/order-sign-request.json.

Each scenario is a CDS Hooks order-sign request with the full prefetch (the service's keys) for one
patient whose id is unique to the scenario. Resources are valid FHIR R4 (ids on every resource,
Observation status + code, subject "Patient/<id>"), so they can also be loaded into a FHIR server.

    python fhir_fixtures/generate_scenarios.py            # write the requests
    python fhir_fixtures/generate_scenarios.py --goldens  # also rewrite the goldens

Goldens are written from the running engine and must be reviewed by a person before they are
committed (git diff): the clinical expectations that do not depend on the engine are in
fhir_fixtures/scenario-expectations.yaml and are checked by tests/api/test_scenarios.py.
"""

from __future__ import annotations

import copy
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER_DATE = "2025-11-20"

LOINC = "http://loinc.org"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

R = dict[str, Any]

# 14 PPSV23 serotypes (LOINC Danish-serotype IgG codes, as in the seed); 3 protective = impaired
SEROTYPES = [
    ("1", "85954-6", 0.4),
    ("3", "86080-9", 0.3),
    ("4", "86107-0", 1.6),
    ("5", "86129-4", 0.2),
    ("6b", "25295-7", 0.5),
    ("7f", "22552-4", 0.8),
    ("8", "86147-6", 0.3),
    ("9n", "86166-6", 0.6),
    ("9v", "30153-1", 1.9),
    ("12f", "85974-4", 0.2),
    ("14", "85991-8", 2.4),
    ("18c", "17635-4", 0.7),
    ("19f", "86021-3", 0.9),
    ("23f", "86061-9", 0.4),
]


def observation_keys(observations: list[R]) -> dict[str, list[R]]:
    """Observations under the service's Observation prefetch keys (observations, labs, titers:
    cds_service.record.OBSERVATION_KEYS), each by the codes its template asks for; one with a
    code no template asks for stays under `observations`."""
    sys.path.insert(0, str(HERE.parent))
    from cds_service import knowledge, record

    kn = knowledge.load()
    loinc = kn.systems["loinc"]
    keys = record.observation_key_codes(kn)
    out: dict[str, list[R]] = {key: [] for key, _, _ in keys}
    for obs in observations:
        codes = {c.get("code") for c in obs["code"].get("coding", []) if c.get("system") == loinc}
        key = next((key for key, asked, _ in keys if codes & set(asked)), "observations")
        out[key].append(obs)
    return out


def bundle(resources: list[R]) -> R:
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


def qty(value: float, unit: str) -> R:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class Patient:
    """One scenario's record, built from a complete initial CVID request and then varied."""

    def __init__(self, pid: str, birth: str | None = "1980-06-01") -> None:
        self.pid = pid
        self.birth = birth
        self.conditions: list[R] = []
        self.observations: list[R] = []
        self.med_requests: list[R] = []
        self.med_statements: list[R] = []
        self.med_admins: list[R] = []
        self.med_dispenses: list[R] = []
        self.immunizations: list[R] = []
        self.encounters: list[R] = []
        self.draft: R = {}
        self.null_keys: set[str] = set()

    @property
    def subject(self) -> R:
        return {"reference": f"Patient/{self.pid}"}

    # -- resources ------------------------------------------------------------------------
    def condition(
        self,
        rid: str,
        code: str,
        display: str,
        onset: str,
        clinical: str = "active",
        verification: str = "confirmed",
        system: str = ICD,
    ) -> R:
        res = {
            "resourceType": "Condition",
            "id": rid,
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": clinical}]},
            "verificationStatus": {"coding": [{"system": VERIFICATION, "code": verification}]},
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "subject": self.subject,
            "onsetDateTime": onset,
            "recordedDate": onset,
        }
        self.conditions.append(res)
        return res

    def obs(
        self,
        rid: str,
        code: str,
        display: str,
        when: str,
        value: R | None = None,
        status: str = "final",
        **extra: Any,
    ) -> R:
        res: R = {
            "resourceType": "Observation",
            "id": rid,
            "status": status,
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": self.subject,
            "effectiveDateTime": when,
        }
        if value is not None:
            res["valueQuantity"] = value
        res.update(extra)
        self.observations.append(res)
        return res

    def igg(self, rid: str, when: str, value: float, unit: str = "mg/dL", **extra: Any) -> R:
        low = {"low": qty(7.0, "g/L") if unit == "g/L" else qty(700, "mg/dL")}
        return self.obs(
            rid,
            "2465-3",
            "IgG [Mass/volume] in Serum or Plasma",
            when,
            qty(value, unit),
            referenceRange=[low],
            **extra,
        )

    def weight(self, rid: str, when: str, value: float, unit: str = "kg") -> R:
        res = self.obs(rid, "29463-7", "Body weight", when, qty(value, unit))
        res["category"][0]["coding"][0]["code"] = "vital-signs"
        return res

    def hiv_negative(self, when: str = "2025-05-01") -> R:
        return self.obs(
            "hiv-1",
            "56888-1",
            "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay",
            when,
            valueCodeableConcept={
                "coding": [{"system": SNOMED, "code": "260385009", "display": "Negative"}]
            },
        )

    def workup(self, when: str = "2025-05-01", cbc_diff: bool = True, spep: bool = True) -> None:
        if cbc_diff:
            self.obs(
                "lymphs-1",
                "731-0",
                "Lymphocytes [#/volume] in Blood by Automated count",
                when,
                qty(1.6, "10*3/uL"),
            )
        if spep:
            self.obs(
                "spep-1",
                "33358-3",
                "Protein.monoclonal [Mass/volume] in Serum or Plasma by Electrophoresis",
                when,
                qty(0, "g/dL"),
            )

    def safety_labs(self, when: str = "2025-10-15") -> None:
        self.obs(
            "creat-1",
            "2160-0",
            "Creatinine [Mass/volume] in Serum or Plasma",
            when,
            qty(0.9, "mg/dL"),
        )
        self.obs(
            "bun-1",
            "3094-0",
            "Urea nitrogen [Mass/volume] in Serum or Plasma",
            when,
            qty(14, "mg/dL"),
        )
        self.obs("cbc-1", "58410-2", "CBC panel - Blood by Automated count", when)
        self.obs(
            "alt-1",
            "1742-6",
            "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            when,
            qty(22, "U/L"),
        )

    def ppsv23(self, when: str = "2025-06-02", titers_on: str | None = "2025-07-10") -> None:
        self.immunizations.append(
            {
                "resourceType": "Immunization",
                "id": "ppsv23-1",
                "status": "completed",
                "vaccineCode": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/sid/cvx",
                            "code": "33",
                            "display": "pneumococcal polysaccharide PPV23",
                        }
                    ]
                },
                "patient": self.subject,
                "occurrenceDateTime": when,
            }
        )
        if titers_on:
            for label, code, value in SEROTYPES:
                self.obs(
                    f"spn-{label}",
                    code,
                    f"Streptococcus pneumoniae Danish serotype {label.upper()} IgG Ab in Serum",
                    titers_on,
                    qty(value, "ug/mL"),
                )

    def infections(
        self, dates: tuple[str, ...] = ("2024-03-04", "2024-09-10", "2025-02-01")
    ) -> None:
        kinds = [
            ("J18.9", "Pneumonia, unspecified organism"),
            ("J01.90", "Acute sinusitis, unspecified"),
            ("H66.90", "Otitis media, unspecified, unspecified ear"),
            ("L03.90", "Cellulitis, unspecified"),
        ]
        for i, when in enumerate(dates):
            code, display = kinds[i % len(kinds)]
            self.condition(f"infection-{i + 1}", code, display, when, clinical="resolved")

    def med_list(self) -> None:
        """A reviewed medication list without drugs that lower IgG."""
        self.med_statements.append(
            {
                "resourceType": "MedicationStatement",
                "id": "albuterol-1",
                "status": "active",
                "medicationCodeableConcept": {
                    "coding": [
                        {
                            "system": RXNORM,
                            "code": "745679",
                            "display": "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
                        }
                    ],
                    "text": "albuterol inhaler",
                },
                "subject": self.subject,
                "effectiveDateTime": "2024-03-10",
                "note": [{"text": "Medication list reviewed 2025-06-20: no immunosuppressants."}],
            }
        )

    def cvid(self, verification: str = "confirmed") -> R:
        return self.condition(
            "cvid",
            "D83.9",
            "Common variable immunodeficiency, unspecified",
            "2025-06-20",
            verification=verification,
        )

    def ig_use(self, kind: str, rid: str, when: str, product: R | None = None, **extra: Any) -> R:
        concept = product or privigen_concept()
        res: R = {"resourceType": kind, "id": rid, "subject": self.subject}
        if kind == "MedicationAdministration":
            res |= {
                "status": "completed",
                "medicationCodeableConcept": concept,
                "effectiveDateTime": when,
            }
            self.med_admins.append(res)
        elif kind == "MedicationDispense":
            res |= {
                "status": "completed",
                "medicationCodeableConcept": concept,
                "whenHandedOver": when,
            }
            self.med_dispenses.append(res)
        elif kind == "MedicationStatement":
            res |= {
                "status": "active",
                "medicationCodeableConcept": concept,
                "effectiveDateTime": when,
            }
            self.med_statements.append(res)
        else:
            res |= {
                "status": "completed",
                "intent": "order",
                "medicationCodeableConcept": concept,
                "authoredOn": when,
            }
            self.med_requests.append(res)
        res.update(extra)
        return res

    def order(
        self,
        concept: R | None = None,
        grams: float | None = 35,
        period: float = 4,
        period_unit: str = "wk",
        route: str | None = "IV",
        dose_unit: str = "g",
        **extra: Any,
    ) -> R:
        dosage: R = {
            "text": "immune globulin home infusion",
            "timing": {"repeat": {"frequency": 1, "period": period, "periodUnit": period_unit}},
        }
        if route == "IV":
            dosage["route"] = {
                "coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]
            }
        elif route == "SC":
            dosage["route"] = {
                "coding": [{"system": SNOMED, "code": "34206005", "display": "Subcutaneous route"}]
            }
        if grams is not None:
            dosage["doseAndRate"] = [{"doseQuantity": qty(grams, dose_unit)}]
        self.draft = {
            "resourceType": "MedicationRequest",
            "id": f"draft-{self.pid}",
            "status": "draft",
            "intent": "order",
            "medicationCodeableConcept": concept or privigen_concept(),
            "subject": self.subject,
            "authoredOn": ORDER_DATE,
            "requester": {"reference": "Practitioner/dr-immunology"},
            "dosageInstruction": [dosage],
        }
        self.draft.update(extra)
        return self.draft

    # -- the request ----------------------------------------------------------------------
    def request(self) -> R:
        patient: R = {
            "resourceType": "Patient",
            "id": self.pid,
            "name": [{"family": "Scenario", "given": [self.pid]}],
            "gender": "female",
        }
        if self.birth:
            patient["birthDate"] = self.birth
        observations = observation_keys(self.observations)
        prefetch: dict[str, Any] = {
            "patient": patient,
            "conditions": bundle(self.conditions),
            **{key: bundle(found) for key, found in observations.items()},
            "medicationRequests": bundle(self.med_requests),
            "medicationStatements": bundle(self.med_statements),
            "medicationAdministrations": bundle(self.med_admins),
            "medicationDispenses": bundle(self.med_dispenses),
            "immunizations": bundle(self.immunizations),
            "encounters": bundle(self.encounters),
        }
        for key in self.null_keys:
            for nulled in observations if key == "observations" else [key]:
                prefetch[nulled] = None  # no Observations at all: every Observation key is null
        # resource ids unique across scenarios, so all of them can share one FHIR server
        tag = self.pid.removeprefix("scn-")
        for value in prefetch.values():
            for entry in (value or {}).get("entry", []):
                res = entry["resource"]
                res["id"] = f"{tag}-{res['id']}"
                entry["fullUrl"] = f"{res['resourceType']}/{res['id']}"
        return {
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ivig-cds/{self.pid}")),
            "context": {
                "userId": "Practitioner/dr-immunology",
                "patientId": self.pid,
                "draftOrders": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": self.draft}],
                },
            },
            "prefetch": prefetch,
        }


def privigen_concept() -> R:
    return {
        "coding": [{"system": NDC, "code": "44206-439-40", "display": "Privigen 40 g/400 mL"}],
        "text": "Privigen (immune globulin intravenous, human) 10% liquid",
    }


def hizentra_concept() -> R:
    return {
        "coding": [{"system": NDC, "code": "44206-454", "display": "Hizentra 20% 50 mL"}],
        "text": "Hizentra (immune globulin subcutaneous, human) 20% liquid",
    }


def complete(pid: str) -> Patient:
    """A complete initial CVID request that meets every criterion."""
    p = Patient(pid)
    p.cvid()
    p.infections()
    p.igg("igg-baseline", "2025-05-01T08:15:00-05:00", 380)
    p.weight("weight-1", "2025-10-15", 70)
    p.hiv_negative()
    p.workup()
    p.safety_labs()
    p.ppsv23()
    p.med_list()
    p.order()
    return p


# ---------------------------------------------------------------------------------------------
# scenarios


def initial_meets() -> Patient:
    return complete("scn-initial-meets")


def normal_baseline() -> Patient:
    p = complete("scn-normal-baseline")
    p.observations = [o for o in p.observations if o["id"] != "igg-baseline"]
    p.igg("igg-baseline", "2025-05-01", 950)
    return p


def baseline_g_per_l() -> Patient:
    p = complete("scn-baseline-g-l")
    p.observations = [o for o in p.observations if o["id"] != "igg-baseline"]
    p.igg("igg-baseline", "2025-05-01T10:00:00Z", 3.8, unit="g/L")
    return p


def unusable_unit() -> Patient:
    p = complete("scn-igg-unusable-unit")
    p.observations = [o for o in p.observations if o["id"] != "igg-baseline"]
    p.igg("igg-baseline", "2025-05-01", 2.5, unit="umol/L")
    return p


def weight_lb() -> Patient:
    p = complete("scn-weight-lb")
    p.observations = [o for o in p.observations if o["id"] != "weight-1"]
    p.weight("weight-1", "2025-10-15", 154.3, unit="[lb_av]")
    return p


def overdose() -> Patient:
    p = complete("scn-overdose")
    p.order(grams=70)
    return p


def scig_weekly_ml() -> Patient:
    """Hizentra 40 mL (20% = 8 g) weekly SC at 70 kg = 457 mg/kg per 4 weeks."""
    p = complete("scn-scig-weekly")
    p.order(concept=hizentra_concept(), grams=40, dose_unit="mL", period=1, route="SC")
    return p


def scig_contained_reference() -> Patient:
    """Gamunex-C (IV or SC) by NDC in a contained Medication, SC every 2 weeks."""
    p = complete("scn-contained-medication")
    p.order(grams=14, period=2, route="SC")
    p.draft.pop("medicationCodeableConcept")
    p.draft["contained"] = [
        {
            "resourceType": "Medication",
            "id": "med-1",
            "code": {
                "coding": [
                    {"system": NDC, "code": "13533-800-12", "display": "Gamunex-C 10% 10 mL"}
                ],
                "text": "Gamunex-C",
            },
        }
    ]
    p.draft["medicationReference"] = {"reference": "#med-1"}
    return p


def dispense_fallback() -> Patient:
    p = complete("scn-dispense-fallback")
    p.order(grams=None)
    p.draft["dosageInstruction"][0].pop("timing")
    p.draft["dispenseRequest"] = {
        "quantity": qty(35, "g"),
        "expectedSupplyDuration": {"value": 28, "unit": "days", "system": UCUM, "code": "d"},
    }
    return p


def continuation_dated() -> Patient:
    """On Privigen since 2025-01-10 (administrations), baseline before, trough in October."""
    p = Patient("scn-continuation-dated")
    p.cvid()
    p.conditions[0]["onsetDateTime"] = p.conditions[0]["recordedDate"] = "2024-12-15"
    p.infections(("2024-01-12", "2024-05-20", "2024-10-03"))
    p.igg("igg-baseline", "2024-12-01", 410)
    p.igg("igg-trough", "2025-10-01T07:45:00-04:00", 820)
    p.weight("weight-1", "2025-10-01", 72)
    p.hiv_negative("2024-12-01")
    p.workup("2024-12-01")
    p.safety_labs()
    p.ppsv23("2024-10-14", "2024-11-18")
    p.med_list()
    for i, day in enumerate(("2025-01-10", "2025-02-07", "2025-03-07")):
        p.ig_use("MedicationAdministration", f"privigen-admin-{i + 1}", day)
    p.order()
    return p


def continuation_no_trough() -> Patient:
    p = continuation_dated()
    p.pid = "scn-continuation-no-trough"
    for res in [*p.conditions, *p.observations, *p.med_admins, *p.med_statements, *p.immunizations]:
        key = "patient" if res["resourceType"] == "Immunization" else "subject"
        res[key] = p.subject
    p.observations = [o for o in p.observations if o["id"] != "igg-trough"]
    p.order()
    return p


def continuation_dispense() -> Patient:
    """Only a dated MedicationDispense shows therapy: labs after it are on treatment."""
    p = complete("scn-continuation-dispense")
    p.ig_use("MedicationDispense", "privigen-dispense-1", "2025-06-01")
    p.igg("igg-after-dispense", "2025-09-02", 690)
    return p


def entered_in_error() -> Patient:
    """A normal IgG entered in error must be ignored; the valid low baseline decides."""
    p = complete("scn-entered-in-error")
    p.igg("igg-error", "2025-06-15", 1100, status="entered-in-error")
    p.weight("weight-error", "2025-11-01", 40)["status"] = "entered-in-error"
    return p


def active_cll() -> Patient:
    p = complete("scn-active-cll")
    p.condition(
        "cll",
        "C91.10",
        "Chronic lymphocytic leukemia of B-cell type not having achieved remission",
        "2023-04-11",
    )
    return p


def rituximab() -> Patient:
    p = complete("scn-rituximab")
    p.med_statements.append(
        {
            "resourceType": "MedicationStatement",
            "id": "rituximab-1",
            "status": "completed",
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": "121191", "display": "rituximab"}],
                "text": "Rituximab 375 mg/m2 IV weekly x4",
            },
            "subject": p.subject,
            "effectivePeriod": {"start": "2025-02-03", "end": "2025-02-24"},
        }
    )
    return p


def no_pi_diagnosis() -> Patient:
    p = complete("scn-no-pi-diagnosis")
    p.conditions = [c for c in p.conditions if c["id"] != "cvid"]
    return p


def provisional_cvid() -> Patient:
    p = complete("scn-provisional-cvid")
    p.conditions = [c for c in p.conditions if c["id"] != "cvid"]
    p.cvid(verification="provisional")
    return p


def infant() -> Patient:
    p = Patient("scn-infant", birth="2025-03-01")
    p.condition("hypogam", "D80.0", "Hereditary hypogammaglobulinemia", "2025-09-01")
    p.infections(("2025-07-02", "2025-09-14"))
    p.igg("igg-baseline", "2025-09-01", 180)
    p.weight("weight-1", "2025-11-10", 8)
    p.hiv_negative("2025-09-01")
    p.workup("2025-09-01")
    p.safety_labs()
    p.order(grams=4)
    return p


def non_ig_order() -> Patient:
    p = complete("scn-non-ig-order")
    p.order(
        concept={
            "coding": [
                {"system": RXNORM, "code": "308182", "display": "amoxicillin 500 MG Oral Capsule"}
            ],
            "text": "amoxicillin 500 mg",
        },
        grams=None,
        route=None,
    )
    return p


def hyperimmune_order() -> Patient:
    p = complete("scn-hyperimmune-order")
    p.order(
        concept={"text": "Hepatitis B immune globulin (human) HyperHEP B 1 mL IM"},
        grams=None,
        route=None,
    )
    return p


def no_birth_date() -> Patient:
    p = complete("scn-no-birthdate")
    p.birth = None
    return p


def no_titers() -> Patient:
    p = complete("scn-no-titers")
    p.immunizations = []
    p.observations = [o for o in p.observations if not o["id"].startswith("spn-")]
    return p


def titers_on_ig() -> Patient:
    """Vaccinated and tested after IG began: the titers are infused antibody."""
    p = continuation_dated()
    p.pid = "scn-titers-on-ig"
    for res in [*p.conditions, *p.observations, *p.med_admins, *p.med_statements]:
        res["subject"] = p.subject
    p.immunizations = []
    p.observations = [o for o in p.observations if not o["id"].startswith("spn-")]
    p.ppsv23("2025-04-01", "2025-05-06")
    p.order()
    return p


def null_observations() -> Patient:
    p = complete("scn-null-observations")
    p.observations = []
    p.null_keys.add("observations")
    return p


def null_conditions() -> Patient:
    p = complete("scn-null-conditions")
    p.conditions = []
    p.null_keys.add("conditions")
    return p


def no_workup() -> Patient:
    p = complete("scn-no-hiv-partial-workup")
    p.observations = [o for o in p.observations if o["id"] not in ("hiv-1", "spep-1")]
    return p


def stale_weight() -> Patient:
    p = complete("scn-stale-weight")
    p.observations = [o for o in p.observations if o["id"] != "weight-1"]
    p.weight("weight-1", "2024-11-02", 70)
    return p


# -- real-world record shapes (issue 10) ------------------------------------------------------


def prednisone_burst() -> Patient:
    """A 5-day prednisone burst two months before the order: not a secondary cause."""
    p = complete("scn-prednisone-burst")
    p.med_requests.append(
        {
            "resourceType": "MedicationRequest",
            "id": "prednisone-burst-1",
            "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": "8640", "display": "prednisone"}],
                "text": "prednisone 20 mg tablet",
            },
            "subject": p.subject,
            "authoredOn": "2025-09-15",
            "dosageInstruction": [
                {
                    "text": "40 mg by mouth daily for 5 days",
                    "timing": {
                        "repeat": {
                            "frequency": 1,
                            "period": 1,
                            "periodUnit": "d",
                            "boundsDuration": {
                                "value": 5,
                                "unit": "days",
                                "system": UCUM,
                                "code": "d",
                            },
                        }
                    },
                    "route": {
                        "coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]
                    },
                    "doseAndRate": [{"doseQuantity": qty(40, "mg")}],
                }
            ],
        }
    )
    return p


def crohns_without_albumin() -> Patient:
    """Crohn's disease loses protein only sometimes: without an albumin it is not excluded."""
    p = complete("scn-crohns-without-albumin")
    p.condition(
        "crohn", "K50.90", "Crohn's disease, unspecified, without complications", "2019-03-01"
    )
    return p


def nephrotic_snomed() -> Patient:
    """Nephrotic syndrome on the problem list in SNOMED CT only: a documented secondary cause."""
    p = complete("scn-nephrotic-snomed")
    p.condition(
        "nephrotic", "52254009", "Nephrotic syndrome (disorder)", "2025-02-01", system=SNOMED
    )
    return p


def lab_panels() -> Patient:
    """The same complete request with the differential and the titers reported inside panels."""
    p = complete("scn-lab-panels")
    titers = [o for o in p.observations if "-spn-" in f"-{o['id']}" or o["id"].startswith("spn-")]
    diff = [o for o in p.observations if o["id"] == "lymphs-1"]
    p.observations = [o for o in p.observations if o not in titers and o not in diff]
    p.obs(
        "cbc-diff-1",
        "57021-8",
        "CBC W Auto Differential panel - Blood",
        "2025-05-01",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
                "valueQuantity": qty(5.2, "10*3/uL"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "731-0"}]},
                "valueQuantity": qty(1.6, "10*3/uL"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "751-8"}]},
                "valueQuantity": qty(3.1, "10*3/uL"),
            },
        ],
    )
    p.obs(
        "pn23-panel-1",
        "42366-5",
        "Streptococcus pneumoniae 23 serotypes IgG panel - Serum",
        "2025-07-10",
        component=[{"code": t["code"], "valueQuantity": t["valueQuantity"]} for t in titers],
    )
    return p


def apds_new_code() -> Patient:
    """APDS (D81.82) was coded after the Medicare list was written: the reviewer decides."""
    p = complete("scn-apds-new-code")
    p.conditions = [c for c in p.conditions if c["id"] != "cvid"]
    p.condition(
        "apds", "D81.82", "Activated Phosphoinositide 3-kinase Delta Syndrome [APDS]", "2025-06-20"
    )
    return p


def viral_bronchitis() -> Patient:
    """Three acute bronchitis episodes, all coded as viral: not bacterial infections."""
    p = complete("scn-viral-bronchitis")
    p.conditions = [c for c in p.conditions if "infection" not in c["id"]]
    for i, (code, display, when) in enumerate(
        (
            ("J20.5", "Acute bronchitis due to respiratory syncytial virus", "2024-03-04"),
            ("J20.6", "Acute bronchitis due to rhinovirus", "2024-09-10"),
            ("J20.4", "Acute bronchitis due to parainfluenza virus", "2025-02-01"),
        )
    ):
        p.condition(f"infection-{i + 1}", code, display, when, clinical="resolved")
    return p


SCENARIOS: dict[str, Callable[[], Patient]] = {
    "initial-meets": initial_meets,
    "normal-baseline": normal_baseline,
    "baseline-g-per-l": baseline_g_per_l,
    "igg-unusable-unit": unusable_unit,
    "weight-lb": weight_lb,
    "overdose": overdose,
    "scig-weekly-ml": scig_weekly_ml,
    "contained-medication-scig": scig_contained_reference,
    "dispense-request-dose": dispense_fallback,
    "continuation-dated": continuation_dated,
    "continuation-no-trough": continuation_no_trough,
    "continuation-dispense": continuation_dispense,
    "entered-in-error": entered_in_error,
    "active-cll": active_cll,
    "rituximab": rituximab,
    "no-pi-diagnosis": no_pi_diagnosis,
    "provisional-cvid": provisional_cvid,
    "infant": infant,
    "non-ig-order": non_ig_order,
    "hyperimmune-order": hyperimmune_order,
    "missing-birthdate": no_birth_date,
    "missing-titers": no_titers,
    "titers-on-ig": titers_on_ig,
    "null-observations": null_observations,
    "null-conditions": null_conditions,
    "missing-hiv-and-spep": no_workup,
    "stale-weight": stale_weight,
    "prednisone-burst": prednisone_burst,
    "crohns-without-albumin": crohns_without_albumin,
    "nephrotic-snomed": nephrotic_snomed,
    "lab-panels": lab_panels,
    "apds-new-code": apds_new_code,
    "viral-bronchitis": viral_bronchitis,
}


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    for name, build in SCENARIOS.items():
        folder = HERE / name
        folder.mkdir(exist_ok=True)
        write(folder / "order-sign-request.json", copy.deepcopy(build().request()))
    if "--goldens" in argv:
        sys.path.insert(0, str(HERE.parent))
        from fastapi.testclient import TestClient

        from cds_service.app import create_app
        from cds_service.core.settings import Settings

        with TestClient(create_app(Settings())) as client:
            for name in SCENARIOS:
                body = json.loads((HERE / name / "order-sign-request.json").read_text())
                cards = client.post("/cds-services/ivig-order-sign", json=body).json()["cards"]
                det = cards[0]["extension"]["ivig-cds.determination"] if cards else None
                write(HERE / name / "expected-determination.json", det)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
