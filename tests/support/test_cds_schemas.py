"""Tests for the CDS Hooks 2.0 / CRD coverage-information schemas and validate.py.

Valid fixtures are transcribed from the specifications:
* CDS Hooks 2.0.1 (HL7/cds-hooks tag v2.0.1, input/pagecontent/index.md): 'Example' and
  'Example response using autolaunchable' (CDS Service Response), 'System Action', 'Discovery Example',
  feedback examples.
* Da Vinci CRD 2.2.1 (HL7/davinci-crd tag 2.2.1, input/resources/CRDServiceResponse.json): the
  coverage-information systemAction (the ServiceRequest body is abridged, the extension is verbatim).
If a git mirror of HL7/davinci-crd is available (env DAVINCI_CRD_GIT_DIR, default
/work/.mirror/HL7+davinci-crd/repo), the full example files are validated too; otherwise skipped.
"""
# ruff: noqa: E501  (copied from the schema author's work, which uses 120-character lines)

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.support import cds_schemas as v

JSON = dict[str, Any]

# --------------------------------------------------------------------------- fixtures from the specs

SPEC_CARDS_EXAMPLE: JSON = {
    "cards": [
        {
            "uuid": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "summary": "Example Card",
            "indicator": "info",
            "detail": "This is an example card.",
            "source": {
                "label": "Static CDS Service Example",
                "url": "https://example.com",
                "icon": "https://example.com/img/icon-100px.png",
            },
            "links": [
                {"label": "Google", "url": "https://google.com", "type": "absolute"},
                {"label": "Github", "url": "https://github.com", "type": "absolute"},
                {
                    "label": "SMART Example App",
                    "url": "https://smart.example.com/launch",
                    "type": "smart",
                    "appContext": '{"session":3456356,"settings":{"module":4235}}',
                },
            ],
        },
        {
            "summary": "Another card",
            "indicator": "warning",
            "source": {"label": "Static CDS Service Example"},
            "overrideReasons": [
                {
                    "code": "reason-code-provided-by-service",
                    "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
                    "display": "Patient refused",
                },
                {
                    "code": "12354",
                    "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
                    "display": "Contraindicated",
                },
            ],
        },
    ]
}

SPEC_AUTOLAUNCH_EXAMPLE: JSON = {
    "cards": [
        {
            "uuid": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "summary": "Lung cancer screening shared decision making",
            "detail": "Patient is a current smoker with a 20 pack/year history. Consider advising patient to "
            "complete lung cancer screening.",
            "source": {
                "label": "Lung Cancer Screening Shared Decision Making App",
                "url": "https://example.com/LCS",
                "icon": "https://example.com/img/icon-100px.png",
            },
            "links": [
                {
                    "label": "Github",
                    "url": "https://github.com",
                    "type": "absolute",
                    "autolaunchable": True,
                }
            ],
            "indicator": "info",
        }
    ]
}

SPEC_SYSTEM_ACTION_EXAMPLE: JSON = {
    "cards": [],
    "systemActions": [
        {
            "type": "update",
            "resource": {
                "resourceType": "ServiceRequest",
                "id": "example-MRI-59879846",
                "...": "<snipped for brevity",
            },
        }
    ],
}

SPEC_SUGGESTION_CARD: JSON = {
    "uuid": "0941cda0-91d7-42db-b5af-0ebbef2507bf",
    "summary": "Replace rental order with purchase order (to reduce long-term costs)",
    "indicator": "info",
    "source": {
        "label": "Centers for Medicare & Medicaid Services",
        "url": "https://example.org/cms",
        "topic": {
            "system": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type",
            "code": "therapy-alternatives-opt",
            "display": "Optional Therapy Alternatives",
        },
    },
    "suggestions": [
        {
            "label": "Change to an order for purchase",
            "uuid": "e56e1945-20b3-4393-8503-a1a20fd73152",
            "actions": [
                {
                    "type": "delete",
                    "description": "Remove rental order",
                    "resourceId": "ServiceRequest/2468",
                },
                {
                    "type": "create",
                    "description": "Add purchase order",
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "id": "AAA",
                        "status": "draft",
                        "intent": "original-order",
                    },
                },
            ],
        }
    ],
    "selectionBehavior": "any",
}

