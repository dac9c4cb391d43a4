"""Fast reading of plain, well-formed Observations without building fhir.resources models.

Validating an Observation with the R4B models costs about 0.1 ms; a chart of a few thousand
laboratory results spends most of a request there (see bench/, `make bench`). Most results an EHR
sends have one simple shape: coded, dated, a quantity or a coded value, references, meta. For that
shape this module checks, field by field, the same constraints the models enforce (required
elements, primitive regexes, one value[x]), and reads the facts the rules need from the raw dict.

It is deliberately conservative: any element it does not know (extensions, notes, components,
partial or zone-less dates, nulls, empty strings...) makes it return None, and the caller falls
back to full model validation. So it can only accept resources the models accept, and it must read
them exactly as the model path does; tests/test_fastpath.py compares the two on generated records.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from cds_service.domain import Coding, When
from cds_service.fhir_models import _NAIVE_DATETIME as NAIVE_DATETIME

# Primitive constraints of fhir_core (R4B), anchored; where ours is narrower it only means fallback.
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*")
_URI = re.compile(r"\S+")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_DATETIME = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_OBSERVATION_KEYS = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "status",
        "category",
        "code",
        "subject",
        "encounter",
        "effectiveDateTime",
        "issued",
        "performer",
        "valueQuantity",
        "valueCodeableConcept",
        "valueString",
        "interpretation",
        "referenceRange",
    }
)
_VALUE_KEYS = ("valueQuantity", "valueCodeableConcept", "valueString")


class _Unusual(Exception):
    """The resource is not of the simple shape: let the models decide."""


@dataclass(frozen=True, slots=True)
class ObservationView:
    """What the record builder reads from an Observation, however it was parsed."""

    codings: tuple[Coding, ...]
    when: When | None
    value: float | None
    unit: str | None
    value_code: tuple[Coding, ...]
    interpretation: tuple[Coding, ...]
    text: str | None
    range_low: tuple[float, str | None] | None  # first referenceRange.low with a value


# -- primitive checks (raise _Unusual) -----------------------------------------------------------


def _str(v: Any) -> str:
    # zone-less dateTimes are rewritten by fhir_models.lenient() wherever they occur: model path
    if type(v) is not str or not v or v.strip() != v or NAIVE_DATETIME.match(v):
        raise _Unusual
    return v


def _match(rx: re.Pattern[str], v: Any) -> str:
    if type(v) is not str or rx.fullmatch(v) is None or NAIVE_DATETIME.match(v):
        raise _Unusual
    return v


def _decimal(v: Any) -> float:
    if type(v) not in (int, float) or _DECIMAL.fullmatch(str(v)) is None:
        raise _Unusual
    return float(v)


def _when(v: Any) -> When:
    text = _str(v)
    try:
        if _DATE.fullmatch(text):
            return When(dt.date.fromisoformat(text))
        if _DATETIME.fullmatch(text):
            instant = dt.datetime.fromisoformat(text)
            return When(instant.date(), instant)
    except ValueError:  # e.g. 2025-02-30: the models reject it too, let them say why
        pass
    raise _Unusual


def _dict(v: Any, allowed: frozenset[str] | tuple[str, ...]) -> dict[str, Any]:
    if type(v) is not dict or not v or not v.keys() <= set(allowed):
        raise _Unusual
    return v


def _list(v: Any) -> list[Any]:
    if type(v) is not list or not v:
        raise _Unusual
    return v


# -- complex types ----------------------------------------------------------------------------

_CODING_KEYS = frozenset({"system", "version", "code", "display", "userSelected"})


def _coding(v: Any) -> Coding:
    d = _dict(v, _CODING_KEYS)
    system = _match(_URI, d["system"]) if "system" in d else None
    code = _match(_CODE, d["code"]) if "code" in d else None
    if "version" in d:
        _str(d["version"])
    if "display" in d:
        _str(d["display"])
    if "userSelected" in d and type(d["userSelected"]) is not bool:
        raise _Unusual
    return (system, code)


def _concept(v: Any) -> tuple[Coding, ...]:
    d = _dict(v, ("coding", "text"))
    if "text" in d:
        _str(d["text"])
    return tuple(_coding(c) for c in _list(d["coding"])) if "coding" in d else ()


def _reference(v: Any) -> None:
    d = _dict(v, ("reference", "display", "type"))
    if "reference" in d:
        _str(d["reference"])
    if "display" in d:
        _str(d["display"])
    if "type" in d:
        _match(_URI, d["type"])


def _quantity(v: Any) -> tuple[float | None, str | None]:
    d = _dict(v, ("value", "unit", "system", "code"))
    value = _decimal(d["value"]) if "value" in d else None
    unit = _str(d["unit"]) if "unit" in d else None
    if "system" in d:
        _match(_URI, d["system"])
    code = _match(_CODE, d["code"]) if "code" in d else None
    if value is None:
        return None, None
    return value, (code or unit)


def _meta(v: Any) -> None:
    d = _dict(v, ("versionId", "lastUpdated", "source", "profile"))
    if "versionId" in d:
        _match(_ID, d["versionId"])
    if "lastUpdated" in d and _when(d["lastUpdated"]).instant is None:
        raise _Unusual  # instant: time and zone required
    if "source" in d:
        _match(_URI, d["source"])
    for p in _list(d["profile"]) if "profile" in d else ():
        _match(_URI, p)


def _range_low(v: Any) -> tuple[float, str | None] | None:
    first: tuple[float, str | None] | None = None
    for rr in _list(v):
        d = _dict(rr, ("low", "high", "text", "type"))
        low = _quantity(d["low"]) if "low" in d else (None, None)
        if "high" in d:
            _quantity(d["high"])
        if "text" in d:
            _str(d["text"])
        if "type" in d:
            _concept(d["type"])
        if first is None and low[0] is not None:
            first = (low[0], low[1])
    return first


def _observation(raw: dict[str, Any]) -> ObservationView:
    if not raw.keys() <= _OBSERVATION_KEYS or sum(k in raw for k in _VALUE_KEYS) > 1:
        raise _Unusual
    if "id" in raw:
        _match(_ID, raw["id"])
    if "meta" in raw:
        _meta(raw["meta"])
    if "status" not in raw or "code" not in raw:
        raise _Unusual  # required: the models name the missing element
    _match(_CODE, raw["status"])
    codings = _concept(raw["code"])
    for c in _list(raw["category"]) if "category" in raw else ():
        _concept(c)
    for key in ("subject", "encounter"):
        if key in raw:
            _reference(raw[key])
    for p in _list(raw["performer"]) if "performer" in raw else ():
        _reference(p)
    effective = _when(raw["effectiveDateTime"]) if "effectiveDateTime" in raw else None
    issued = _when(raw["issued"]) if "issued" in raw else None
    if issued is not None and issued.instant is None:
        raise _Unusual  # instant: time and zone required
    value, unit = _quantity(raw["valueQuantity"]) if "valueQuantity" in raw else (None, None)
    value_code = _concept(raw["valueCodeableConcept"]) if "valueCodeableConcept" in raw else ()
    text = _str(raw["valueString"]) if "valueString" in raw else None
    interpretations = _list(raw["interpretation"]) if "interpretation" in raw else ()
    interpretation = tuple(c for i in interpretations for c in _concept(i))
    low = _range_low(raw["referenceRange"]) if "referenceRange" in raw else None
    return ObservationView(
        codings, effective or issued, value, unit, value_code, interpretation, text, low
    )


def observation(raw: dict[str, Any]) -> ObservationView | None:
    """The view of a plain, valid Observation; None when the models must decide."""
    try:
        return _observation(raw)
    except (_Unusual, KeyError, TypeError):
        return None
