"""Reads of unvalidated resource JSON (cds_service/fhir/unvalidated.py): what the record
builder's pre-filters see, for the shapes real records send and for shapes they should not."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.fhir import unvalidated

LOINC = "http://loinc.org"


def test_ref_of_never_echoes_what_is_not_a_fhir_type_or_id() -> None:
    assert unvalidated.ref_of({"resourceType": "Observation", "id": "a-1.2"}) == "Observation/a-1.2"
    assert unvalidated.ref_of({"resourceType": "<b>x</b>", "id": "[x](http://e)"}) == (
        "Resource/invalid-id"
    )
    assert unvalidated.ref_of({}) == "Resource/invalid-id"


def test_codes_and_names_of_a_concept_skip_what_is_not_an_object() -> None:
    res = {
        "code": {
            "text": "IgG",
            "coding": [{"system": LOINC, "code": "2465-3", "display": "IgG"}, "junk"],
        }
    }
    assert unvalidated.codings(res, "code") == [(LOINC, "2465-3")]
    assert unvalidated.names(res, "code") == ["IgG", "IgG"]
    assert unvalidated.concept(res, "code") == ([(LOINC, "2465-3")], ["IgG", "IgG"])
    assert unvalidated.names({"code": "2465-3"}, "code") == []
    assert unvalidated.codings({}, "code") == []


def test_list_codings_read_every_concept_of_a_list() -> None:
    res = {"reasonCode": [{"coding": [{"system": "s", "code": "a"}]}, {"coding": []}, None]}
    assert unvalidated.list_codings(res, "reasonCode") == [("s", "a")]
    assert unvalidated.list_codings({"reasonCode": None}, "reasonCode") == []


def test_component_codings_only_of_object_components() -> None:
    comps = [{"code": {"coding": [{"system": LOINC, "code": "x"}]}}, "junk", {}]
    assert list(unvalidated.component_codings(comps)) == [[(LOINC, "x")], []]
    assert list(unvalidated.component_codings({"code": {}})) == []
    assert list(unvalidated.component_codings(None)) == []


def test_member_ids_are_observation_references_only() -> None:
    res = {
        "hasMember": [
            {"reference": "Observation/t1"},
            {"reference": "QuestionnaireResponse/q"},
            {"reference": 7},
            "Observation/t2",
            {"reference": "Observation/a/b"},
        ]
    }
    assert list(unvalidated.member_ids(res)) == ["t1", "a/b"]


def test_the_last_contained_resource_with_the_id_is_the_one_read() -> None:
    res = {"contained": [{"id": "m", "n": 1}, {"id": "x"}, {"id": "m", "n": 2}]}
    assert unvalidated.contained(res, "m") == {"id": "m", "n": 2}
    assert unvalidated.contained(res, "none") is None
    with pytest.raises(AttributeError):  # reported by the builder as an unreadable resource
        unvalidated.contained({"contained": ["m"]}, "m")


def test_medication_names_read_concept_reference_and_contained_medication() -> None:
    res = {
        "medicationCodeableConcept": {"text": "Privigen", "coding": [{"system": "s", "code": "1"}]},
        "medicationReference": {"reference": "#med", "display": "IVIG"},
        "contained": [
            {"id": "med", "code": {"coding": [{"system": "s", "code": "2"}], "text": "IG"}}
        ],
    }
    assert unvalidated.medication_names(res) == (
        [("s", "1"), ("s", "2")],
        ["Privigen", None, "IVIG", "IG"],
        "#med",
    )
    assert unvalidated.medication_names({"medicationReference": "Medication/1"}) == ([], [], "")


def test_reference_target_and_display_need_an_object() -> None:
    res = {"medicationReference": {"reference": "Medication/9", "display": "Hizentra"}}
    assert unvalidated.reference_target(res, "medicationReference") == "Medication/9"
    assert unvalidated.reference_display(res, "medicationReference") == "Hizentra"
    assert unvalidated.reference_target({"medicationReference": "x"}, "medicationReference") == ""
    assert unvalidated.subject_reference({"subject": {"reference": "Patient/p"}}) == "Patient/p"
    assert unvalidated.subject_reference({"subject": "Patient/p"}) is None


@settings(max_examples=3000, deadline=None)
@given(
    rtype=st.one_of(st.sampled_from(["Observation", "Condition", "observation"]), st.text()),
    rid=st.one_of(
        st.text(alphabet=unvalidated._ID_CHARS + "\n :<>*_é٣", max_size=68),
        st.text(max_size=4),
        st.integers(),
        st.none(),
    ),
)
def test_a_reference_names_type_and_id_only_when_they_are_fhir_shaped(rtype: Any, rid: Any) -> None:
    """ref_of reads ids without a regex: it must echo exactly what the patterns accept."""
    want_type = rtype if isinstance(rtype, str) and unvalidated._FHIR_TYPE.match(rtype) else None
    want_id = rid if isinstance(rid, str) and unvalidated._FHIR_ID.match(rid) else None
    for _ in range(2):  # a type already seen takes a shorter way
        got = unvalidated.ref_of({"resourceType": rtype, "id": rid})
        assert got == f"{want_type or 'Resource'}/{want_id or 'invalid-id'}"


def test_medication_concepts_read_own_contained_and_referenced_medications() -> None:
    """The re-review's "is this IG" reads every name a medication resource gives its drug."""
    ndc = "http://hl7.org/fhir/sid/ndc"
    own = {
        "resourceType": "MedicationAdministration",
        "medicationCodeableConcept": {"coding": [{"system": ndc, "code": "1"}], "text": "A"},
    }
    assert unvalidated.medication_concepts(own, lambda _: None) == ([(ndc, "1")], ["A", None])
    contained = {
        "resourceType": "MedicationRequest",
        "medicationReference": {"reference": "#m", "display": 7},
        "contained": [
            "not a resource",
            {"id": "m", "code": {"coding": [{"system": ndc, "code": "2", "display": "B"}]}},
            {"id": "m", "code": {"text": "C"}},  # two with one id: both are read
            {"id": "other", "code": {"text": "D"}},
        ],
    }
    assert unvalidated.medication_concepts(contained, lambda _: None) == (
        [(ndc, "2")],
        [None, None, "B", "C"],
    )
    referenced = {"medicationReference": {"reference": "Medication/x"}}
    found = {"x": {"resourceType": "Medication", "code": {"text": "Privigen"}}}
    assert unvalidated.medication_concepts(referenced, found.get) == ([], [None, "Privigen"])
    assert unvalidated.medication_concepts({"medicationReference": "x"}, found.get) == ([], [])
