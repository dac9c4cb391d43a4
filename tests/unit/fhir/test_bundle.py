"""bundle.patient_resources: the hook pipeline's one walk of a prefetch value gives the same
resources as resources_of and refuses exactly the resources for_patient says are not this
patient's (so the key-level refusal cannot drift from the per-resource rule); canonical_key orders
a record as its (type, date, id) triple."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.fhir import bundle

PID = "p1"
SERVER = "http://ehr.example/fhir"


def _obs(rid: str, **ref: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, **ref}


RESOURCES: list[dict[str, Any]] = [
    _obs("own", subject={"reference": f"Patient/{PID}"}),
    _obs("history", subject={"reference": f"Patient/{PID}/_history/3"}),
    _obs("own-server", subject={"reference": f"{SERVER}/Patient/{PID}"}),
    _obs("other-server", subject={"reference": f"http://elsewhere.example/fhir/Patient/{PID}"}),
    _obs("other", subject={"reference": "Patient/p2"}),
    _obs("by-patient", patient={"reference": f"Patient/{PID}"}),
    _obs("no-reference", subject={"display": "x"}, patient={"reference": "Patient/p2"}),
    _obs("reference-not-a-string", subject={"reference": 7}),
    _obs("subject-not-an-object", subject=f"Patient/{PID}"),
    _obs("no-subject"),
    {"resourceType": "Patient", "id": PID},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Medication", "id": "m"},
    {"resourceType": "OperationOutcome", "id": "oo"},
    {"resourceType": "Condition", "id": "c", "subject": {"reference": "Group/g"}},
]


# for_patient's own answers, spelt out (the walk below is checked against it)
THIS_PATIENTS = {
    None: {"Observation-own", "Observation-history", "Observation-by-patient", "Patient-p1"},
    SERVER: {
        "Observation-own",
        "Observation-history",
        "Observation-own-server",
        "Observation-by-patient",
        "Patient-p1",
    },
}


@pytest.mark.parametrize("server", [None, SERVER])
def test_for_patient_names_this_patients_resources(server: str | None) -> None:
    mine = {
        f"{r['resourceType']}-{r['id']}" for r in RESOURCES if bundle.for_patient(r, PID, server)
    }
    assert mine == THIS_PATIENTS[server]
    # a subject that is not this patient's is decided by the subject, not by `patient`
    assert not bundle.for_patient(
        _obs("x", subject={"reference": "Patient/p2"}, patient={"reference": f"Patient/{PID}"}),
        PID,
    )


@pytest.mark.parametrize("server", [None, SERVER])
@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: f"{r['resourceType']}-{r['id']}")
def test_each_resource_is_refused_exactly_when_for_patient_says_so(
    res: dict[str, Any], server: str | None
) -> None:
    value = {"resourceType": "Bundle", "entry": [{"resource": res}]}
    found, foreign = bundle.patient_resources(value, PID, server)
    assert found == [res]
    exempt = res["resourceType"] in ("Medication", "OperationOutcome")
    expected = [] if exempt or bundle.for_patient(res, PID, server) else [res["resourceType"]]
    assert foreign == expected
    assert bundle.foreign_resources(value, PID, server) == expected


def test_a_bundle_walk_keeps_resources_in_order_and_skips_entries_without_one() -> None:
    entries: list[Any] = [{"resource": r} for r in RESOURCES]
    entries[3:3] = [{"fullUrl": "x"}, "not an entry", {"resource": "not a resource"}]
    value = {"resourceType": "Bundle", "entry": entries}
    found, foreign = bundle.patient_resources(value, PID, None)
    assert found == RESOURCES == list(bundle.resources_of(value))
    assert foreign == ["Observation"] * 7 + ["Patient", "Condition"]


@pytest.mark.parametrize(
    ("value", "resources"),
    [
        (_obs("single", subject={"reference": f"Patient/{PID}"}), 1),
        ({"resourceType": "OperationOutcome"}, 0),
        ({"resourceType": "Bundle"}, 0),
        ({"resourceType": "Bundle", "entry": None}, 0),
        (None, 0),
        (["not", "a", "resource"], 0),
    ],
)
def test_single_resources_and_empty_values(value: Any, resources: int) -> None:
    found, foreign = bundle.patient_resources(value, PID, None)
    assert found == list(bundle.resources_of(value))
    assert len(found) == resources
    assert foreign == []


# few characters, so prefixes and ties are common; the low ones sort below any separator but NUL
_PART = st.text(alphabet=["\x01", " ", "-", "2", "T", "a", "~", "\u00e9"], max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Medication", "MedicationRequest", "Observation"]),
            st.sampled_from(["effectiveDateTime", "authoredOn", "onsetDateTime", None]),
            _PART,
            _PART | st.integers(0, 99),
        ),
        max_size=12,
    )
)
def test_the_canonical_order_is_type_then_date_then_id(
    rows: list[tuple[str, str | None, str, Any]],
) -> None:
    """The one-string key orders resources as the (type, date or '~', id) triple would."""
    resources: list[dict[str, Any]] = []
    for rtype, field, when, rid in rows:
        res: dict[str, Any] = {"resourceType": rtype, "id": rid}
        if field is not None:
            res[field] = when
        resources.append(res)

    def triple(res: dict[str, Any]) -> tuple[str, str, str]:
        dated = [res[k] for k in ("effectiveDateTime", "onsetDateTime", "authoredOn") if k in res]
        when = next((w for w in dated if w), "~")
        return str(res["resourceType"]), when, str(res["id"])

    by_key = sorted(range(len(resources)), key=lambda i: bundle.canonical_key(resources[i]))
    by_triple = sorted(range(len(resources)), key=lambda i: triple(resources[i]))
    assert [triple(resources[i]) for i in by_key] == [triple(resources[i]) for i in by_triple]


@pytest.mark.parametrize(
    ("res", "when"),
    [
        # the first date field in the list that holds a non-empty string decides
        ({"effectiveDateTime": "2024-05-01", "issued": "2024-05-03T00:00:00Z"}, "2024-05-01"),
        ({"effectivePeriod": {"start": "2024-04-01"}, "issued": "2024-05-03"}, "2024-04-01"),
        ({"period": {"start": "2023-01-02", "end": "2023-01-05"}}, "2023-01-02"),
        ({"recordedDate": "2022-02-02", "dateAsserted": "2022-03-03"}, "2022-02-02"),
        # empty, absent, null or malformed fields are passed over, never read as a date
        ({"effectiveDateTime": "", "issued": "2024-05-03"}, "2024-05-03"),
        ({"effectiveDateTime": None, "authoredOn": "2021-01-01"}, "2021-01-01"),
        ({"effectivePeriod": "2024-04-01", "issued": "2024-05-03"}, "2024-05-03"),
        ({"effectivePeriod": {"end": "2024-04-30"}, "issued": "2024-05-03"}, "2024-05-03"),
        ({"onsetPeriod": {"start": 20240101}, "recordedDate": "2024-01-09"}, "2024-01-09"),
        ({"authoredOn": ["2024-01-01"]}, "~"),
        ({}, "~"),  # undated: after every date
    ],
)
def test_the_canonical_date_is_the_first_dated_field(res: dict[str, Any], when: str) -> None:
    key = bundle.canonical_key({"resourceType": "Observation", "id": "o1", **res})
    assert key == f"Observation\x00{when}\x00o1"
