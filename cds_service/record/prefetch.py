"""The prefetch templates the services declare, and the shape check of each prefetch value.

Observation searches are narrowed to the codes the rules read (from the knowledge's value sets).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds_service.core.errors import BadRequest
from cds_service.fhir.bundle import is_operation_outcome
from cds_service.fhir.query import PrefetchKey
from cds_service.knowledge import Knowledge

# Observation searches, narrowed by code. One key would carry ~210 LOINC codes (a ~5.6 KB URL, too
# close to the 8 KB request-line/header limits of common servers once a bearer token is added), so
# the codes are split by what reads them; together they are exactly the codes the rules read.
# No look-back date narrows them: CDS Hooks 2.0 templates have no date token (`{{today}}` is 3.0
# STU), and a pre-treatment IgG may be many years old; the fetcher also splits any code list
# that would still make a URL longer than `fetch_max_url`.
OBSERVATION_KEYS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("observations", ("igg-serum", "body-weight"), True),  # timeline, baseline, trough, dose
    (
        "labs",  # secondary-cause work-up and the IGIV boxed-warning safety labs
        (
            "creatinine",
            "bun",
            "cbc",
            "cbc-differential",
            "lft",
            "hiv-test",
            "spep",
            "serum-albumin",
            "urine-protein-24h",
            "stool-a1at",
        ),
        False,
    ),
    # vaccine response: serotype titers by current and older LOINC codes, and the panels that
    # hold them; ~250 codes, so the search is split over two keys (`titers`, `titers2`)
    ("titers", ("pneumococcal-titer", "pneumococcal-panel"), False),
)
OBSERVATION_KEY_PARTS = {"titers": 2}


def observation_key_codes(kn: Knowledge) -> list[tuple[str, list[str], bool]]:
    """(prefetch key, the LOINC codes its search asks for, required) for every Observation key;
    a key with several parts is split into equal shares of its sorted codes (`titers`,
    `titers2`, ...), so that no template nears the URL limits of common servers."""
    loinc = kn.systems["loinc"]
    out: list[tuple[str, list[str], bool]] = []
    for key, sets, required in OBSERVATION_KEYS:
        codes = sorted({c for vid in sets for (s, c) in kn.vs(vid).exact if s == loinc})
        parts = OBSERVATION_KEY_PARTS.get(key, 1)
        size = -(-len(codes) // parts)
        for i in range(parts):
            out.append(
                (key if i == 0 else f"{key}{i + 1}", codes[i * size : (i + 1) * size], required)
            )
    return out


def observation_query(kn: Knowledge, codes: Iterable[str]) -> str:
    loinc = kn.systems["loinc"]
    return "Observation?patient={{context.patientId}}&code=" + ",".join(
        f"{loinc}|{c}" for c in codes
    )


def prefetch_keys(kn: Knowledge) -> tuple[PrefetchKey, ...]:
    """Prefetch templates; Observation searches narrowed to the codes the rules read.

    `required`: without it the determination cannot be made (412 when unobtainable). Optional
    keys that cannot be read leave the criteria they feed `insufficient` (never met) and are
    named in the determination's `unavailable`.
    """
    pid = "patient={{context.patientId}}"
    observations = tuple(
        PrefetchKey(key, "Observation", observation_query(kn, codes), required)
        for key, codes, required in observation_key_codes(kn)
    )
    return (
        PrefetchKey("patient", "Patient", "Patient/{{context.patientId}}", True),
        PrefetchKey("conditions", "Condition", f"Condition?{pid}", True),
        *observations,
        PrefetchKey("medicationRequests", "MedicationRequest", f"MedicationRequest?{pid}", True),
        PrefetchKey(
            "medicationStatements", "MedicationStatement", f"MedicationStatement?{pid}", True
        ),
        PrefetchKey(
            "medicationAdministrations",
            "MedicationAdministration",
            f"MedicationAdministration?{pid}",
            True,
        ),
        PrefetchKey(
            "medicationDispenses", "MedicationDispense", f"MedicationDispense?{pid}", False
        ),
        PrefetchKey("immunizations", "Immunization", f"Immunization?{pid}", False),
        PrefetchKey("encounters", "Encounter", f"Encounter?{pid}", False),
    )


# Resource types a search Bundle may carry besides the one asked for (_include, outcome entries).
_ALWAYS_ALLOWED = frozenset({"OperationOutcome", "Medication", "Patient"})


def check_prefetch_value(spec: PrefetchKey, value: Any) -> None:
    """Reject a prefetch value of the wrong shape with a 400 naming the field."""
    where = f"prefetch.{spec.key}"
    if value is None or is_operation_outcome(value):
        return
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise BadRequest(where, "must be a FHIR resource, a Bundle, or null")
    rtype = value["resourceType"]
    if spec.is_read:
        if rtype not in (spec.resource_type, "Bundle"):
            raise BadRequest(where, f"expected {spec.resource_type}, got {rtype}")
        if rtype == spec.resource_type:
            return
    elif rtype != "Bundle":
        raise BadRequest(where, f"expected a Bundle of {spec.resource_type}, got {rtype}")
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest(f"{where}.entry", "must be an array")
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise BadRequest(f"{where}.entry[{i}].resource", "must be a FHIR resource")
        etype = res["resourceType"]
        if etype != spec.resource_type and etype not in _ALWAYS_ALLOWED:
            raise BadRequest(
                f"{where}.entry[{i}].resource.resourceType",
                f"expected {spec.resource_type}, got {etype}",
            )
