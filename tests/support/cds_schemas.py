"""Validation helpers for CDS Hooks 2.0 bodies and the Da Vinci CRD coverage-information extension.

Schemas (draft 2020-12) live next to this file:

* ``cds-hooks-2.0-response.schema.json``  - CDS Service response (cards, systemActions)
* ``cds-hooks-2.0-discovery.schema.json`` - discovery document
* ``cds-hooks-2.0-feedback.schema.json``  - feedback request body
* ``crd-coverage-information.schema.json`` - one ext-coverage-information extension

Sources:

* CDS Hooks 2.0: HL7/cds-hooks tag v2.0.1 (commit 9eb3da2ae1c06d96f67e4c290d98a3514cfb7d93),
  ``input/pagecontent/index.md``; CDS Hooks 3.0 ballot logical models / invariants
  (HL7/cds-hooks commit fb10ca773a846b36457137e57e137c693a99e48c, ``input/fsh/``) for cross-checks.
* Da Vinci CRD STU 2.2: HL7/davinci-crd tag 2.2.1 (commit 2bfabc15e9552fcbf30fe2b83a679ac839d7b6ed),
  ``input/fsh/extensions/CoverageInformation.fsh`` (invariants crd-ci-q1..q9),
  ``input/fsh/valuesets/CoverageInformationValuesets.fsh``, ``input/fsh/codesystems/CRDTempCodes.fsh``,
  ``input/pagecontent/cards.md`` (resp-32).

Every ``*_errors`` function returns a list of human-readable messages (empty = valid); every
``validate_*`` function raises :class:`SchemaValidationError` carrying that list.
Only the standard library and ``jsonschema`` are used.
"""
# ruff: noqa: E501  (copied from the schema author's work, which uses 120-character lines)

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

__all__ = [
    "COVERAGE_INFORMATION_URL",
    "SchemaValidationError",
    "coverage_information_errors",
    "discovery_errors",
    "feedback_errors",
    "response_errors",
    "response_with_crd_errors",
    "validate_coverage_information",
    "validate_discovery",
    "validate_feedback",
    "validate_response",
    "validate_response_with_crd",
]

SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"

RESPONSE_SCHEMA: Final = "cds-hooks-2.0-response.schema.json"
DISCOVERY_SCHEMA: Final = "cds-hooks-2.0-discovery.schema.json"
FEEDBACK_SCHEMA: Final = "cds-hooks-2.0-feedback.schema.json"
COVERAGE_INFORMATION_SCHEMA: Final = "crd-coverage-information.schema.json"

COVERAGE_INFORMATION_URL: Final = (
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
)

#: CRDCoverageAssertionReasons (http://hl7.org/fhir/us/davinci-crd/ValueSet/coverageAssertionReasons):
#: every code is from CRDTempCodes (CodeSystem id 'temp'). Used by crd-ci-q7.
CRD_TEMP_CODESYSTEM: Final = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
COVERAGE_ASSERTION_REASON_CODES: Final = frozenset(
    {
        "gold-card",
        "no-member-found",
        "no-active-coverage",
        "coverage-not-found",
        "auth-out-network",
        "technical",
    }
)

#: ^context of CRDCoverageInformation (all '#element' contexts naming a resource root).
COVERAGE_INFORMATION_CONTEXTS: Final = frozenset(
    {
        "Appointment",
        "CommunicationRequest",
        "Encounter",
        "DeviceRequest",
        "MedicationRequest",
        "NutritionOrder",
        "QuestionnaireResponse",
        "ServiceRequest",
        "VisionPrescription",
    }
)

_MAX_MESSAGE = 400


class SchemaValidationError(ValueError):
    """Raised by the ``validate_*`` functions; ``errors`` holds every message found."""

    def __init__(self, what: str, errors: Sequence[str]) -> None:
        self.errors: list[str] = list(errors)
        lines = "\n  ".join(self.errors)
        super().__init__(f"{what} is invalid ({len(self.errors)} error(s)):\n  {lines}")


# --------------------------------------------------------------------------- schema plumbing