CRD_COVERAGE_INFORMATION: JSON = {
    "url": "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information",
    "extension": [
        {
            "url": "coverage",
            "valueReference": {"reference": "http://example.org/fhir/Coverage/example"},
        },
        {"url": "covered", "valueCode": "covered"},
        {"url": "pa-needed", "valueCode": "satisfied"},
        {"url": "doc-needed", "valueCode": "conditional"},
        {"url": "info-needed", "valueCode": "OTH"},
        {
            "url": "billingCode",
            "valueCoding": {"system": "http://www.ama-assn.org/go/cpt", "code": "77065"},
        },
        {
            "url": "billingCode",
            "valueCoding": {"system": "http://www.ama-assn.org/go/cpt", "code": "77066"},
        },
        {
            "url": "billingCode",
            "valueCoding": {"system": "http://www.ama-assn.org/go/cpt", "code": "77067"},
        },
        {
            "url": "reason",
            "valueCodeableConcept": {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                        "code": "auth-out-network",
                        "display": "Authorization needed out-of-network",
                    }
                ],
                "text": "In-network required unless exigent circumstances",
            },
        },
        {
            "url": "reason",
            "valueCodeableConcept": {
                "text": "Diagnosis needed to determine documentation requirements"
            },
        },
        {
            "url": "detail",
            "extension": [
                {"url": "category", "valueCode": "cat-limitation"},
                {
                    "url": "code",
                    "valueCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                                "code": "out-network-copay",
                            }
                        ]
                    },
                },
                {
                    "url": "value",
                    "valueQuantity": {
                        "system": "http://unitsofmeasure.org",
                        "code": "%",
                        "value": 10,
                    },
                },
                {"url": "qualification", "valueString": "Copay minimum is $15"},
            ],
        },
        {
            "url": "dependency",
            "valueReference": {"reference": "http://example.org/fhir/ServiceRequest/example2"},
        },
        {"url": "date", "valueDate": "2019-02-15"},
        {"url": "coverage-assertion-id", "valueString": "12345ABC"},
        {"url": "satisfied-pa-id", "valueString": "Q8U119"},
        {
            "url": "contact",
            "valueContactDetail": {
                "telecom": [
                    {"system": "url", "value": "http://some-payer/xyz-sub-org/get-help-here.html"}
                ]
            },
        },
    ],
}

CRD_RESPONSE: JSON = {
    "cards": [
        {
            "uuid": "fbc9e223-4ba8-4bb9-a31c-4720c14f00d2",
            "summary": "Patient is overdue for a PAP smear",
            "indicator": "info",
            "detail": "Last date on record for a PAP test for this patient was May, 2014.",
            "source": {
                "label": "You are Covered Insurance",
                "url": "https://example.org",
                "icon": "https://example.org/img/icon-100px.png",
                "topic": {
                    "system": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type",
                    "code": "clinical-reminder",
                    "display": "Clinical Reminder",
                },
            },
        },
        {
            "extension": {
                "davinci-crd.associated-resource": [{"reference": "ServiceRequest/2468"}]
            },
            **SPEC_SUGGESTION_CARD,
        },
    ],
    "systemActions": [
        {
            "type": "update",
            "resource": {
                "resourceType": "ServiceRequest",
                "id": "idfromcontext",
                "extension": [CRD_COVERAGE_INFORMATION],
                "status": "draft",
                "intent": "original-order",
                "subject": {
                    "reference": "http://example.org/fhir/Patient/123",
                    "display": "Jane Smith",
                },
            },
        }
    ],
}

SPEC_DISCOVERY_EXAMPLE: JSON = {
    "services": [
        {
            "hook": "patient-view",
            "title": "Static CDS Service Example",
            "description": "An example of a CDS Service that returns a static set of cards",
            "id": "static-patient-greeter",
            "prefetch": {"patientToGreet": "Patient/{{context.patientId}}"},
        },
        {
            "hook": "order-select",
            "title": "Order Echo CDS Service",
            "description": "An example of a CDS Service that simply echoes the order(s) being placed",
            "id": "order-echo",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "medications": "MedicationRequest?patient={{context.patientId}}",
            },
        },
        {
            "hook": "order-sign",
            "title": "Pharmacogenomics CDS Service",
            "description": "An example of a more advanced, precision medicine CDS Service",
            "id": "pgx-on-order-sign",
            "usageRequirements": "Note: functionality of this CDS Service is degraded without access to a FHIR "
            "Restful API as part of CDS recommendation generation.",
        },
        {
            "title": "Example CDS Service Discovery",
            "hook": "patient-view",
            "id": "patientview",
            "prefetch": {"patient": "Patient/{{context.patientId}}"},
            "description": "clinical decision support for patient view",
            "extension": {
                "com.example.clientConformance": "http://hooks.example.org/fhir/102/Conformance/patientview"
            },
        },
    ]
}

