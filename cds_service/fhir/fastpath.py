"""Fast reading of plain, well-formed Observations without building fhir.resources models.

Validating an Observation with the R4B models costs about 0.1 ms; a chart of a few thousand
laboratory results spends most of a request there (see bench/, `make bench`). Most results an EHR
sends have one simple shape: coded, dated, a quantity or a coded value, references, meta. For that
shape this module checks, field by field, the same constraints the models enforce (required
elements, primitive regexes, one value[x]), and reads the facts the rules need from the raw dict.

It is deliberately conservative: any element it does not know (extensions, notes, components,
partial or zone-less dates, nulls, empty strings...) makes it return None, and the caller falls
back to full model validation. So it can only accept resources the models accept, and it must read
them exactly as the model path does; tests/unit/fhir/test_fastpath.py compares the two on
generated records.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple, TypeVar

import orjson

from cds_service.domain import Coding, When
from cds_service.fhir.models import _NAIVE_DATETIME as NAIVE_DATETIME
from cds_service.fhir.unvalidated import is_fhir_id

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


class _Unusual(Exception):
    """The resource is not of the simple shape: let the models decide."""


class ObservationView(NamedTuple):
    """What the record builder reads from an Observation, however it was parsed."""

    codings: tuple[Coding, ...]
    when: When | None
    value: float | None
    unit: str | None
    value_code: tuple[Coding, ...]
    interpretation: tuple[Coding, ...]
    text: str | None
    range_low: tuple[float, str | None] | None  # first referenceRange.low with a value
    range_high: tuple[float, str | None] | None = None  # first referenceRange.high with a value


# -- primitive checks (raise _Unusual) -----------------------------------------------------------


# Strings already checked (codes, systems, displays, units, references, dates repeat across a
# chart and across requests): the checks are pure, so remember successes, within a bound.
_MEMO_LIMIT = 200_000
_OK_STR: set[str] = set()
_OK: dict[re.Pattern[str], set[str]] = {_CODE: set(), _URI: set()}
_WHEN: dict[str, When] = {}


def _remember(memo: set[str], v: str) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo.add(v)


def _str(v: Any) -> str:
    if v in _OK_STR and type(v) is str:
        return v
    # zone-less dateTimes are rewritten by models.lenient() wherever they occur: model path
    if type(v) is not str or not v or v.strip() != v or NAIVE_DATETIME.match(v):
        raise _Unusual
    _remember(_OK_STR, v)
    return v


def _match(rx: re.Pattern[str], v: Any) -> str:
    memo = _OK.get(rx)
    if memo is not None and v in memo and type(v) is str:
        return v
    if type(v) is not str or rx.fullmatch(v) is None or NAIVE_DATETIME.match(v):
        raise _Unusual
    if memo is not None:
        _remember(memo, v)
    return v


def _id(v: Any) -> str:
    """_match(_ID, v) without the regex (unvalidated.is_fhir_id: all the pattern says); an id
    never looks like a zone-less dateTime (no colon)."""
    if type(v) is not str or not is_fhir_id(v):
        raise _Unusual
    return v


def _decimal(v: Any) -> float:
    # str() of an int, and of a finite float (repr: digits, a point, an exponent), always matches
    # _DECIMAL; only inf and nan do not: so no regex per value
    if type(v) is int:
        return float(v)
    if type(v) is not float or not math.isfinite(v):
        raise _Unusual
    return v


def _when(v: Any) -> When:
    if type(v) is str:
        hit = _WHEN.get(v)
        if hit is not None:
            return hit
    text = _str(v)
    when: When | None = None
    try:
        if _DATE.fullmatch(text):
            when = When(dt.date.fromisoformat(text))
        elif _DATETIME.fullmatch(text):
            instant = dt.datetime.fromisoformat(text)
            when = When(instant.date(), instant)
    except ValueError:  # e.g. 2025-02-30: the models reject it too, let them say why
        pass
    if when is None:
        raise _Unusual
    if len(_WHEN) >= _MEMO_LIMIT:
        _WHEN.clear()
    _WHEN[text] = when
    return when


def _dict(v: Any, allowed: AbstractSet[str]) -> dict[str, Any]:
    if type(v) is not dict or not v or not v.keys() <= allowed:
        raise _Unusual
    return v


def _list(v: Any) -> list[Any]:
    if type(v) is not list or not v:
        raise _Unusual
    return v


T = TypeVar("T")

# Checked sub-objects, by their exact JSON text: a chart repeats the same codes, categories,
# subject and reference ranges on every result, and serialising one costs a fifth of checking it.
# Only successes are kept; what is kept is shared, so it is immutable (tuples, None) or a
# read-only View. The text is exact (true, 1 and 1.0 differ; a NaN serialises as null, which no
# check accepts), and the serialiser refuses subclasses of dict or list, so those are always
# checked.
_SUBTREE_LIMIT = 20_000
_SUBTREES: dict[tuple[Callable[[Any], Any], bytes], Any] = {}
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_SUBCLASS


def _checked(check: Callable[[Any], T], v: Any) -> T:
    """`check(v)`, remembered for a value of the same JSON text."""
    try:
        key = (check, orjson.dumps(v, option=_PASSTHROUGH))
    except TypeError:  # JSONEncodeError: a subclass, a huge integer...: no memory
        return check(v)
    try:
        found: T = _SUBTREES[key]
        return found
    except KeyError:
        pass
    result = check(v)
    if len(_SUBTREES) >= _SUBTREE_LIMIT:
        _SUBTREES.clear()
    _SUBTREES[key] = result
    return result


# -- complex types ----------------------------------------------------------------------------

_CODING_KEYS = frozenset({"system", "version", "code", "display", "userSelected"})
_CC_KEYS = frozenset(("coding", "text"))
_REF_KEYS = frozenset(("reference", "display", "type"))
_QTY_KEYS = frozenset(("value", "unit", "system", "code"))
_META_KEYS = frozenset(("versionId", "lastUpdated", "source", "profile"))
_RANGE_KEYS = frozenset(("low", "high", "text", "type"))


_OK_URI, _OK_CODE = _OK[_URI], _OK[_CODE]


def _coding(v: Any) -> Coding:
    if type(v) is not dict or not v or not v.keys() <= _CODING_KEYS:
        raise _Unusual
    system = _uri(v["system"]) if "system" in v else None
    code = _code(v["code"]) if "code" in v else None
    if "display" in v:
        _str(v["display"])
    if "version" in v:
        _str(v["version"])
    if "userSelected" in v and type(v["userSelected"]) is not bool:
        raise _Unusual
    return (system, code)


def _concept(v: Any) -> tuple[Coding, ...]:
    if type(v) is not dict or not v or not v.keys() <= _CC_KEYS:
        raise _Unusual
    if "text" in v:
        _str(v["text"])
    if "coding" not in v:
        return ()
    coding = v["coding"]
    if type(coding) is not list or not coding:
        raise _Unusual
    return tuple([_coding(c) for c in coding])


def _reference(v: Any) -> None:
    d = _dict(v, _REF_KEYS)
    if "reference" in d:
        _str(d["reference"])
    if "display" in d:
        _str(d["display"])
    if "type" in d:
        _match(_URI, d["type"])


def _quantity(v: Any) -> tuple[float | None, str | None]:
    d = _dict(v, _QTY_KEYS)
    value = _decimal(d["value"]) if "value" in d else None
    unit = _str(d["unit"]) if "unit" in d else None
    if "system" in d:
        _uri(d["system"])
    code = _code(d["code"]) if "code" in d else None
    if value is None:
        return None, None
    return value, (code or unit)


def _meta(v: Any) -> None:
    d = _dict(v, _META_KEYS)
    if "versionId" in d:
        _id(d["versionId"])
    if "lastUpdated" in d and _when(d["lastUpdated"]).instant is None:
        raise _Unusual  # instant: time and zone required
    if "source" in d:
        _match(_URI, d["source"])
    for p in _list(d["profile"]) if "profile" in d else ():
        _match(_URI, p)


Limit = tuple[float, str | None] | None


def _range(v: Any) -> tuple[Limit, Limit]:
    """The first referenceRange.low and the first referenceRange.high that carry a value."""
    first: Limit = None
    top: Limit = None
    for rr in _list(v):
        d = _dict(rr, _RANGE_KEYS)
        low = _quantity(d["low"]) if "low" in d else (None, None)
        high = _quantity(d["high"]) if "high" in d else (None, None)
        if "text" in d:
            _str(d["text"])
        if "type" in d:
            _concept(d["type"])
        if first is None and low[0] is not None:
            first = (low[0], low[1])
        if top is None and high[0] is not None:
            top = (high[0], high[1])
    return first, top


def _observation(raw: dict[str, Any], codings: tuple[Coding, ...] | None) -> ObservationView:
    codings = _observation_frame(raw, codings)
    effective = _when(raw["effectiveDateTime"]) if "effectiveDateTime" in raw else None
    issued = _when(raw["issued"]) if "issued" in raw else None
    if issued is not None and issued.instant is None:
        raise _Unusual  # instant: time and zone required
    value, unit = _quantity(raw["valueQuantity"]) if "valueQuantity" in raw else (None, None)
    value_code = (
        _checked(_concept, raw["valueCodeableConcept"]) if "valueCodeableConcept" in raw else ()
    )
    text = _str(raw["valueString"]) if "valueString" in raw else None
    interpretation: tuple[Coding, ...] = ()
    if "interpretation" in raw:  # a generator built for an absent element cost 0.3 µs a result
        interpretation = tuple(
            c for i in _list(raw["interpretation"]) for c in _checked(_concept, i)
        )
    low, high = _checked(_range, raw["referenceRange"]) if "referenceRange" in raw else (None, None)
    return ObservationView(
        codings, effective or issued, value, unit, value_code, interpretation, text, low, high
    )


def _observation_frame(
    raw: dict[str, Any], codings: tuple[Coding, ...] | None
) -> tuple[Coding, ...]:
    """Check what frames the result (known elements only, one value[x], id, meta, status, code,
    categories, subject, encounter, performers); the codings of its code (given: already checked
    by `code`)."""
    if not _OBSERVATION_KEYS.issuperset(raw) or (
        ("valueQuantity" in raw) + ("valueCodeableConcept" in raw) + ("valueString" in raw) > 1
    ):
        raise _Unusual
    if "id" in raw:
        _id(raw["id"])
    if "meta" in raw:
        _meta(raw["meta"])
    if "status" not in raw or "code" not in raw:
        raise _Unusual  # required: the models name the missing element
    _code(raw["status"])
    if codings is None:
        codings = _checked(_concept, raw["code"])
    # one test per element, no loop over names: this runs for every result of a chart
    if "category" in raw:
        for c in _list(raw["category"]):
            _checked(_concept, c)
    if "subject" in raw:
        _checked(_reference, raw["subject"])
    if "encounter" in raw:
        _checked(_reference, raw["encounter"])
    if "performer" in raw:
        for p in _list(raw["performer"]):
            _reference(p)
    return codings


def observation(
    raw: dict[str, Any], codings: tuple[Coding, ...] | None = None
) -> ObservationView | None:
    """The view of a plain, valid Observation; None when the models must decide. `codings`:
    what `code(raw)` returned for it, when the caller has already asked (not checked twice)."""
    try:
        return _observation(raw, codings)
    except (_Unusual, KeyError, TypeError):
        return None


def code(raw: dict[str, Any]) -> tuple[Coding, ...] | None:
    """The codings of a plain, valid `code` CodeableConcept (remembered by its text: a chart
    repeats a few codes); None when it is absent or not plain (read it raw, let the models say)."""
    try:
        return _checked(_concept, raw["code"])
    except (_Unusual, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Other resource types: a small declarative schema of the plain shape, and a read-only view that
# answers attribute reads the way the R4B model would (absent element -> None, dateTime -> date or
# aware datetime, decimal -> Decimal). RecordBuilder.parse uses it before the models.

Spec = dict[str, Any]  # element -> kind (str) | nested Spec | [kind or Spec] (a list)

_PRIMITIVE_CHECKS: dict[str, Any] = {
    "string": _str,
    "code": lambda v: _match(_CODE, v),
    "uri": lambda v: _match(_URI, v),
    "id": _id,
}

CODING: Spec = {
    "system": "uri",
    "version": "string",
    "code": "code",
    "display": "string",
    "userSelected": "boolean",
}
CONCEPT: Spec = {"coding": [CODING], "text": "string"}
REFERENCE: Spec = {"reference": "string", "display": "string", "type": "uri"}
QUANTITY: Spec = {"value": "decimal", "unit": "string", "system": "uri", "code": "code"}
PERIOD: Spec = {"start": "dateTime", "end": "dateTime"}
META: Spec = {"versionId": "id", "lastUpdated": "instant", "source": "uri", "profile": ["uri"]}
NAME: Spec = {"use": "code", "text": "string", "family": "string", "given": ["string"]}
DOSAGE: Spec = {
    "sequence": "integer",
    "text": "string",
    "timing": {
        "repeat": {"frequency": "positiveInt", "period": "decimal", "periodUnit": "code"},
        "code": CONCEPT,
    },
    "route": CONCEPT,
    "doseAndRate": [{"type": CONCEPT, "doseQuantity": QUANTITY}],
}
_COMMON: Spec = {"resourceType": "code", "id": "id", "meta": META}

# per type: (elements, required elements, choice groups: at most one of each, `!` = exactly one)
SPECS: dict[str, tuple[Spec, tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "Patient": (
        {**_COMMON, "active": "boolean", "name": [NAME], "gender": "code", "birthDate": "date"},
        (),
        (),
    ),
    "Condition": (
        {
            **_COMMON,
            "clinicalStatus": CONCEPT,
            "verificationStatus": CONCEPT,
            "category": [CONCEPT],
            "severity": CONCEPT,
            "code": CONCEPT,
            "subject": REFERENCE,
            "encounter": REFERENCE,
            "onsetDateTime": "dateTime",
            "onsetPeriod": PERIOD,
            "abatementDateTime": "dateTime",
            "recordedDate": "dateTime",
        },
        ("subject",),
        (("onsetDateTime", "onsetPeriod"),),
    ),
    "Encounter": (
        {
            **_COMMON,
            "status": "code",
            "class": CODING,
            "type": [CONCEPT],
            "subject": REFERENCE,
            "period": PERIOD,
            "reasonCode": [CONCEPT],
        },
        ("status", "class"),
        (),
    ),
    "Immunization": (
        {
            **_COMMON,
            "status": "code",
            "vaccineCode": CONCEPT,
            "patient": REFERENCE,
            "occurrenceDateTime": "dateTime",
            "primarySource": "boolean",
            "lotNumber": "string",
        },
        ("status", "vaccineCode", "patient", "occurrenceDateTime"),
        (),
    ),
    "MedicationAdministration": (
        {
            **_COMMON,
            "status": "code",
            "medicationCodeableConcept": CONCEPT,
            "medicationReference": REFERENCE,
            "subject": REFERENCE,
            "context": REFERENCE,
            "effectiveDateTime": "dateTime",
            "effectivePeriod": PERIOD,
            "dosage": {"text": "string", "route": CONCEPT, "dose": QUANTITY},
        },
        ("status", "subject"),
        (
            ("medicationCodeableConcept", "medicationReference", "!"),
            ("effectiveDateTime", "effectivePeriod", "!"),
        ),
    ),
    "MedicationDispense": (
        {
            **_COMMON,
            "status": "code",
            "medicationCodeableConcept": CONCEPT,
            "medicationReference": REFERENCE,
            "subject": REFERENCE,
            "quantity": QUANTITY,
            "daysSupply": QUANTITY,
            "whenPrepared": "dateTime",
            "whenHandedOver": "dateTime",
        },
        ("status",),
        (("medicationCodeableConcept", "medicationReference", "!"),),
    ),
    "MedicationRequest": (
        {
            **_COMMON,
            "status": "code",
            "intent": "code",
            "medicationCodeableConcept": CONCEPT,
            "medicationReference": REFERENCE,
            "subject": REFERENCE,
            "encounter": REFERENCE,
            "authoredOn": "dateTime",
            "requester": REFERENCE,
            "insurance": [REFERENCE],
            "reasonCode": [CONCEPT],
            "dosageInstruction": [DOSAGE],
            "dispenseRequest": {
                "quantity": QUANTITY,
                "expectedSupplyDuration": QUANTITY,
                "numberOfRepeatsAllowed": "unsignedInt",
            },
        },
        ("status", "intent", "subject"),
        (("medicationCodeableConcept", "medicationReference", "!"),),
    ),
    "MedicationStatement": (
        {
            **_COMMON,
            "status": "code",
            "medicationCodeableConcept": CONCEPT,
            "medicationReference": REFERENCE,
            "subject": REFERENCE,
            "effectiveDateTime": "dateTime",
            "effectivePeriod": PERIOD,
            "dateAsserted": "dateTime",
            "dosage": [DOSAGE],
        },
        ("status", "subject"),
        (
            ("medicationCodeableConcept", "medicationReference", "!"),
            ("effectiveDateTime", "effectivePeriod"),
        ),
    ),
}


def _read_when(v: Any) -> dt.date | dt.datetime:
    w = _when(v)
    return w.instant if w.instant is not None else w.date


def _primitive(kind: str, v: Any) -> Any:
    """Check one primitive and return it as the model would hold it."""
    check = _PRIMITIVE_CHECKS.get(kind)
    if check is not None:
        return check(v)
    if kind == "boolean":
        if type(v) is not bool:
            raise _Unusual
        return v
    if kind == "decimal":
        _decimal(v)
        return decimal.Decimal(str(v)) if type(v) is float else decimal.Decimal(v)
    if kind in ("integer", "positiveInt", "unsignedInt"):
        low = {"integer": -(2**31) + 1, "positiveInt": 1, "unsignedInt": 0}[kind]
        if type(v) is not int or v < low or v >= 2**31:
            raise _Unusual
        return v
    if kind == "dateTime":
        return _read_when(v)
    if kind == "date":
        if type(v) is not str or not _DATE.fullmatch(v):
            raise _Unusual
        return _when(v).date
    if kind == "instant":
        w = _when(v)
        if w.instant is None:
            raise _Unusual
        return w.instant
    raise _Unusual


class View:
    """Read-only stand-in for a validated model: attribute reads of the checked raw dict.

    The checked values are the instance's own attributes, so reading an element that is there is
    a plain attribute read; only an absent one reaches __getattr__ (None, as the model says)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__ = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def __repr__(self) -> str:
        return f"View({self.__dict__!r})"


