"""The one place FHIR R4B models are imported, plus the lenient date/unit helpers around them.

The package root of fhir.resources is R5; R4 JSON validates against the R4B models for every
resource this service reads (shared/research/libs-and-style.md §A2). Importing the classes
here, once, keeps model import cost (~0.3 s) out of the request path.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from cds_service.domain import When

__all__ = [
    "Condition",
    "Encounter",
    "Immunization",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Patient",
    "ValidationError",
    "MODELS",
    "lenient",
    "to_when",
    "validation_summary",
]

MODELS: dict[str, Any] = {
    "Patient": Patient,
    "Observation": Observation,
    "Condition": Condition,
    "Encounter": Encounter,
    "Immunization": Immunization,
    "Medication": Medication,
    "MedicationRequest": MedicationRequest,
    "MedicationStatement": MedicationStatement,
    "MedicationAdministration": MedicationAdministration,
    "MedicationDispense": MedicationDispense,
}

# A dateTime with a time but no zone: FHIR requires a zone, real EHRs omit it. Keep the date only
# (we never compare such values below day precision) instead of rejecting the resource.
_NAIVE_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def lenient(node: Any) -> Any:
    """Copy of a raw FHIR dict with zone-less dateTimes reduced to their date."""
    if isinstance(node, dict):
        return {k: lenient(v) for k, v in node.items()}
    if isinstance(node, list):
        return [lenient(v) for v in node]
    if isinstance(node, str):
        m = _NAIVE_DATETIME.match(node)
        if m:
            return m.group(1)
    return node


def to_when(value: Any) -> When | None:
    """Normalise the polymorphic date fields of fhir.resources (datetime | date | partial str)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return When(aware.date(), aware)
    if isinstance(value, dt.date):
        return When(value)
    text = str(value)
    try:
        return When(dt.datetime.strptime(text[:10], "%Y-%m-%d").date())
    except ValueError:
        pass
    # a partial date keeps its range: '2025-03' is some day from 03-01 to 03-31, not the 1st
    try:
        first = dt.datetime.strptime(text[:7], "%Y-%m").date()
        following = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return When(first, end=following - dt.timedelta(days=1))
    except ValueError:
        pass
    try:
        first = dt.datetime.strptime(text[:4], "%Y").date()
        return When(first, end=dt.date(first.year, 12, 31))
    except ValueError:
        return None


_ELEMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-\[\]]{0,63}$")


def validation_summary(exc: ValidationError) -> tuple[str, str]:
    """(field path, message) of the first validation error, for DataIssues and 400s."""
    first = exc.errors()[0]
    # an unknown element's name is the client's text: shown (in cards, logs) only when name-shaped
    loc = ".".join(
        str(p) if isinstance(p, int) or _ELEMENT_NAME.match(str(p)) else "(unknown element)"
        for p in first.get("loc", ())
    )
    loc = loc or "(resource)"
    return loc, str(first.get("msg", "invalid"))