SPEC_FEEDBACK_EXAMPLES: list[JSON] = [
    {
        "feedback": [
            {
                "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                "outcomeTimestamp": "2021-12-11T10:05:31Z",
            }
        ]
    },
    {
        "feedback": [
            {
                "card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
                "outcome": "overridden",
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            }
        ]
    },
    {
        "feedback": [
            {
                "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "code": "d7ecf885",
                        "system": "https://example.com/cds-hooks/override-reason-system",
                    },
                    "userComment": "A comment entered by the clinician.",
                },
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            }
        ]
    },
]


def ivig_coverage_information(*subs: JSON, drop: tuple[str, ...] = ()) -> JSON:
    """A coverage-information extension for an immune globulin order: PA needed, clinical documentation
    to be sent with the PA request (plus overrides/extra sub-extensions)."""
    base: list[JSON] = [
        {"url": "coverage", "valueReference": {"reference": "Coverage/cov-1"}},
        {"url": "covered", "valueCode": "covered"},
        {"url": "pa-needed", "valueCode": "auth-needed"},
        {"url": "doc-needed", "valueCode": "clinical"},
        {"url": "doc-purpose", "valueCode": "withpa"},
        {
            "url": "reason",
            "valueCodeableConcept": {
                "text": "Immune globulin requires prior authorization under policy X"
            },
        },
        {"url": "questionnaire", "valueCanonical": "http://example.org/Questionnaire/ivig-pa|1"},
        {"url": "date", "valueDate": "2026-11-02"},
        {"url": "coverage-assertion-id", "valueString": "ivig-0001"},
    ]
    overridden = {s["url"] for s in subs}
    exts = [s for s in base if s["url"] not in overridden and s["url"] not in drop] + list(subs)
    return {"url": v.COVERAGE_INFORMATION_URL, "extension": exts}


def response_with(ci: JSON, resource_type: str = "MedicationRequest") -> JSON:
    return {
        "cards": [],
        "systemActions": [
            {
                "type": "update",
                "description": "Record coverage information on the immune globulin order",
                "resource": {
                    "resourceType": resource_type,
                    "id": "ivig-order-1",
                    "extension": [ci],
                    "status": "draft",
                    "intent": "order",
                },
            }
        ],
    }


def card(**changes: object) -> JSON:
    c: JSON = {
        "summary": "Prior authorization required",
        "indicator": "info",
        "source": {"label": "Example Payer"},
    }
    c.update(changes)
    return {"cards": [c]}


