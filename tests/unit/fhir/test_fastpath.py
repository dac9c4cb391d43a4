"""cds_service.fastpath must accept only what the R4B models accept, and read it identically."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import records
from cds_service.fhir import fastpath, unvalidated
from cds_service.fhir.models import MODELS, ValidationError, lenient
from cds_service.record.elements import observation_view as _observation_view

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
    st.integers(-2, 3),
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


@settings(max_examples=800, deadline=None)
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
    from cds_service.fhir import bundle

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
    resources = [r for v in request["prefetch"].values() for r in bundle.resources_of(v)]
    builder = record.RecordBuilder(knowledge.default(), "seed-cvid-1", dt.date(2025, 11, 20))
    return builder.build(resources, request["context"]["draftOrders"])


def _without_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every resource through the R4B models, every code read raw."""
    monkeypatch.setattr(fastpath, "observation", lambda raw, codings=None: None)
    monkeypatch.setattr(fastpath, "resource", lambda raw: None)
    monkeypatch.setattr(fastpath, "code", lambda raw: None)


def test_record_is_the_same_without_the_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:

    fast = _build(1000)
    _without_shortcuts(monkeypatch)
    slow = _build(1000)
    assert fast == slow
    assert fast.drugs
    assert fast.exposures
    assert len(fast.measurements) > 500


def _base_resources() -> list[dict[str, Any]]:
    """One resource of each type the record builder validates, as the generator writes them."""
    picked: dict[str, dict[str, Any]] = {}
    request = records.order_sign_request(1000)
    for value in request["prefetch"].values():
        for entry in value.get("entry", []) if value.get("resourceType") == "Bundle" else []:
            res = entry["resource"]
            rtype = res["resourceType"]
            if (
                rtype in fastpath.SPECS
                and (rtype != "Encounter" or "reasonCode" in res)
                and (rtype != "Condition" or res["code"]["coding"][0]["code"].startswith("J"))
            ):
                picked.setdefault(rtype, res)
    picked["Patient"] = request["prefetch"]["patient"]
    picked["MedicationRequest"] = request["context"]["draftOrders"]["entry"][0]["resource"]
    return list(picked.values())


BASES = _base_resources()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _one(raw: dict[str, Any]) -> Any:
    """The record built from one resource, or the exception's type (raw pre-filters can raise
    on malformed input before any parsing: the same on both paths)."""
    try:
        return _build_one(raw)
    except Exception as exc:  # compared, not hidden
        return type(exc)


def _build_one(raw: dict[str, Any]) -> Any:
    import datetime as dt

    from cds_service import knowledge, record

    builder = record.RecordBuilder(knowledge.default(), "seed-cvid-1", dt.date(2025, 11, 20))
    if raw["resourceType"] == "MedicationRequest" and raw.get("status") == "draft":
        drafts = {"resourceType": "Bundle", "entry": [{"resource": raw}]}
        return builder.build([], drafts)
    return builder.build([raw], {"resourceType": "Bundle", "entry": []})


def test_all_bases_take_the_fast_path() -> None:
    assert {r["resourceType"] for r in BASES} == set(fastpath.SPECS)
    for raw in BASES:
        assert fastpath.resource(raw) is not None, raw["resourceType"]


@settings(max_examples=800, deadline=None)
@given(
    base=st.sampled_from(BASES),
    data=st.data(),
)
def test_fast_resources_build_the_same_record(base: dict[str, Any], data: st.DataObject) -> None:
    raw: Any = copy.deepcopy(base)
    paths = _paths(raw) + [("extension",), ("note",), ("onsetString",), ("effectivePeriod",)]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        value = data.draw(
            st.one_of(
                _leaf,
                st.lists(_leaf, max_size=2),
                st.dictionaries(
                    st.sampled_from(["reference", "text", "value", "code", "system", "start"]),
                    _leaf,
                    max_size=2,
                ),
            )
        )
        node = raw
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    if not isinstance(raw.get("resourceType"), str) or raw["resourceType"] != base["resourceType"]:
        return
    fast = _one(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "resource", lambda raw: None)
        slow = _one(raw)
    assert fast == slow


