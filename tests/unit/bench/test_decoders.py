"""bench.decoders compares like with like: its checked msgspec ways (patterns; fastpath's
remembered checks; memories keyed by the decoded Structs) accept and reject the Observations
fastpath does, and read them into the same views."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import decoders, records
from cds_service.fhir import fastpath

OBSERVATIONS = [r for r in records.make_resources(600) if r["resourceType"] == "Observation"] + [
    e["resource"] for e in records.seed_request()["prefetch"]["observations"]["entry"]
]

BASE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "meta": {"versionId": "2", "lastUpdated": "2025-03-12T10:00:00Z"},
    "status": "final",
    "category": [{"coding": [{"system": "http://x", "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}], "text": "Creatinine"},
    "subject": {"reference": "Patient/p"},
    "effectiveDateTime": "2025-03-12T09:30:00-05:00",
    "issued": "2025-03-12T11:30:00Z",
    "valueQuantity": {"value": 0.9, "unit": "mg/dL", "code": "mg/dL"},
    "interpretation": [{"coding": [{"code": "N"}]}],
    "referenceRange": [{"low": {"value": 1}, "high": {"value": 2, "unit": "mg/dL"}}],
}


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """BASE with the element at `path` set to `value`."""
    raw = copy.deepcopy(BASE)
    node: Any = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


def agree(raw: dict[str, Any]) -> None:
    fast = fastpath.observation(copy.deepcopy(raw))
    text = orjson.dumps(raw)
    assert decoders.checked_view(text) == fast, raw
    assert decoders.memo_checked_view(text) == fast, raw
    assert decoders.hashed_checked_view(text) == fast, raw


def test_the_benchmark_records_read_alike() -> None:
    for raw in OBSERVATIONS:
        assert fastpath.observation(raw) is not None
        agree(raw)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("effectiveDateTime",), "2025-03-12T09:30:00"),  # no zone: the models' path
        (("effectiveDateTime",), "2025-03"),
        (("effectiveDateTime",), "2025-02-30"),
        (("effectiveDateTime",), "2025-03-12"),
        (("effectiveDateTime",), None),
        (("issued",), "2025-03-12"),  # an instant needs a time and a zone
        (("status",), ""),
        (("status",), "final "),
        (("status",), "fi  nal"),
        (("status",), None),
        (("code",), {}),
        (("code", "text"), " padded"),
        (("code", "text"), "2025-03-12T09:30"),  # a string shaped like a zone-less dateTime
        (("code", "coding"), []),
        (("code", "coding"), [{}]),
        (("code", "coding", 0, "system"), "http://a b"),
        (("category",), []),
        (("valueQuantity", "value"), True),
        (("valueQuantity", "value"), "0.9"),
        (("valueQuantity", "value"), 3),
        (("valueQuantity",), {}),
        (("valueQuantity", "comparator"), "<"),
        (("valueString",), "also a value"),
        (("extension",), [{"url": "http://x", "valueString": "y"}]),
        (("subject",), {}),
        (("subject", "reference"), ""),
        (("id",), "bad id!"),
        (("id",), "x" * 65),
        (("meta",), {}),
        (("meta", "lastUpdated"), "2025-03-12"),
        (("referenceRange",), [{}]),
        (("referenceRange", 0, "low"), {}),
        (("interpretation",), []),
    ],
)
def test_each_shape_is_judged_alike(path: tuple[Any, ...], value: Any) -> None:
    agree(with_value(path, value))


TEXTS = st.text(alphabet=st.sampled_from("aZ09-.: \t\u00a0T+Z"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(
        [
            ("status",),
            ("id",),
            ("code", "text"),
            ("code", "coding", 0, "code"),
            ("code", "coding", 0, "system"),
            ("subject", "reference"),
            ("effectiveDateTime",),
            ("valueQuantity", "unit"),
        ]
    ),
    text=TEXTS,
)
def test_any_string_is_judged_alike(field: tuple[Any, ...], text: str) -> None:
    """Whitespace, emptiness, ids, codes and dates: the patterns say what fastpath says."""
    agree(with_value(field, text))


def test_the_measurement_runs_and_compares_views() -> None:
    rows = dict(decoders.measure(20, repeats=1))
    assert list(rows) == [
        "floor: orjson.loads",
        "today: orjson + fastpath",
        "msgspec, checked",
        "msgspec + fastpath memos",
        "msgspec, memos by Struct",
        "msgspec, unchecked",
        "  checked: decode only",
        "  closed: decode only",
        "  hashable: decode only",
        "  unchecked: decode only",
    ]
    assert all(ms > 0 for ms in rows.values())