# --------------------------------------------------------------------------- schemas themselves


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in v.SCHEMA_DIR.glob("*.schema.json")
        if p.name != "determination.schema.json"  # the project's contract, checked in test_seed
    ),
)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((v.SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert "v2.0.1" in schema["description"] or "2.2.1" in schema["description"]


# --------------------------------------------------------------------------- response: valid


@pytest.mark.parametrize(
    "example",
    [SPEC_CARDS_EXAMPLE, SPEC_AUTOLAUNCH_EXAMPLE, {"cards": []}, {"cards": [SPEC_SUGGESTION_CARD]}],
)
def test_spec_response_examples_are_valid(example: JSON) -> None:
    v.validate_response(example)


def test_spec_system_action_example_is_valid_only_in_lenient_mode() -> None:
    v.validate_response(SPEC_SYSTEM_ACTION_EXAMPLE, require_system_action_description=False)
    errors = v.response_errors(SPEC_SYSTEM_ACTION_EXAMPLE)
    assert errors == [
        "$.systemActions[0]: 'description' is a required property (CDS Hooks 2.0 Action.description REQUIRED)"
    ]


def test_crd_example_response_is_valid_with_crd_checks() -> None:
    v.validate_response_with_crd(CRD_RESPONSE, require_system_action_description=False)


def test_summary_of_139_characters_is_valid() -> None:
    v.validate_response(card(summary="x" * 139))


def test_deprecated_delete_with_resource_id_string_is_valid() -> None:
    resp = card(
        suggestions=[
            {
                "label": "Remove",
                "actions": [
                    {"type": "delete", "description": "Remove it", "resource": "ServiceRequest/1"}
                ],
            }
        ],
        selectionBehavior="at-most-one",
    )
    v.validate_response(resp)


# --------------------------------------------------------------------------- response: invalid


def only_error(errors: list[str], needle: str) -> None:
    assert errors, "expected an error"
    assert any(needle in e for e in errors), errors


@pytest.mark.parametrize(
    ("resp", "needle"),
    [
        pytest.param(card(summary="x" * 140), "is too long", id="summary-140-chars"),
        pytest.param(card(summary=""), "should be non-empty", id="summary-empty"),
        pytest.param(card(indicator="hard-stop"), "'hard-stop' is not one of", id="bad-indicator"),
        pytest.param(card(indicator="INFO"), "is not one of", id="indicator-case"),
        pytest.param(
            {"cards": [{"summary": "s", "indicator": "info"}]},
            "'source' is a required property",
            id="no-source",
        ),
        pytest.param(
            card(source={"url": "https://example.org"}),
            "'label' is a required property",
            id="source-no-label",
        ),
        pytest.param(
            card(source={"label": "x", "icon": "/img/icon.png"}),
            "does not match",
            id="relative-icon",
        ),
        pytest.param(
            card(
                suggestions=[
                    {
                        "label": "Do it",
                        "actions": [
                            {
                                "type": "create",
                                "description": "d",
                                "resource": {"resourceType": "Task"},
                            }
                        ],
                    }
                ]
            ),
            "'selectionBehavior' is a dependency of 'suggestions'",
            id="suggestions-without-selectionBehavior",
        ),
        pytest.param(
            card(suggestions=[{"label": "x"}], selectionBehavior="all"),
            "is not one of",
            id="bad-selectionBehavior",
        ),
        pytest.param(
            card(overrideReasons=[{"code": "a", "system": "http://example.org/reasons"}]),
            "'display' is a required property",
            id="override-reason-without-display",
        ),
        pytest.param(card(overrideReasons=[]), "should be non-empty", id="empty-overrideReasons"),
        pytest.param(card(links=[]), "should be non-empty", id="empty-links"),
        pytest.param(card(detail=""), "should be non-empty", id="empty-detail"),
        pytest.param(
            card(
                links=[
                    {
                        "label": "App",
                        "url": "https://app.example.org",
                        "type": "smart",
                        "autoLaunchable": True,
                    }
                ]
            ),
            "'autoLaunchable' was unexpected",
            id="misspelt-autolaunchable",
        ),
        pytest.param(
            card(
                links=[
                    {
                        "label": "Doc",
                        "url": "https://example.org",
                        "type": "absolute",
                        "appContext": "x",
                    }
                ]
            ),
            "'appContext' is only valid for links of type 'smart'",
            id="appContext-on-absolute-link",
        ),
        pytest.param(
            card(links=[{"label": "Doc", "url": "https://example.org", "type": "web"}]),
            "is not one of",
            id="bad-link-type",
        ),
        pytest.param(
            card(
                suggestions=[{"label": "x", "actions": [{"type": "create", "description": "d"}]}],
                selectionBehavior="any",
            ),
            "'resource' is a required property",
            id="create-without-resource",
        ),
        pytest.param(
            card(
                suggestions=[
                    {
                        "label": "x",
                        "actions": [
                            {
                                "type": "update",
                                "description": "d",
                                "resource": "MedicationRequest/1",
                            }
                        ],
                    }
                ],
                selectionBehavior="any",
            ),
            "is not of type 'object'",
            id="update-with-string-resource",
        ),
        pytest.param(
            card(
                suggestions=[
                    {
                        "label": "x",
                        "actions": [{"type": "delete", "resourceId": "ServiceRequest/1"}],
                    }
                ],
                selectionBehavior="any",
            ),
            "'description' is a required property",
            id="suggestion-action-without-description",
        ),
        pytest.param(
            card(
                suggestions=[{"label": "x", "actions": [{"type": "delete", "description": "d"}]}],
                selectionBehavior="any",
            ),
            "a delete action must identify its target with 'resourceId'",
            id="delete-without-target",
        ),
        pytest.param(
            card(
                suggestions=[
                    {
                        "label": "x",
                        "actions": [
                            {
                                "type": "delete",
                                "description": "d",
                                "resourceId": "http://x/ServiceRequest/1",
                            }
                        ],
                    }
                ],
                selectionBehavior="any",
            ),
            "does not match",
            id="absolute-resourceId",
        ),
        pytest.param(
            card(
                suggestions=[
                    {"label": "a", "isRecommended": True},
                    {"label": "b", "isRecommended": True},
                ],
                selectionBehavior="at-most-one",
            ),
            "at most one suggestion may have isRecommended=true",
            id="two-recommended-at-most-one",
        ),
        pytest.param(
            card(
                suggestions=[{"label": "a", "actionSelectionBehavior": "all"}],
                selectionBehavior="any",
            ),
            "'actionSelectionBehavior' was unexpected",
            id="cds-hooks-3.0-only-field",
        ),
        pytest.param(card(extension={}), "should be non-empty", id="empty-extension"),
        pytest.param(
            {"systemActions": [{"type": "update", "resource": {"resourceType": "Task"}}]},
            "'cards' is a required property",
            id="no-cards",
        ),
        pytest.param(
            {"cards": [], "systemActions": []}, "should be non-empty", id="empty-systemActions"
        ),
        pytest.param(
            {
                "cards": [],
                "systemActions": [
                    {"type": "patch", "description": "d", "resource": {"resourceType": "Task"}}
                ],
            },
            "is not one of",
            id="bad-action-type",
        ),
        pytest.param(
            {
                "cards": [],
                "systemActions": [{"type": "update", "description": "d", "resource": {"id": "1"}}],
            },
            "'resourceType' is a required property",
            id="resource-without-resourceType",
        ),
        pytest.param({"cards": [], "foo": 1}, "'foo' was unexpected", id="unknown-top-level-key"),
    ],
)
def test_broken_responses_are_rejected(resp: JSON, needle: str) -> None:
    only_error(v.response_errors(resp), needle)
    with pytest.raises(v.SchemaValidationError):
        v.validate_response(resp)


def test_two_recommended_suggestions_allowed_with_any() -> None:
    v.validate_response(
        card(
            suggestions=[
                {"label": "a", "isRecommended": True},
                {"label": "b", "isRecommended": True},
            ],
            selectionBehavior="any",
        )
    )


def test_errors_carry_json_paths() -> None:
    errors = v.response_errors(
        {
            "cards": [
                SPEC_CARDS_EXAMPLE["cards"][0],
                {**SPEC_CARDS_EXAMPLE["cards"][1], "indicator": "bad"},
            ]
        }
    )
    assert errors == ["$.cards[1].indicator: 'bad' is not one of ['info', 'warning', 'critical']"]


# --------------------------------------------------------------------------- discovery


def test_spec_discovery_example_is_valid() -> None:
    v.validate_discovery(SPEC_DISCOVERY_EXAMPLE)
    v.validate_discovery({"services": []})


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({}, "'services' is a required property"),
        ({"services": [{"hook": "order-sign", "description": "d"}]}, "'id' is a required property"),
        ({"services": [{"hook": "order-sign", "id": "x"}]}, "'description' is a required property"),
        ({"services": [{"description": "d", "id": "x"}]}, "'hook' is a required property"),
        ({"services": [{"hook": "order-sign", "description": "d", "id": "a/b"}]}, "does not match"),
        (
            {
                "services": [
                    {"hook": "order-sign", "description": "d", "id": "x", "prefetch": {"p": 1}}
                ]
            },
            "is not of type 'string'",
        ),
        (
            {"services": [{"hook": "order-sign", "description": "d", "id": "x", "prefetch": {}}]},
            "should be non-empty",
        ),
        (
            {"services": [{"hook": "order-sign", "description": "d", "id": "x", "title": ""}]},
            "should be non-empty",
        ),
        (
            {
                "services": [
                    {"hook": "order-sign", "description": "d", "id": "x", "hookVersion": "1.0"}
                ]
            },
            "'hookVersion' was unexpected",
        ),
    ],
)
def test_broken_discovery_is_rejected(doc: JSON, needle: str) -> None:
    only_error(v.discovery_errors(doc), needle)
    with pytest.raises(v.SchemaValidationError):
        v.validate_discovery(doc)


