"""cds_service.fastpath must accept only what the R4B models accept, and read it identically."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import records
from cds_service import fastpath
from cds_service.fhir_models import MODELS, ValidationError, lenient
from cds_service.record import _observation_view

OBSERVATIONS = [r for r in records.make_resources(1000) if r["resourceType"] == "Observation"] + [
    e["resource"] for e in records.seed_request()["prefetch"]["observations"]["entry"]
]


def model_view(raw: dict[str, Any]) -> fastpath.ObservationView | None:
    try:
        return _observation_view(MODELS["Observation"].model_validate(lenient(raw)))
    except (ValidationError, ValueError, TypeError):
        return None


def test_generated_and_seed_observations_read_alike() -> None:
    accepted = 0
    for raw in OBSERVATIONS:
        fast = fastpath.observation(raw)
        if fast is not None:
            accepted += 1
            assert fast == model_view(raw), raw["id"]
    assert accepted == len(OBSERVATIONS)  # the plain shape covers them all


BASE = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
    "subject": {"reference": "Patient/p"},
    "effectiveDateTime": "2025-03-12T09:30:00-05:00",
    "valueQuantity": {"value": 0.9, "unit": "mg/dL", "code": "mg/dL"},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("effectiveDateTime",), "2025-03-12T09:30:00"),  # no zone: lenient() in the model path
        (("effectiveDateTime",), "2025-03"),  # partial date
        (("effectiveDateTime",), "2025-02-30"),  # not a date
        (("effectiveDateTime",), None),
        (("status",), ""),
        (("status",), None),
        (("code",), {}),
        (("valueQuantity", "value"), True),
        (("valueQuantity", "value"), "0.9"),
        (("valueQuantity", "comparator"), "<"),
        (("extension",), [{"url": "http://x", "valueString": "y"}]),
        (("note",), [{"text": "n"}]),
        (("valueString",), "also a value"),
        (("subject", "reference"), ""),
        (("id",), "bad id!"),
    ],
)
def test_unusual_shapes_go_to_the_models(path: tuple[str, ...], value: Any) -> None:
    raw = copy.deepcopy(BASE)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert fastpath.observation(raw) is None


def test_date_only_and_utc() -> None:
    for when in ("2024-10-21", "2024-10-21T23:30:00Z", "2024-10-21T01:02:03.5+14:00"):
        raw = {**BASE, "effectiveDateTime": when}
        fast = fastpath.observation(raw)
        assert fast is not None
        assert fast == model_view(raw)


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            " ",
            "x",
            " x",
            "a b",
            "a  b",
            "final",
            "2024-01-01",
            "2024-13-01",
            "2024-01-01T10:00:00Z",
            "2024-01-01T10:00:00",
            "2024-01-01T24:00:00Z",
            "http://loinc.org",
            "Patient/p",
            "#c",
            "mg/dL",
            "1.0",
            "ü",
            "x\n",
        ]
    ),
)
_PATHS = [
    ("id",),
    ("status",),
    ("code",),
    ("code", "text"),
    ("code", "coding"),
    ("code", "coding", 0, "system"),
    ("code", "coding", 0, "code"),
    ("code", "coding", 0, "display"),
    ("subject",),
    ("subject", "reference"),
    ("effectiveDateTime",),
    ("issued",),
    ("valueQuantity",),
    ("valueQuantity", "value"),
    ("valueQuantity", "unit"),
    ("valueQuantity", "code"),
    ("valueQuantity", "system"),
    ("valueString",),
    ("category",),
    ("meta",),
    ("meta", "lastUpdated"),
    ("meta", "versionId"),
    ("referenceRange",),
    ("interpretation",),
    ("performer",),
    ("encounter",),
]


@settings(max_examples=1500, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(_PATHS),
            st.one_of(
                _leaf,
                st.lists(_leaf, max_size=2),
                st.dictionaries(
                    st.sampled_from(["reference", "text", "value", "code", "system", "coding"]),
                    _leaf,
                    max_size=2,
                ),
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_fastpath_never_accepts_what_the_models_reject(
    edits: list[tuple[tuple[Any, ...], Any]],
) -> None:
    raw: Any = copy.deepcopy(BASE)
    for path, value in edits:
        node = raw
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    fast = fastpath.observation(raw)
    if fast is not None:
        assert fast == model_view(raw)


def _build(n: int) -> Any:
    import datetime as dt

    from cds_service import knowledge, record

    request = records.order_sign_request(n)
    request["prefetch"]["medicationStatements"]["entry"].append(
        {
            "resource": {  # a causative drug must survive the medication pre-filter
                "resourceType": "MedicationStatement",
                "id": "ritux",
                "status": "completed",
                "medicationCodeableConcept": {"text": "Rituximab 500 mg IV"},
                "subject": {"reference": "Patient/seed-cvid-1"},
                "effectiveDateTime": "2023-01-05",
            }
        }
    )
    resources = [r for v in request["prefetch"].values() for r in record.resources_of(v)]
    builder = record.RecordBuilder(knowledge.default(), "seed-cvid-1", dt.date(2025, 11, 20))
    return builder.build(resources, request["context"]["draftOrders"])


def test_record_is_the_same_without_the_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:
    from cds_service import record

    fast = _build(1000)
    monkeypatch.setattr(fastpath, "observation", lambda raw: None)
    monkeypatch.setattr(record.RecordBuilder, "_may_matter", lambda self, raw: True)
    slow = _build(1000)
    assert fast == slow
    assert fast.drugs
    assert fast.exposures
    assert len(fast.measurements) > 500