@functools.cache
def _validator(schema_file: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / schema_file).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _json_path(parts: Iterable[str | int], root: str = "$") -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _contains_url(schema: object) -> str | None:
    """The sub-extension url a ``contains`` clause counts (all our contains clauses are on url)."""
    if not isinstance(schema, Mapping):
        return None
    contains = schema.get("contains")
    if not isinstance(contains, Mapping):
        return None
    props = contains.get("properties")
    if not isinstance(props, Mapping):
        return None
    url = props.get("url")
    if isinstance(url, Mapping) and isinstance(url.get("const"), str):
        return str(url["const"])
    return None


def _format_error(err: ValidationError, root: str) -> str:
    path = _json_path(err.absolute_path, root)
    if err.validator in ("contains", "minContains", "maxContains"):
        url = _contains_url(err.schema)
        if url is not None and isinstance(err.schema, Mapping) and isinstance(err.instance, list):
            low = err.schema.get("minContains", 1)
            high = err.schema.get("maxContains", "*")
            found = sum(
                1 for item in err.instance if isinstance(item, Mapping) and item.get("url") == url
            )
            return f"{path}: sub-extension '{url}' must occur {low}..{high} time(s), found {found}"
    if err.validator == "not" and err.absolute_path and err.absolute_path[-1] == "suggestions":
        return (
            f"{path}: at most one suggestion may have isRecommended=true when selectionBehavior is "
            "'at-most-one' (CDS Hooks 2.0 Suggestion.isRecommended; 3.0 cds-resp-1)"
        )
    custom = err.schema.get("x-message") if isinstance(err.schema, Mapping) else None
    if isinstance(custom, str) and err.validator in ("anyOf", "oneOf", "not"):
        shown_value = repr(err.instance) if isinstance(err.instance, str) else ""
        return f"{path}: {shown_value + ' ' if shown_value else ''}{custom}"
    message = err.message
    if isinstance(err.instance, (dict, list)):
        shown = repr(err.instance)
        if message.startswith(shown):
            message = ("<object>" if isinstance(err.instance, dict) else "<array>") + message[
                len(shown) :
            ]
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return f"{path}: {message}"


def _schema_errors(schema_file: str, instance: object, root: str = "$") -> list[str]:
    errors = sorted(
        _validator(schema_file).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
    )
    return [_format_error(e, root) for e in errors]


# --------------------------------------------------------------------------- CDS Hooks 2.0


def _system_action_description_errors(obj: object) -> list[str]:
    """Strict reading of CDS Hooks 2.0 'Action': description is REQUIRED, systemActions included."""
    if not isinstance(obj, Mapping):
        return []
    actions = obj.get("systemActions")
    if not isinstance(actions, list):
        return []
    return [
        f"$.systemActions[{i}]: 'description' is a required property (CDS Hooks 2.0 Action.description REQUIRED)"
        for i, action in enumerate(actions)
        if isinstance(action, Mapping) and "description" not in action
    ]


def response_errors(obj: object, *, require_system_action_description: bool = True) -> list[str]:
    """Errors in a CDS Hooks 2.0 service response.

    ``require_system_action_description``: the v2.0.1 Action table makes ``description`` REQUIRED,
    but the spec's own System Action example and the CRD examples omit it on systemActions (and
    CDS Hooks 3.0 makes it optional there); the schema is lenient, this flag restores the strict rule.
    """
    errors = _schema_errors(RESPONSE_SCHEMA, obj)
    if require_system_action_description:
        errors += _system_action_description_errors(obj)
    return errors


def discovery_errors(obj: object) -> list[str]:
    """Errors in a CDS Hooks 2.0 discovery document."""
    return _schema_errors(DISCOVERY_SCHEMA, obj)


def feedback_errors(obj: object) -> list[str]:
    """Errors in a CDS Hooks 2.0 feedback request body."""
    return _schema_errors(FEEDBACK_SCHEMA, obj)