# --------------------------------------------------------------------------- feedback


@pytest.mark.parametrize("example", SPEC_FEEDBACK_EXAMPLES)
def test_spec_feedback_examples_are_valid(example: JSON) -> None:
    v.validate_feedback(example)


def fb(**changes: object) -> JSON:
    item: JSON = {
        "card": "c1",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-02T10:00:00.5Z",
    }
    item.update(changes)
    return {"feedback": [item]}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (fb(outcome="accepted"), "'acceptedSuggestions' is a required property"),
        (fb(outcome="ignored"), "is not one of"),
        (fb(outcomeTimestamp="2026-11-02T10:00:00+01:00"), "does not match"),
        (fb(outcomeTimestamp="2026-11-02"), "does not match"),
        (fb(overrideReason={}), "is not valid under any of the given schemas"),
        (fb(overrideReason={"reason": {"code": "x"}}), "'system' is a required property"),
        (fb(outcome="accepted", acceptedSuggestions=[{}]), "'id' is a required property"),
        ({"feedback": []}, "should be non-empty"),
    ],
)
def test_broken_feedback_is_rejected(doc: JSON, needle: str) -> None:
    only_error(v.feedback_errors(doc), needle)


# --------------------------------------------------------------------------- coverage-information


def test_crd_coverage_information_example_is_valid() -> None:
    assert v.coverage_information_errors(CRD_COVERAGE_INFORMATION) == []


