"""The infection-history criterion: documented, distinct bacterial infections in the look-back."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient

from cds_service.domain import (
    ConditionFact,
    EncounterFact,
    Record,
    Status,
    When,
)
from cds_service.rules import registry as criteria
from tests.support.facts import TODAY, _ctx
from tests.support.scenario import (
    ICD,
    PID,
    SNOMED,
    _add,
    _condition,
    _entries,
    _finding,
    _run,
)


def test_a_single_infection_is_not_recurrent(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        entries = _entries(req, "conditions")
        entries[:] = [e for e in entries if not e["resource"]["id"].endswith(("-2", "-3"))]

    found = _finding(_run(client, change), "infection-history")
    assert found["status"] == "insufficient"
    assert "look-back: 1;" in found["reason"]
    assert "at least 2" in found["reason"]


def test_infection_encounters_count_once_per_day(client: TestClient) -> None:
    def change(req: dict[str, Any]) -> None:
        entries = _entries(req, "conditions")
        entries[:] = [e for e in entries if not e["resource"]["id"].endswith(("-2", "-3"))]
        first = entries[-1]["resource"]["onsetDateTime"]
        for i, day in enumerate((first, "2025-04-02")):
            _add(
                req,
                "encounters",
                {
                    "resourceType": "Encounter",
                    "id": f"enc-{i}",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": f"Patient/{PID}"},
                    "period": {"start": day},
                    "reasonCode": [{"coding": [{"system": ICD, "code": "J01.90"}]}],
                },
            )

    found = _finding(_run(client, change), "infection-history")
    assert found["status"] == "met"
    assert found["evidence"][-1] == "Encounter/enc-1"
    assert "Encounter/enc-0" not in found["evidence"]  # same day as the Condition


def _recode_infections(system: str, codes: list[str]) -> Any:
    def change(req: dict[str, Any]) -> None:
        infections = [
            e["resource"] for e in _entries(req, "conditions") if "infection" in e["resource"]["id"]
        ]
        for res, code in zip(infections, codes, strict=True):
            res["code"] = {"coding": [{"system": system, "code": code}]}

    return change


def test_snomed_infections_count(client: TestClient) -> None:
    det = _run(client, _recode_infections(SNOMED, ["233607000", "75498004", "3110003"]))
    assert _finding(det, "infection-history")["status"] == "met"


def test_viral_bronchitis_is_not_a_bacterial_infection(client: TestClient) -> None:
    det = _run(client, _recode_infections(ICD, ["J20.5", "J20.6", "J20.4"]))
    assert _finding(det, "infection-history")["status"] == "insufficient"
    det = _run(client, _recode_infections(SNOMED, ["16146001", "195724003", "195739001"]))
    assert _finding(det, "infection-history")["status"] == "insufficient"
    det = _run(client, _recode_infections(ICD, ["J20.9", "J20.2", "J18.9"]))
    assert _finding(det, "infection-history")["status"] == "met"


# 14 ---------------------------------------------------------------------------------------------
def test_unspecified_bronchitis_counts_the_same_in_icd_and_snomed(client: TestClient) -> None:
    """Two episodes of 'acute bronchitis, unspecified' (J20.9 / SNOMED 10509002) and of
    'bronchitis' (J40 / SNOMED 32398004): the SNOMED codes are rejected as 'viral or not shown
    bacterial'; the ICD-10-CM codes for the same concepts must not prove bacterial infection."""
    statuses = {}
    for system, code in ((ICD, "J20.9"), (SNOMED, "10509002"), (ICD, "J40"), (SNOMED, "32398004")):

        def change(req: dict[str, Any], s: str = system, c: str = code) -> None:
            conditions = _entries(req, "conditions")
            conditions[:] = [e for e in conditions if "infection" not in e["resource"]["id"]]
            for i, day in enumerate(("2024-03-04", "2024-09-10")):
                cond = _condition(f"bronchitis-{i}", s, c)
                cond["onsetDateTime"] = day
                conditions.append({"resource": cond})

        statuses[code] = _finding(_run(client, change), "infection-history")["status"]
    assert set(statuses.values()) == {"insufficient"}, statuses


def _infection(rid: str, day: dt.date | None, code: str = "J13") -> ConditionFact:
    w = When(day) if day else None
    return ConditionFact(f"Condition/{rid}", ((ICD, code),), w, None, True, False)


def test_infections_counted_once_per_day() -> None:
    """RULES.md infection-history: episodes from Conditions and Encounters, one per day. Two
    Conditions (or two Encounters) on the same day are one episode, not 'recurrent' infections."""
    day = dt.date(2025, 6, 1)
    rec = Record(
        patient=None,
        orders=[],
        conditions=[_infection("a", day), _infection("b", day, "A49.9")],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT
    rec = Record(
        patient=None,
        orders=[],
        encounters=[
            EncounterFact("Encounter/a", ((ICD, "J13"),), When(day)),
            EncounterFact("Encounter/b", ((ICD, "J13"),), When(day)),
        ],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT


def test_undated_infections_do_not_prove_the_lookback() -> None:
    """≥ 2 episodes *in 60 months*: an episode without a date cannot be shown to fall in the
    look-back, so it never makes the criterion met."""
    rec = Record(
        patient=None,
        orders=[],
        conditions=[_infection("a", None), _infection("b", None, "A49.9")],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT


def test_provisional_infections_are_not_documented_episodes() -> None:
    """Two pneumonias recorded as provisional / differential (rule-out) are not documented
    infections, as a provisional diagnosis is not documented (RULES.md diagnosis)."""
    rec = Record(
        patient=None,
        orders=[],
        conditions=[
            ConditionFact(
                "Condition/a", ((ICD, "J13"),), When(dt.date(2025, 2, 1)), None, True, False, False
            ),
            ConditionFact(
                "Condition/b", ((ICD, "J13"),), When(dt.date(2025, 6, 1)), None, True, False, False
            ),
        ],
        today=TODAY,
    )
    assert criteria.infection_history(_ctx(rec)).status is Status.INSUFFICIENT