def validate_response(obj: object, *, require_system_action_description: bool = True) -> None:
    """Raise :class:`SchemaValidationError` unless ``obj`` is a valid CDS Hooks 2.0 response."""
    errors = response_errors(
        obj, require_system_action_description=require_system_action_description
    )
    if errors:
        raise SchemaValidationError("CDS Hooks response", errors)


def validate_discovery(obj: object) -> None:
    """Raise :class:`SchemaValidationError` unless ``obj`` is a valid CDS Hooks 2.0 discovery document."""
    errors = discovery_errors(obj)
    if errors:
        raise SchemaValidationError("CDS Hooks discovery document", errors)


def validate_feedback(obj: object) -> None:
    """Raise :class:`SchemaValidationError` unless ``obj`` is a valid CDS Hooks 2.0 feedback body."""
    errors = feedback_errors(obj)
    if errors:
        raise SchemaValidationError("CDS Hooks feedback", errors)


# --------------------------------------------------------------------------- CRD coverage-information


def _subs(ext: object) -> list[Mapping[str, object]]:
    if not isinstance(ext, Mapping):
        return []
    items = ext.get("extension")
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, Mapping)]


def _with_url(subs: Sequence[Mapping[str, object]], url: str) -> list[Mapping[str, object]]:
    return [s for s in subs if s.get("url") == url]


def _codes(subs: Sequence[Mapping[str, object]], url: str) -> list[str]:
    return [
        str(s["valueCode"]) for s in _with_url(subs, url) if isinstance(s.get("valueCode"), str)
    ]


def _strings(subs: Sequence[Mapping[str, object]], url: str) -> list[str]:
    return [
        str(s["valueString"]) for s in _with_url(subs, url) if isinstance(s.get("valueString"), str)
    ]


def _reason_in_value_set(concept: Mapping[str, object]) -> bool:
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return False
    return any(
        isinstance(c, Mapping)
        and c.get("system") == CRD_TEMP_CODESYSTEM
        and c.get("code") in COVERAGE_ASSERTION_REASON_CODES
        for c in codings
    )