def test_ivig_coverage_information_is_valid() -> None:
    assert v.coverage_information_errors(ivig_coverage_information()) == []


@pytest.mark.parametrize(
    ("ext", "needle"),
    [
        pytest.param(
            ivig_coverage_information(drop=("coverage-assertion-id",)),
            "sub-extension 'coverage-assertion-id' must occur 1..1 time(s), found 0",
            id="missing-coverage-assertion-id",
        ),
        pytest.param(
            ivig_coverage_information(drop=("coverage",)),
            "sub-extension 'coverage' must occur 1..1",
            id="missing-coverage",
        ),
        pytest.param(
            ivig_coverage_information(drop=("date",)),
            "sub-extension 'date' must occur 1..1",
            id="missing-date",
        ),
        pytest.param(
            ivig_coverage_information(drop=("covered",)),
            "sub-extension 'covered' must occur 1..1",
            id="missing-covered",
        ),
        pytest.param(
            ivig_coverage_information(
                {"url": "covered", "valueCode": "covered"},
                {"url": "covered", "valueCode": "conditional"},
                {"url": "info-needed", "valueCode": "performer"},
            ),
            "sub-extension 'covered' must occur 1..1 time(s), found 2",
            id="covered-twice",
        ),
        pytest.param(
            ivig_coverage_information(
                {"url": "pa-needed", "valueCode": "auth-needed"},
                {"url": "pa-needed", "valueCode": "no-auth"},
            ),
            "sub-extension 'pa-needed' must occur 0..1 time(s), found 2",
            id="pa-needed-twice",
        ),
        pytest.param(
            ivig_coverage_information({"url": "covered", "valueCode": "yes"}),
            "'yes' is not one of",
            id="bad-covered-code",
        ),
        pytest.param(
            ivig_coverage_information({"url": "doc-needed", "valueCode": "both"}),
            "'both' is not one of",
            id="crd-2.0.1-doc-needed-both",
        ),
        pytest.param(
            ivig_coverage_information({"url": "covered", "valueString": "covered"}),
            "'valueCode' is a required property",
            id="wrong-value-type",
        ),
        pytest.param(
            ivig_coverage_information({"url": "date", "valueDate": "02/11/2026"}),
            "does not match",
            id="bad-date",
        ),
        pytest.param(
            ivig_coverage_information({"url": "coverage-assertion-id", "valueString": ""}),
            "does not match",
            id="empty-assertion-id",
        ),
        pytest.param(
            ivig_coverage_information(
                {"url": "coverage", "valueReference": {"reference": "Patient/1"}}
            ),
            "does not match",
            id="coverage-not-a-Coverage",
        ),
        pytest.param(
            ivig_coverage_information({"url": "coverage_assertion_id", "valueString": "x"}),
            "'coverage_assertion_id' is not a coverage-information sub-extension name",
            id="unknown-relative-sub-extension",
        ),
        pytest.param(
            ivig_coverage_information(
                {
                    "url": "detail",
                    "extension": [
                        {"url": "code", "valueCodeableConcept": {"text": "x"}},
                        {"url": "value", "valueBoolean": True},
                    ],
                }
            ),
            "sub-extension 'category' must occur 1..1",
            id="detail-without-category",
        ),
        pytest.param(
            {"url": "http://example.org/other", "extension": []},
            "ext-coverage-information' was expected",
            id="wrong-url",
        ),
        # invariants
        pytest.param(
            ivig_coverage_information({"url": "covered", "valueCode": "conditional"}),
            "crd-ci-q3: 'info-needed' SHALL exist if",
            id="q3-conditional-without-info-needed",
        ),
        pytest.param(
            ivig_coverage_information(
                {"url": "covered", "valueCode": "indeterminate"}, drop=("reason", "doc-purpose")
            ),
            "crd-ci-q9",
            id="q9-indeterminate-without-reason",
        ),
        pytest.param(
            ivig_coverage_information(drop=("doc-needed",)),
            "crd-ci-q1",
            id="q1-questionnaire-without-doc-needed",
        ),
        pytest.param(
            ivig_coverage_information({"url": "covered", "valueCode": "not-covered"}),
            "crd-ci-q2",
            id="q2-not-covered-with-pa-needed",
        ),
        pytest.param(
            ivig_coverage_information({"url": "pa-needed", "valueCode": "no-auth"}),
            "crd-ci-q4",
            id="q4-no-auth-with-withpa",
        ),
        pytest.param(
            ivig_coverage_information({"url": "pa-needed", "valueCode": "satisfied"}),
            "crd-ci-q5",
            id="q5-satisfied-without-id",
        ),
        pytest.param(
            ivig_coverage_information({"url": "satisfied-pa-id", "valueString": "PA1"}),
            "crd-ci-q5",
            id="q5-id-without-satisfied",
        ),
        pytest.param(
            ivig_coverage_information(
                {"url": "covered", "valueCode": "conditional"},
                {"url": "info-needed", "valueCode": "OTH"},
                drop=("reason", "doc-purpose"),
            ),
            "crd-ci-q6",
            id="q6-OTH-without-reason",
        ),
        pytest.param(
            ivig_coverage_information(
                {
                    "url": "reason",
                    "valueCodeableConcept": {
                        "coding": [{"system": "http://example.org/reasons", "code": "x"}]
                    },
                }
            ),
            "crd-ci-q7",
            id="q7-foreign-reason-without-text",
        ),
        pytest.param(
            ivig_coverage_information(drop=("reason",)),
            "crd-ci-q8",
            id="q8-doc-purpose-without-reason",
        ),
        pytest.param(
            ivig_coverage_information({"url": "info-needed", "valueCode": "location"}),
            "crd-ci-q3: 'info-needed' SHALL exist only if",
            id="q3-reverse",
        ),
    ],
)
def test_broken_coverage_information_is_rejected(ext: JSON, needle: str) -> None:
    only_error(v.coverage_information_errors(ext), needle)
    with pytest.raises(v.SchemaValidationError):
        v.validate_coverage_information(ext)


