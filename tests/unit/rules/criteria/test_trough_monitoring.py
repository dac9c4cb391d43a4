"""The trough-monitoring criterion (continuation): a steady-state IgG trough on therapy."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import FIXTURES, load_json
from tests.support.scenario import (
    _continuation,
    _entries,
    _finding,
)

SCIG = load_json(FIXTURES / "scig-weekly-ml" / "order-sign-request.json")


# 7 ----------------------------------------------------------------------------------------------
def test_scig_level_two_days_after_a_weekly_dose_is_a_steady_state_trough(
    client: TestClient,
) -> None:
    def change(req: dict[str, Any]) -> None:
        pid = req["context"]["patientId"]
        draft = copy.deepcopy(SCIG["context"]["draftOrders"])
        draft["entry"][0]["resource"]["subject"]["reference"] = f"Patient/{pid}"
        req["context"]["draftOrders"] = draft
        admins = _entries(req, "medicationAdministrations")
        admins.clear()
        day = dt.date(2025, 1, 6)  # weekly home SCIG every Monday
        while day < dt.date(2025, 11, 20):
            admins.append(
                {
                    "resource": {
                        "resourceType": "MedicationAdministration",
                        "id": f"hz-{day.isoformat()}",
                        "status": "completed",
                        "medicationCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/sid/ndc",
                                    "code": "44206-454",
                                    "display": "Hizentra 20% 50 mL",
                                }
                            ]
                        },
                        "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": day.isoformat(),
                    }
                }
            )
            day += dt.timedelta(days=7)

    found = _finding(_continuation(client, change), "trough-monitoring")
    assert found["status"] == "met", found  # IgG 820 mg/dL on Wed 2025-10-01