Reader = Callable[[Any], Any]


def _code(v: Any) -> str:
    if v in _OK_CODE and type(v) is str:
        return v
    return _match(_CODE, v)


def _uri(v: Any) -> str:
    if v in _OK_URI and type(v) is str:
        return v
    return _match(_URI, v)


_PRIMITIVE_READERS: dict[str, Reader] = {"string": _str, "code": _code, "uri": _uri}


def _compile(kind: Any) -> Reader:
    """A reader for one element kind of a Spec: checks the raw value, returns the model's value."""
    if isinstance(kind, list):
        item = _compile(kind[0])

        def read_list(v: Any) -> list[Any]:
            if type(v) is not list or not v:
                raise _Unusual
            return [item(x) for x in v]

        return read_list
    if isinstance(kind, dict):
        readers = {k: _compile(sub) for k, sub in kind.items()}
        keys = readers.keys()

        def read_complex(v: Any) -> View:
            if type(v) is not dict or not v or not v.keys() <= keys:
                raise _Unusual
            return View({k: readers[k](x) for k, x in v.items()})

        if kind is CONCEPT or kind is REFERENCE:
            # codes, statuses, categories, routes and the subject repeat across a record: their
            # views are shared (read-only, like every view) between the resources that hold them
            return functools.partial(_checked, read_complex)
        return read_complex
    reader = _PRIMITIVE_READERS.get(kind)
    return reader if reader is not None else functools.partial(_primitive, kind)


_READERS: dict[str, Reader] = {rtype: _compile(spec) for rtype, (spec, _, _) in SPECS.items()}


def resource(raw: dict[str, Any]) -> View | None:
    """A model-like view of a plain, valid resource of a type in SPECS; None: use the models."""
    entry = SPECS.get(raw.get("resourceType"))  # type: ignore[arg-type]
    if entry is None:
        return None
    _, required, choices = entry
    try:
        if any(k not in raw for k in required):
            return None
        for group in choices:
            present = sum(k in raw for k in group if k != "!")
            if present > 1 or (present == 0 and "!" in group):
                return None
        view: View = _READERS[raw["resourceType"]](raw)
        return view
    except (_Unusual, KeyError, TypeError):
        return None