def test_q3_reverse_direction_can_be_disabled() -> None:
    ext = ivig_coverage_information({"url": "info-needed", "valueCode": "location"})
    assert v.coverage_information_errors(ext, q3_iff=False) == []


def test_q7_reason_from_value_set_needs_no_text() -> None:
    ext = ivig_coverage_information(
        {"url": "covered", "valueCode": "indeterminate"},
        {
            "url": "reason",
            "valueCodeableConcept": {
                "coding": [{"system": v.CRD_TEMP_CODESYSTEM, "code": "technical"}]
            },
        },
        drop=("pa-needed", "doc-purpose", "questionnaire"),
    )
    assert v.coverage_information_errors(ext) == []


def test_every_invariant_message_names_its_invariant() -> None:
    bad = {
        "url": v.COVERAGE_INFORMATION_URL,
        "extension": [
            {"url": "covered", "valueCode": "not-covered"},
            {"url": "pa-needed", "valueCode": "satisfied"},
            {"url": "doc-needed", "valueCode": "indeterminate"},
            {"url": "doc-purpose", "valueCode": "withpa"},
            {"url": "info-needed", "valueCode": "OTH"},
        ],
    }
    messages = v.coverage_information_errors(bad)
    found = {m.split("crd-ci-")[1][:2] for m in messages if "crd-ci-" in m}
    assert found == {"q2", "q3", "q4", "q5", "q6", "q8", "q9"}, messages


# --------------------------------------------------------------------------- response + CRD


def test_ivig_response_with_crd_is_valid() -> None:
    v.validate_response_with_crd(response_with(ivig_coverage_information()))


