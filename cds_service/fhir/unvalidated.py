"""Reads of resource JSON before validation: what the record builder's pre-filters look at.

Validating costs far more than a dictionary look-up, so the builder first decides from the raw
JSON which resources are worth validating (type, id, status, codes, the names of a medication),
and which Medication or panel member a reference points at. These reads are the only ones it
makes outside the validated views (views.py); each reads exactly as the builder did inline. A
value of an unexpected shape (a string where an object belongs) raises TypeError,
AttributeError, KeyError or ValueError, which the builder reports as unreadable data
(`record.builder.DATA_ERRORS`), never as evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from cds_service.domain import Coding
from cds_service.fhir.bundle import raw_codings

Json = dict[str, Any]

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_FHIR_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-."
_TYPES_SEEN: set[str] = set()  # resource types that matched _FHIR_TYPE (a few dozen)


def ref_of(res: Json) -> str:
    """'Type/id' for evidence and DataIssues; ids that are not FHIR ids are never echoed into
    cards (they could carry markdown or HTML into the EHR's display)."""
    rtype, rid = res.get("resourceType"), res.get("id")
    if type(rtype) is not str or rtype not in _TYPES_SEEN:
        if not isinstance(rtype, str) or not _FHIR_TYPE.match(rtype):
            rtype = "Resource"
        elif type(rtype) is str and len(_TYPES_SEEN) < 1000:
            _TYPES_SEEN.add(rtype)
    rid = rid if isinstance(rid, str) and _is_fhir_id(rid) else "invalid-id"
    return f"{rtype}/{rid}"


def is_fhir_id(text: str) -> bool:
    """1 to 64 of the FHIR id characters (A-Z a-z 0-9 - .), checked without a regex: ids are
    unique per resource, so a regex per id buys nothing and costs a match each."""
    return 0 < len(text) <= 64 and not text.strip(_ID_CHARS)


def _is_fhir_id(rid: str) -> bool:
    """_FHIR_ID.match(rid): an id and, as the pattern's `$` allows, one newline after it."""
    return is_fhir_id(rid[:-1] if rid.endswith("\n") else rid)


def resource_type(res: Json) -> Any:
    return res.get("resourceType")


def id_of(res: Json) -> str:
    """The id as a de-duplication key (an absent id is 'None', as the builder always keyed it)."""
    return str(res.get("id"))


def status(res: Json) -> Any:
    return res.get("status")


def intent(res: Json) -> Any:
    return res.get("intent")


def authored_on(res: Json) -> Any:
    return res.get("authoredOn")


def codings(res: Json, element: str) -> list[Coding]:
    """(system, code) of the CodeableConcept `element`."""
    return raw_codings(res.get(element))


def list_codings(res: Json, element: str) -> list[Coding]:
    """(system, code) of every CodeableConcept in the list `element` (e.g. reasonCode)."""
    return [c for cc in res.get(element, []) or [] for c in raw_codings(cc)]


def components(res: Json) -> Any:
    return res.get("component")


def component_codings(comps: Any) -> Iterator[list[Coding]]:
    """The codings of each component that is an object (nothing when `comps` is not a list)."""
    if not isinstance(comps, list):
        return
    for c in comps:
        if isinstance(c, dict):
            yield raw_codings(c.get("code"))


def concept(res: Json, element: str) -> tuple[list[Coding], list[Any]]:
    """The codings and the names (text, displays) of the CodeableConcept `element`."""
    cc = res.get(element)
    return raw_codings(cc), concept_names(cc)


def names(res: Json, element: str) -> list[Any]:
    """The names (text, displays) of the CodeableConcept `element`."""
    return concept_names(res.get(element))


def concept_names(cc: Any) -> list[Any]:
    """The text and the codings' displays of a CodeableConcept (unchecked values, in order);
    nothing when it is not an object."""
    if not isinstance(cc, dict):
        return []
    return [cc.get("text")] + [
        c.get("display") for c in cc.get("coding") or [] if isinstance(c, dict)
    ]


def member_ids(res: Json) -> Iterator[str]:
    """The ids of the Observations a panel lists in `hasMember` (`Observation/<id>` only)."""
    for ref in res.get("hasMember") or []:
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str) and target.startswith("Observation/"):
            yield target.split("/", 1)[1]


def contained(res: Json, local_id: str) -> Json | None:
    """The contained resource with this id (the last one, if several share it)."""
    found: Json | None = None
    for item in res.get("contained", []) or []:
        if item.get("id") == local_id:
            found = item
    return found


def subject_reference(res: Json) -> Any:
    subject = res.get("subject")
    return subject.get("reference") if isinstance(subject, dict) else None


def reference_target(res: Json, element: str) -> str:
    """The reference string of the Reference `element`; '' when it is not an object."""
    ref = res.get(element)
    return str(ref.get("reference", "")) if isinstance(ref, dict) else ""


def reference_display(res: Json, element: str) -> Any:
    ref = res.get(element)
    return ref.get("display") if isinstance(ref, dict) else None


def medication_names(res: Json) -> tuple[list[Coding], list[Any], str]:
    """What a medication resource names without reading a referenced Medication: the codings
    and names of medicationCodeableConcept, the reference's display, a contained Medication's
    codings and text; and the reference itself ('' when there is none)."""
    cc = res.get("medicationCodeableConcept")
    texts: list[Any] = []
    if isinstance(cc, dict):
        texts = [
            cc.get("text"),
            *(c.get("display") for c in cc.get("coding", []) or [] if isinstance(c, dict)),
        ]
    ref = res.get("medicationReference")
    found = raw_codings(cc)
    target = ""
    if isinstance(ref, dict):
        texts.append(ref.get("display"))
        target = str(ref.get("reference", ""))
        for item in res.get("contained", []) or []:
            if isinstance(item, dict) and f"#{item.get('id')}" == target:
                found += raw_codings(item.get("code"))
                texts.append((item.get("code") or {}).get("text"))
    return found, texts, target


def medication_concepts(
    res: Json, medication: Callable[[str], Json | None]
) -> tuple[list[Coding], list[str | None]]:
    """The codings and names (text, displays; None where not a string) a medication resource
    gives its drug, for the population re-review's "is this IG" before any validation: its
    medicationCodeableConcept, the reference's display, then the code of the Medication it
    references (every contained one with that id, or the one `medication` finds by id)."""
    codings, texts = concept(res, "medicationCodeableConcept")
    ref = res.get("medicationReference")
    if isinstance(ref, dict):
        texts.append(ref.get("display"))
        target = str(ref.get("reference") or "")
        medications: list[Any] = []
        if target.startswith("#"):
            medications = [
                item
                for item in res.get("contained") or []
                if isinstance(item, dict) and item.get("id") == target[1:]
            ]
        elif target:
            medications = [medication(target.rsplit("/", 1)[-1])]
        for med in medications:
            if med is not None:
                more, names = concept(med, "code")
                codings += more
                texts += names
    return codings, [t if isinstance(t, str) else None for t in texts]