def _invariant_errors(ext: object, *, q3_iff: bool) -> list[str]:
    """crd-ci-q1..q9 (CRD 2.2.1 CoverageInformation.fsh), each message prefixed with its id."""
    subs = _subs(ext)
    errors: list[str] = []
    covered = _codes(subs, "covered")
    pa_needed = _codes(subs, "pa-needed")
    doc_needed = _codes(subs, "doc-needed")
    doc_purpose = _codes(subs, "doc-purpose")
    info_needed = _codes(subs, "info-needed")
    reasons = _with_url(subs, "reason")
    key_values = {"covered": covered, "pa-needed": pa_needed, "doc-needed": doc_needed}

    def key_elements_set_to(code: str) -> list[str]:
        return [name for name, values in key_values.items() if code in values]

    # q1: extension.where(url='questionnaire').exists() implies extension.where(url = 'doc-needed').exists()
    if _with_url(subs, "questionnaire") and not _with_url(subs, "doc-needed"):
        errors.append("crd-ci-q1: Questionnaire is only allowed when doc-needed exists")

    # q2: covered = not-covered implies pa-needed absent
    if "not-covered" in covered and _with_url(subs, "pa-needed"):
        errors.append(
            "crd-ci-q2: If covered is set to 'not-covered', then 'pa-needed' must not exist"
        )

    # q3: (covered|pa-needed|doc-needed) = conditional implies info-needed exists (FHIRPath expression);
    # the invariant's description says 'if and only if' (and the CRD 2.0.1 expression was the reverse
    # direction), so the reverse is checked too unless q3_iff=False.
    conditional = key_elements_set_to("conditional")
    has_info_needed = bool(_with_url(subs, "info-needed"))
    if conditional and not has_info_needed:
        errors.append(
            "crd-ci-q3: 'info-needed' SHALL exist if at least one of 'covered', 'pa-needed', or 'doc-needed' "
            f"is 'conditional' (conditional: {', '.join(conditional)})"
        )
    if q3_iff and has_info_needed and not conditional:
        errors.append(
            "crd-ci-q3: 'info-needed' SHALL exist only if at least one of 'covered', 'pa-needed', or "
            "'doc-needed' is 'conditional' (reverse direction of the 'if and only if' in the invariant description)"
        )

    # q4: pa-needed in (satisfied, no-auth) and doc-purpose exists implies no doc-purpose = withpa.
    # The published expression spells the code 'noauth' (the code is 'no-auth') and lists 'not-covered',
    # which is not a pa-needed code; the intent (no PA will happen => nothing to send with a PA) is checked.
    pa_not_needed = [code for code in pa_needed if code in ("satisfied", "no-auth", "noauth")]
    if pa_not_needed and "withpa" in doc_purpose:
        errors.append(
            f"crd-ci-q4: If 'pa-needed' is '{pa_not_needed[0]}', then 'doc-purpose' cannot be 'withpa'"
        )

    # q5: (pa-needed = satisfied).exists() = satisfied-pa-id.exists()
    if ("satisfied" in pa_needed) != bool(_with_url(subs, "satisfied-pa-id")):
        errors.append(
            "crd-ci-q5: 'satisfied-pa-id' must exist if and only if 'pa-needed' is set to 'satisfied'"
        )

    # q6: info-needed = OTH implies reason exists
    if "OTH" in info_needed and not reasons:
        errors.append("crd-ci-q6: If 'info-needed' is OTH, then reason must be specified")

    # q7: each reason: text present, or a coding from coverageAssertionReasons (checked per repetition;
    # the FHIRPath expression pools all repetitions, the description is per reason).
    for index, reason in enumerate(reasons):
        concept = reason.get("valueCodeableConcept")
        if not isinstance(concept, Mapping):
            continue
        if not isinstance(concept.get("text"), str) and not _reason_in_value_set(concept):
            errors.append(
                f"crd-ci-q7: reason[{index}]: If reason.coding is present and is not from the extensible value set "
                f"(system {CRD_TEMP_CODESYSTEM}, codes {', '.join(sorted(COVERAGE_ASSERTION_REASON_CODES))}), "
                "then reason.text must be present"
            )

    # q8: doc-purpose with a value other than 'conditional' implies reason exists
    if any(code != "conditional" for code in doc_purpose) and not reasons:
        errors.append(
            "crd-ci-q8: If doc-purpose is present with a value other than 'conditional', then reason must be present"
        )

    # q9: any of covered/pa-needed/doc-needed = indeterminate implies reason exists
    indeterminate = key_elements_set_to("indeterminate")
    if indeterminate and not reasons:
        errors.append(
            "crd-ci-q9: If any of 'covered', 'pa-needed', or 'doc-needed' is set to 'indeterminate', then reason "
            f"must be present (indeterminate: {', '.join(indeterminate)})"
        )
    return errors


def coverage_information_errors(ext: object, *, q3_iff: bool = True, root: str = "$") -> list[str]:
    """Schema errors plus crd-ci-q1..q9 violations for one coverage-information extension.

    ``root`` is the JSON path prefix used in schema messages. ``q3_iff=False`` checks crd-ci-q3
    only in the direction of its FHIRPath expression (conditional => info-needed).
    """
    return _schema_errors(COVERAGE_INFORMATION_SCHEMA, ext, root) + [
        f"{root}: {message}" for message in _invariant_errors(ext, q3_iff=q3_iff)
    ]


def validate_coverage_information(ext: object, *, q3_iff: bool = True) -> None:
    """Raise :class:`SchemaValidationError` unless ``ext`` is a valid coverage-information extension."""
    errors = coverage_information_errors(ext, q3_iff=q3_iff)
    if errors:
        raise SchemaValidationError("coverage-information extension", errors)