@pytest.mark.parametrize("frequency", [0, -1, 2**31, True, 1.0, "1"])
def test_out_of_range_integers_go_to_the_models(frequency: Any) -> None:
    draft = copy.deepcopy(records.seed_request()["context"]["draftOrders"]["entry"][0]["resource"])
    assert fastpath.resource(draft) is not None
    draft["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = frequency
    assert fastpath.resource(draft) is None


@functools.cache
def _pipeline() -> Any:
    from cds_service.app import create_app
    from cds_service.core.settings import Settings

    return create_app(Settings()).state.pipeline


SCENARIO_REQUESTS = sorted(records.ROOT.glob("fhir_fixtures/*/order-sign-request.json"))


@pytest.mark.parametrize("path", SCENARIO_REQUESTS, ids=lambda p: p.parent.name)
def test_scenarios_answer_the_same_without_the_fast_path(
    path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole responses (cards, unreadable-data lists) of every scenario, both ways."""
    pipeline = _pipeline()
    body = path.read_bytes()
    fast = _without_uuids(pipeline.respond("ivig-order-sign", body))
    _without_shortcuts(monkeypatch)
    assert _without_uuids(pipeline.respond("ivig-order-sign", body)) == fast


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _without_uuids(node: Any) -> Any:
    """Card uuids and assertion ids are random per response."""
    if isinstance(node, dict):
        return {k: _without_uuids(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_uuids(v) for v in node]
    return _UUID.sub("<uuid>", node) if isinstance(node, str) else node


class _Concept(dict[str, Any]):
    """A dict subclass: equal to a plain concept, but not what the check accepts."""


_SELECTED = {"system": "http://loinc.org", "code": "2160-0", "userSelected": True}


@pytest.mark.parametrize(
    ("element", "valid", "lookalike"),
    [
        ("code", {"coding": [_SELECTED]}, {"coding": [{**_SELECTED, "userSelected": 1}]}),
        ("code", BASE["code"], _Concept(BASE["code"])),
        (
            "referenceRange",
            [{"low": {"value": 1, "unit": "mg/dL"}}],
            [{"low": {"value": True, "unit": "mg/dL"}}],
        ),
    ],
)
def test_a_remembered_sub_object_is_not_taken_for_a_lookalike(
    element: str, valid: Any, lookalike: Any
) -> None:
    """Checked codes, references and ranges are remembered by their JSON text: a value equal in
    Python to a remembered one but not in JSON (1 and True, a dict subclass) is still checked."""
    assert valid == lookalike  # a memory keyed by Python equality would take one for the other
    first = {**BASE, element: valid}
    assert fastpath.observation(first) == model_view(first) is not None
    assert fastpath.observation(first) == model_view(first)  # read again, from memory
    assert fastpath.observation({**BASE, element: lookalike}) is None  # the models decide


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=unvalidated._ID_CHARS + " \n\t:/_é٣Ａ", max_size=70),
        st.text(max_size=5),
        st.integers(),
        st.none(),
    )
)
def test_ids_are_checked_as_the_id_pattern_says(value: Any) -> None:
    """The id check reads no regex: it must accept exactly what the FHIR id pattern accepts."""
    expected = isinstance(value, str) and fastpath._ID.fullmatch(value) is not None
    try:
        fastpath._id(value)
        accepted = True
    except fastpath._Unusual:
        accepted = False
    assert accepted == expected, repr(value)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ({"coding": [{"system": "http://loinc.org", "code": "2465-3"}]}, "raw"),
        ({"coding": [{"code": "IGG"}, {"system": "urn:x", "display": "IgG"}]}, "raw"),
        ({"text": "IgG"}, "raw"),
        ({"coding": [{"system": "http://loinc.org", "code": " 2465-3"}]}, None),  # not a code
        ({"coding": ["2465-3"]}, None),
        ({"coding": []}, None),
        ("2465-3", None),
        (None, None),
    ],
)
def test_a_plain_code_reads_as_its_raw_pairs_and_any_other_is_left_raw(
    code: Any, expected: str | None
) -> None:
    raw = {"resourceType": "Observation", "code": code}
    pairs = fastpath.code(raw)
    if expected is None:
        assert pairs is None
    else:
        assert pairs == tuple(unvalidated.codings(raw, "code"))
    assert fastpath.code({"resourceType": "Observation"}) is None