def test_response_with_crd_reports_extension_errors_with_paths() -> None:
    errors = v.response_with_crd_errors(
        response_with(ivig_coverage_information({"url": "covered", "valueCode": "conditional"}))
    )
    assert errors == [
        (
            "$.systemActions[0].resource.extension[0]: crd-ci-q3: 'info-needed' SHALL exist if at least one of "
            "'covered', 'pa-needed', or 'doc-needed' is 'conditional' (conditional: covered)"
        )
    ]
    errors = v.response_with_crd_errors(
        response_with(ivig_coverage_information(drop=("coverage-assertion-id",)))
    )
    assert errors == [
        (
            "$.systemActions[0].resource.extension[0].extension: "
            "sub-extension 'coverage-assertion-id' must occur 1..1 time(s), found 0"
        )
    ]


def test_response_with_crd_checks_extension_context() -> None:
    errors = v.response_with_crd_errors(
        response_with(ivig_coverage_information(), resource_type="Coverage")
    )
    only_error(errors, "not allowed on 'Coverage'")
    resp = response_with(ivig_coverage_information())
    resp["systemActions"][0]["resource"]["dosageInstruction"] = [
        {"extension": [ivig_coverage_information()]}
    ]
    only_error(
        v.response_with_crd_errors(resp),
        "$.systemActions[0].resource.dosageInstruction[0].extension[0]: "
        "ext-coverage-information is only allowed on the resource root",
    )


def test_response_with_crd_resp32_distinct_assertion_ids_per_coverage() -> None:
    resp = response_with(ivig_coverage_information())
    second = ivig_coverage_information(
        {"url": "coverage", "valueReference": {"reference": "Coverage/cov-2"}}
    )
    resp["systemActions"][0]["resource"]["extension"].append(second)
    only_error(v.response_with_crd_errors(resp), "CRD resp-32")
    resp["systemActions"][0]["resource"]["extension"][1] = ivig_coverage_information(
        {"url": "coverage", "valueReference": {"reference": "Coverage/cov-2"}},
        {"url": "coverage-assertion-id", "valueString": "ivig-0002"},
    )
    assert v.response_with_crd_errors(resp) == []


def test_response_with_crd_still_checks_response_schema() -> None:
    resp = response_with(ivig_coverage_information())
    del resp["systemActions"][0]["description"]
    only_error(v.response_with_crd_errors(resp), "'description' is a required property")
    assert v.response_with_crd_errors(resp, require_system_action_description=False) == []


def test_validate_raises_with_all_errors() -> None:
    with pytest.raises(v.SchemaValidationError) as info:
        v.validate_response_with_crd(
            response_with(
                ivig_coverage_information(
                    {"url": "covered", "valueCode": "indeterminate"}, drop=("reason", "doc-purpose")
                )
            )
        )
    assert any("crd-ci-q9" in e for e in info.value.errors)
    assert "crd-ci-q9" in str(info.value)


# --------------------------------------------------------------------------- full upstream examples (optional)

CRD_GIT_DIR = Path(os.environ.get("DAVINCI_CRD_GIT_DIR", "/work/.mirror/HL7+davinci-crd/repo"))
CRD_TAG = "2.2.1"


def _crd_file(path: str) -> JSON:
    git = shutil.which("git")
    if git is None or not CRD_GIT_DIR.is_dir():
        pytest.skip("no HL7/davinci-crd git mirror available")
    try:
        out = subprocess.run(
            [git, "--git-dir", str(CRD_GIT_DIR), "show", f"{CRD_TAG}:{path}"],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError:
        pytest.skip(f"{path} not readable at {CRD_TAG}")
    loaded: JSON = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize(
    "name", ["CRDServiceResponse.json", "CRDServiceResponse2.json", "CRDServiceResponse3.json"]
)
def test_upstream_crd_response_examples(name: str) -> None:
    obj = _crd_file(f"input/resources/{name}")
    assert v.response_with_crd_errors(obj, require_system_action_description=False) == []


def test_upstream_crd_example_extension_matches_transcription() -> None:
    obj = _crd_file("input/resources/CRDServiceResponse.json")
    assert obj["systemActions"][0]["resource"]["extension"][0] == CRD_COVERAGE_INFORMATION


def test_upstream_crd_discovery_example() -> None:
    v.validate_discovery(_crd_file("input/resources/CRDServices.json"))


def test_fixtures_are_not_mutated() -> None:
    before = copy.deepcopy(CRD_RESPONSE)
    v.response_with_crd_errors(CRD_RESPONSE)
    assert before == CRD_RESPONSE