def _misplaced_coverage_information(node: object, path: str) -> list[str]:
    """Paths (below a resource root) where the coverage-information url appears."""
    found: list[str] = []
    if isinstance(node, Mapping):
        if node.get("url") == COVERAGE_INFORMATION_URL:
            found.append(path)
        for key, value in node.items():
            found += _misplaced_coverage_information(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _misplaced_coverage_information(value, f"{path}[{index}]")
    return found


def _coverage_key(ext: Mapping[str, object]) -> str | None:
    for sub in _with_url(_subs(ext), "coverage"):
        ref = sub.get("valueReference")
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return str(ref["reference"])
    return None


def _resp32_errors(repetitions: Sequence[tuple[str, Mapping[str, object]]]) -> list[str]:
    """CRD resp-32: repetitions referencing differing coverages SHALL have distinct
    coverage-assertion-ids and satisfied-pa-ids (if present)."""
    errors: list[str] = []
    for i, (path_a, ext_a) in enumerate(repetitions):
        for path_b, ext_b in repetitions[i + 1 :]:
            cov_a, cov_b = _coverage_key(ext_a), _coverage_key(ext_b)
            if cov_a is None or cov_b is None or cov_a == cov_b:
                continue
            for url in ("coverage-assertion-id", "satisfied-pa-id"):
                shared = set(_strings(_subs(ext_a), url)) & set(_strings(_subs(ext_b), url))
                if shared:
                    errors.append(
                        f"{path_b}: CRD resp-32: coverage-information repetitions for different coverages "
                        f"({cov_a} vs {cov_b}) SHALL have distinct {url} values (shared with {path_a}: "
                        f"{', '.join(sorted(shared))})"
                    )
    return errors


def response_with_crd_errors(
    obj: object, *, require_system_action_description: bool = True, q3_iff: bool = True
) -> list[str]:
    """Response schema errors plus, for every resource in ``systemActions``, the errors of each
    coverage-information extension on it (schema + crd-ci-q1..q9), its context (resource type /
    root-level placement) and CRD resp-32 across repetitions."""
    errors = response_errors(
        obj, require_system_action_description=require_system_action_description
    )
    if not isinstance(obj, Mapping):
        return errors
    actions = obj.get("systemActions")
    if not isinstance(actions, list):
        return errors
    for a_index, action in enumerate(actions):
        if not isinstance(action, Mapping):
            continue
        resource = action.get("resource")
        if not isinstance(resource, Mapping):
            continue
        base = f"$.systemActions[{a_index}].resource"
        resource_type = resource.get("resourceType")
        root_extensions = resource.get("extension")
        repetitions: list[tuple[str, Mapping[str, object]]] = []
        if isinstance(root_extensions, list):
            for e_index, ext in enumerate(root_extensions):
                if isinstance(ext, Mapping) and ext.get("url") == COVERAGE_INFORMATION_URL:
                    path = f"{base}.extension[{e_index}]"
                    repetitions.append((path, ext))
                    errors += coverage_information_errors(ext, q3_iff=q3_iff, root=path)
        if repetitions and resource_type not in COVERAGE_INFORMATION_CONTEXTS:
            errors.append(
                f"{base}: ext-coverage-information is not allowed on {resource_type!r} (context: "
                f"{', '.join(sorted(COVERAGE_INFORMATION_CONTEXTS))})"
            )
        for key, value in resource.items():
            if key == "extension" and isinstance(value, list):
                for e_index, ext in enumerate(value):
                    if isinstance(ext, Mapping):
                        for nested_key, nested in ext.items():
                            for path in _misplaced_coverage_information(
                                nested, f"{base}.extension[{e_index}].{nested_key}"
                            ):
                                errors.append(
                                    f"{path}: ext-coverage-information is only allowed on the resource root"
                                )
                continue
            for path in _misplaced_coverage_information(value, f"{base}.{key}"):
                errors.append(
                    f"{path}: ext-coverage-information is only allowed on the resource root"
                )
        errors += _resp32_errors(repetitions)
    return errors


def validate_response_with_crd(
    obj: object, *, require_system_action_description: bool = True, q3_iff: bool = True
) -> None:
    """Raise :class:`SchemaValidationError` unless the response and every coverage-information
    extension on a systemActions resource are valid."""
    errors = response_with_crd_errors(
        obj, require_system_action_description=require_system_action_description, q3_iff=q3_iff
    )
    if errors:
        raise SchemaValidationError("CDS Hooks response (with CRD coverage-information)", errors)
