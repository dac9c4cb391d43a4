"""Coding-variant properties (issue 10): every golden scenario gives the same determination when
its record is sent the way other EHRs and labs send the same facts:

- conditions coded in SNOMED CT only (the problem-list concept for the same ICD-10-CM code, taken
  from codes.yaml `maps_to_icd10cm`), or ICD-10-CM without the dot;
- lab results as separate Observations (the fixtures), as one panel per key and date with the
  results in `component`, as a panel with `hasMember` results, and as `hasMember` results coded
  only by a local code whose text names the serotype;
- units swapped: IgG in g/L and mg/L, weight in [lb_av], titers in mg/L.

Wording may name the code or unit as sent, and references may name the panel, so what must hold
is what decides: the outcome, every criterion's status, the dose status, and the IgG timeline.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import DETERMINATION_KEY, FIXTURES, ROOT, load_json

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:oid:2.16.840.1.113883.19.5.99"
TITER_PANEL = "42366-5"
LAB_KEYS = ("labs", "titers", "titers2")

SCENARIOS = sorted(
    p.name
    for p in FIXTURES.iterdir()
    if p.is_dir()
    and (p / "order-sign-request.json").exists()
    and load_json(p / "expected-determination.json") is not None
)

Change = Callable[[dict[str, Any]], None]


@functools.cache
def _snomed_for_icd() -> dict[str, str]:
    """ICD-10-CM code -> a verified SNOMED CT concept that corresponds to it (codes.yaml)."""
    data = yaml.safe_load((ROOT / "cds_service" / "knowledge" / "codes.yaml").read_text())
    out: dict[str, str] = {}
    for vs in data["valuesets"].values():
        for entry in vs.get("snomed", []) or []:
            icd = entry.get("maps_to_icd10cm")
            if (
                entry.get("verified")
                and icd
                and not entry.get("broad")
                and not entry.get("exclude")
            ):
                out.setdefault(str(icd), str(entry["code"]))
    # viral acute bronchitis J20.3-J20.7 has no organism-specific SNOMED concept in the sources:
    # a problem list says 195724003 "Acute bronchitis due to virus" (codes.yaml, rejected list)
    for icd in ("J20.3", "J20.4", "J20.5", "J20.6", "J20.7"):
        out.setdefault(icd, "195724003")
    return out


def _resources(req: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = (req.get("prefetch") or {}).get(key)
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return []
    return [e["resource"] for e in value.get("entry", [])]


def _all(req: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for key in (req.get("prefetch") or {}) for r in _resources(req, key)]


# -- condition variants -------------------------------------------------------------------------


def snomed_only(req: dict[str, Any]) -> None:
    table = _snomed_for_icd()
    for res in _all(req):
        if res["resourceType"] != "Condition":
            continue
        codings = res["code"].get("coding", [])
        icd = next((c["code"] for c in codings if c.get("system") == ICD), None)
        if icd is None:
            continue
        assert icd in table, f"no verified SNOMED CT concept for {icd} in codes.yaml"
        res["code"] = {"coding": [{"system": SNOMED, "code": table[icd]}]}


def icd_undotted(req: dict[str, Any]) -> None:
    for res in _all(req):
        if res["resourceType"] == "Condition":
            for c in res["code"].get("coding", []):
                if c.get("system") == ICD:
                    c["code"] = c["code"].replace(".", "")
                    c.pop("display", None)


# -- panel variants -----------------------------------------------------------------------------


def _groups(req: dict[str, Any], key: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for res in _resources(req, key):
        if _single(res):
            groups.setdefault(res["effectiveDateTime"], []).append(res)
    return groups


def _single(res: dict[str, Any]) -> bool:
    """A single dated result (a panel the fixture already sends stays as it is)."""
    return (
        res["resourceType"] == "Observation"
        and "effectiveDateTime" in res
        and "component" not in res
        and "hasMember" not in res
    )


def _panel(members: list[dict[str, Any]], key: str, pid: str) -> dict[str, Any]:
    first = members[0]
    code = (
        {"coding": [{"system": LOINC, "code": TITER_PANEL}]}
        if key.startswith("titers")
        else {"coding": [{"system": LOCAL, "code": "LABPANEL"}], "text": "Laboratory panel"}
    )
    return {
        "resourceType": "Observation",
        "id": f"panel-{key}-{first['id']}"[:64],
        "status": "final",
        "code": code,
        "subject": first["subject"],
        "effectiveDateTime": first["effectiveDateTime"],
    }


def _set_entries(req: dict[str, Any], key: str, resources: list[dict[str, Any]]) -> None:
    req["prefetch"][key]["entry"] = [{"resource": r} for r in resources]


def panels_with_components(req: dict[str, Any]) -> None:
    pid = req["context"]["patientId"]
    for key in LAB_KEYS:
        groups = _groups(req, key)
        kept = [r for r in _resources(req, key) if not _single(r)]
        for members in groups.values():
            panel = _panel(members, key, pid)
            panel["component"] = [
                {
                    "code": m["code"],
                    **{k: m[k] for k in ("valueQuantity", "valueCodeableConcept") if k in m},
                    **({"interpretation": m["interpretation"]} if "interpretation" in m else {}),
                }
                for m in members
            ]
            kept.append(panel)
        if _resources(req, key):
            _set_entries(req, key, kept)


def panels_with_members(req: dict[str, Any], *, local_titers: bool = False) -> None:
    pid = req["context"]["patientId"]
    for key in LAB_KEYS:
        groups = _groups(req, key)
        extra: list[dict[str, Any]] = []
        for members in groups.values():
            panel = _panel(members, key, pid)
            panel["hasMember"] = [{"reference": f"Observation/{m['id']}"} for m in members]
            extra.append(panel)
            if local_titers and key.startswith("titers"):
                for i, m in enumerate(members):
                    display = m["code"]["coding"][0].get("display", "")
                    label = display.split("serotype ")[-1].split(" ")[0] if display else ""
                    m["code"] = {
                        "coding": [{"system": LOCAL, "code": f"PN{i}"}],
                        "text": f"Serotype {label}",
                    }
        if extra:
            _set_entries(req, key, [*_resources(req, key), *extra])


def local_member_titers(req: dict[str, Any]) -> None:
    panels_with_members(req, local_titers=True)


# -- unit variants ------------------------------------------------------------------------------


def _swap(q: dict[str, Any], unit: str, factor: float) -> None:
    q["value"] = round(q["value"] * factor, 6)
    q["unit"] = q["code"] = unit
    q["system"] = UCUM


def units_swapped(req: dict[str, Any]) -> None:
    for i, res in enumerate(_all(req)):
        q = res.get("valueQuantity") if res["resourceType"] == "Observation" else None
        if not isinstance(q, dict) or "value" not in q:
            continue
        codes = {c.get("code") for c in res["code"].get("coding", [])}
        unit = q.get("code") or q.get("unit")
        if "2465-3" in codes and unit == "mg/dL":
            _swap(q, "g/L" if i % 2 else "mg/L", 0.01 if i % 2 else 10.0)
            for rr in res.get("referenceRange", []):
                if "low" in rr and (rr["low"].get("code") or rr["low"].get("unit")) == "mg/dL":
                    _swap(rr["low"], q["unit"], 0.01 if i % 2 else 10.0)
        elif codes & {"29463-7", "3141-9"} and unit == "kg":
            _swap(q, "[lb_av]", 1 / 0.45359237)
        elif unit == "ug/mL":
            _swap(q, "mg/L", 1.0)


VARIANTS: dict[str, Change] = {
    "snomed-only": snomed_only,
    "icd-undotted": icd_undotted,
    "panels-components": panels_with_components,
    "panels-members": panels_with_members,
    "local-member-titers": local_member_titers,
    "units-swapped": units_swapped,
}


def _decisive(det: dict[str, Any]) -> dict[str, Any]:
    return {
        "outcome": det["outcome"],
        "requestType": det["requestType"],
        "therapyStart": det["therapyStart"],
        "criteria": {c["id"]: c["status"] for c in det["criteria"]},
        "dose": {
            "status": det["dose"]["status"],
            "mgPerKgPer4Weeks": None
            if det["dose"]["mgPerKgPer4Weeks"] is None
            else round(det["dose"]["mgPerKgPer4Weeks"]),
        },
        "labs": [
            (round(lab["valueMgDl"], 1) if lab["valueMgDl"] is not None else None, lab["phase"])
            for lab in det["labs"]
        ],
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_determination_whatever_the_coding(
    client: TestClient, scenario: str, variant: str
) -> None:
    req = copy.deepcopy(load_json(FIXTURES / scenario / "order-sign-request.json"))
    expected = load_json(FIXTURES / scenario / "expected-determination.json")
    VARIANTS[variant](req)
    response = client.post("/cds-services/ivig-order-sign", json=req)
    assert response.status_code == 200, response.text
    det = response.json()["cards"][0]["extension"][DETERMINATION_KEY]
    assert _decisive(det) == _decisive(expected)
