"""Decode an order-sign body and read its Observations: today's path against msgspec.

Issue 11 asks for "the fastest well-kept library that gives typed, validated views (measure
msgspec against today's fast path)". This is that measurement, on the benchmark's own bodies:

- ``floor``: ``orjson.loads`` of the body, nothing read (what the benchmark floor does).
- ``today``: ``orjson.loads``, then ``fastpath.code`` + ``fastpath.observation`` for every
  Observation of the prefetch, as the record builder reads a plain result.
- ``msgspec``: one ``msgspec.json`` decode of the body into Structs for the Observation keys (every
  other key decoded to plain dicts, as the rest of the service reads them), with the constraints
  fastpath checks: the closed set of elements, required ``status`` and ``code``, no nulls,
  non-empty lists and objects, FHIR primitive patterns (code, uri, id, string, dateTime, instant),
  at most one value[x]; then each Struct turned into the same ``ObservationView``.
- ``msgspec + fastpath memos``: the same Structs without the patterns (still closed, no empty
  lists), each string checked by fastpath's own remembered checks: msgspec's decode with the
  memories that make today's path cheap on a chart that repeats its codes.
- ``msgspec, memos by Struct``: closed, frozen Structs with tuples for arrays, so each decoded
  CodeableConcept, Reference and referenceRange is its own memory key (hashed in C); each
  distinct one is checked once (strings by fastpath's checks), the rest is a look-up.
- ``msgspec, unchecked``: the same decode and views with no pattern, emptiness or value[x]
  checks: what a typed decode costs when it validates nothing, a floor for any typed reader.

Equal views are asserted before timing (tests/unit/bench/test_decoders.py also pins that the
checked ways accept and reject what fastpath does), so the rows compare like with like.
``python -m bench.decoders [sizes...]``; each size prints medians and ratios to the floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import msgspec
import msgspec.structs
import orjson
from msgspec import UNSET, Meta, UnsetType

from bench import records
from bench.floor import YOUNG_COLLECTION_THRESHOLD
from cds_service.domain import Coding, When
from cds_service.fhir import fastpath

# -- constraints: the patterns fastpath checks (anchored: msgspec searches, it does not match) ---

_NOT_NAIVE = r"(?!\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?\n?\Z)"  # models.lenient's shape
_DATE = r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_DATETIME = (
    _DATE + r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
Str = Annotated[str, Meta(pattern=rf"^{_NOT_NAIVE}\S([\s\S]*\S)?\Z")]
Code = Annotated[str, Meta(pattern=rf"^{_NOT_NAIVE}\S+(\s\S+)*\Z")]
Uri = Annotated[str, Meta(pattern=rf"^{_NOT_NAIVE}\S+\Z")]
Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9\-.]{1,64}\Z")]
DateTime = Annotated[str, Meta(pattern=rf"^({_DATE}|{_DATETIME})\Z")]
Instant = Annotated[str, Meta(pattern=rf"^{_DATETIME}\Z")]


def _types(patterns: bool, closed: bool, hashable: bool = False) -> dict[str, Any]:
    """The Structs of the plain Observation shape: `patterns`, the primitive patterns as msgspec
    constraints; `closed`, only the known elements and no empty lists; `hashable`, arrays as
    tuples, so every Struct (frozen) can be a key of a memory."""

    def plain(t: Any) -> Any:
        return t if patterns else str

    def some(t: Any) -> Any:
        seq = tuple[t, ...] if hashable else list[t]
        return Annotated[seq, Meta(min_length=1)] if closed else seq

    opts: dict[str, Any] = {"forbid_unknown_fields": closed, "frozen": True}

    def struct(name: str, fields: list[tuple[str, Any]], **kw: Any) -> Any:
        return msgspec.defstruct(name, [(f, t | UnsetType, UNSET) for f, t in fields], **opts, **kw)

    coding = struct(
        "Coding",
        [
            ("system", plain(Uri)),
            ("version", plain(Str)),
            ("code", plain(Code)),
            ("display", plain(Str)),
            ("userSelected", bool),
        ],
    )
    concept = struct("CodeableConcept", [("coding", some(coding)), ("text", plain(Str))])
    reference = struct(
        "Reference", [("reference", plain(Str)), ("display", plain(Str)), ("type", plain(Uri))]
    )
    quantity = struct(
        "Quantity",
        [("value", float), ("unit", plain(Str)), ("system", plain(Uri)), ("code", plain(Code))],
    )
    meta = struct(
        "Meta",
        [
            ("versionId", plain(Id)),
            ("lastUpdated", plain(Instant)),
            ("source", plain(Uri)),
            ("profile", some(plain(Uri))),
        ],
    )
    range_ = struct(
        "ReferenceRange",
        [("low", quantity), ("high", quantity), ("text", plain(Str)), ("type", concept)],
    )
    observation = msgspec.defstruct(
        "Observation",
        [
            ("status", plain(Code)),
            ("code", concept),
            *[
                (f, t | UnsetType, UNSET)
                for f, t in [
                    ("resourceType", str),
                    ("id", plain(Id)),
                    ("meta", meta),
                    ("category", some(concept)),
                    ("subject", reference),
                    ("encounter", reference),
                    ("effectiveDateTime", plain(DateTime)),
                    ("issued", plain(Instant)),
                    ("performer", some(reference)),
                    ("valueQuantity", quantity),
                    ("valueCodeableConcept", concept),
                    ("valueString", plain(Str)),
                    ("interpretation", some(concept)),
                    ("referenceRange", some(range_)),
                ]
            ],
        ],
        **opts,
    )
    entry = msgspec.defstruct("Entry", [("resource", observation)], frozen=True)
    bundle = msgspec.defstruct("Bundle", [("entry", list[entry], [])], frozen=True)  # type: ignore[valid-type]
    return {"Observation": observation, "Bundle": bundle}


def request_type(
    observation_keys: list[str],
    other_keys: list[str],
    patterns: bool,
    closed: bool,
    hashable: bool = False,
) -> Any:
    """The Struct of a whole hook request: the Observation keys typed, the rest plain JSON."""
    bundle = _types(patterns, closed, hashable)["Bundle"]
    prefetch = msgspec.defstruct(
        "Prefetch",
        [(k, bundle | None, None) for k in observation_keys] + [(k, Any, None) for k in other_keys],
    )
    return msgspec.defstruct(
        "HookRequest",
        [("hook", str), ("context", dict[str, Any]), ("prefetch", prefetch | None, None)],
    )


# -- Struct -> ObservationView ---------------------------------------------------------------


class Rejected(Exception):
    """What fastpath would have handed to the models (msgspec cannot say it in a type)."""


def _given(v: Any) -> Any:
    return None if v is UNSET else v


def _empty(struct: Any) -> bool:
    """An object with no element given (`{}`), which fastpath refuses; from the Struct's fields."""
    return all(v is UNSET for v in msgspec.structs.astuple(struct))


def _one_value(o: Any) -> None:
    """At most one value[x] (msgspec cannot say it in a type)."""
    given = (o.valueQuantity, o.valueCodeableConcept, o.valueString)
    if sum(v is not UNSET for v in given) > 1:
        raise Rejected


Limits = tuple[tuple[float, str | None] | None, tuple[float, str | None] | None]


def _limits(
    ranges: Any,
    quantity: Callable[[Any], tuple[float | None, str | None]],
    concept: Callable[[Any], object],
    text: Callable[[Any], object],
    checked: bool = True,
) -> Limits:
    """The first referenceRange low and the first high that carry a value, each part read by
    the given readers (which check or not)."""
    low = high = None
    for rr in ranges:
        if checked and _empty(rr):
            raise Rejected
        lo = quantity(rr.low) if rr.low is not UNSET else (None, None)
        hi = quantity(rr.high) if rr.high is not UNSET else (None, None)
        if rr.text is not UNSET:
            text(rr.text)
        if rr.type is not UNSET:
            concept(rr.type)
        if low is None and lo[0] is not None:
            low = (lo[0], lo[1])
        if high is None and hi[0] is not None:
            high = (hi[0], hi[1])
    return low, high


def _codings(cc: Any, checked: bool) -> tuple[Coding, ...]:
    if checked and _empty(cc):
        raise Rejected
    if cc.coding is UNSET:
        return ()
    out: list[Coding] = []
    for c in cc.coding:
        if checked and _empty(c):
            raise Rejected
        out.append((_given(c.system), _given(c.code)))
    return tuple(out)


def _when(text: str) -> When:
    try:
        if len(text) == 10:
            return When(dt.date.fromisoformat(text))
        instant = dt.datetime.fromisoformat(text)
    except ValueError as exc:  # e.g. 2025-02-30
        raise Rejected from exc
    return When(instant.date(), instant)


def _quantity(q: Any, checked: bool) -> tuple[float | None, str | None]:
    if checked and _empty(q):
        raise Rejected
    if q.value is UNSET:
        return None, None
    return float(q.value), _given(q.code) or _given(q.unit)


def _checking_quantity(q: Any) -> tuple[float | None, str | None]:
    return _quantity(q, True)


def _unchecked_quantity(q: Any) -> tuple[float | None, str | None]:
    return _quantity(q, False)


def _checking_codings(cc: Any) -> tuple[Coding, ...]:
    return _codings(cc, True)


def _ignore(_: Any) -> None:
    return None


def view(o: Any, checked: bool = True) -> fastpath.ObservationView:
    """The ObservationView of a decoded Observation Struct, as fastpath.observation reads it."""
    if checked:
        _one_value(o)
        for ref in (o.subject, o.encounter, *(o.performer or ()), o.meta):
            if ref is not UNSET and _empty(ref):
                raise Rejected
        for c in o.category or ():
            _codings(c, checked)
    when = _when(o.effectiveDateTime) if o.effectiveDateTime is not UNSET else None
    issued = _when(o.issued) if o.issued is not UNSET else None
    value, unit = (None, None)
    if o.valueQuantity is not UNSET:
        value, unit = _quantity(o.valueQuantity, checked)
    low, high = (None, None)
    if o.referenceRange is not UNSET:
        if checked:
            low, high = _limits(o.referenceRange, _checking_quantity, _checking_codings, _ignore)
        else:
            low, high = _limits(
                o.referenceRange, _unchecked_quantity, _ignore, _ignore, checked=False
            )
    return fastpath.ObservationView(
        _codings(o.code, checked),
        when or issued,
        value,
        unit,
        _codings(o.valueCodeableConcept, checked) if o.valueCodeableConcept is not UNSET else (),
        tuple(c for i in o.interpretation or () for c in _codings(i, checked)),
        _given(o.valueString),
        low,
        high,
    )


_ONE_OBSERVATION = msgspec.json.Decoder(_types(True, True)["Observation"])
_ONE_CLOSED = msgspec.json.Decoder(_types(False, True)["Observation"])


def checked_view(text: bytes) -> fastpath.ObservationView | None:
    """One Observation's JSON through the checked Struct: its view, or None where fastpath
    would hand it to the models (the tests compare the two on every shape they know)."""
    try:
        return view(_ONE_OBSERVATION.decode(text))
    except (msgspec.ValidationError, Rejected):
        return None


def memo_checked_view(text: bytes) -> fastpath.ObservationView | None:
    """The same through the closed Struct without patterns, the strings checked by fastpath's
    remembered checks instead (the third way: msgspec's decode, fastpath's memories)."""
    try:
        o = _ONE_CLOSED.decode(text)
        memo_check(o)
        return view(o)
    except (msgspec.ValidationError, Rejected):
        return None


_CODING_STRINGS = (
    ("system", fastpath._uri),
    ("code", fastpath._code),
    ("display", fastpath._str),
    ("version", fastpath._str),
)
_REFERENCE_STRINGS = (
    ("reference", fastpath._str),
    ("display", fastpath._str),
    ("type", fastpath._uri),
)
_QUANTITY_STRINGS = (("unit", fastpath._str), ("system", fastpath._uri), ("code", fastpath._code))


def _strings(struct: Any, checks: tuple[tuple[str, Callable[[Any], Any]], ...]) -> None:
    """Each given string element of `struct` through its fastpath check."""
    for name, check in checks:
        value = getattr(struct, name)
        if value is not UNSET:
            check(value)


def _cc(cc: Any) -> None:
    if cc.text is not UNSET:
        fastpath._str(cc.text)
    for c in cc.coding or ():
        _strings(c, _CODING_STRINGS)


def _ref(r: Any) -> None:
    _strings(r, _REFERENCE_STRINGS)


def _qty(q: Any) -> None:
    _strings(q, _QUANTITY_STRINGS)


def _meta(meta: Any) -> None:
    if _empty(meta):
        raise Rejected
    if meta.versionId is not UNSET:
        fastpath._id(meta.versionId)
    if meta.lastUpdated is not UNSET and fastpath._when(meta.lastUpdated).instant is None:
        raise Rejected  # an instant: time and zone required
    if meta.source is not UNSET:
        fastpath._uri(meta.source)
    for p in meta.profile or ():
        fastpath._uri(p)


def memo_check(o: Any) -> None:
    """Every string of an Observation Struct through fastpath's checks (remembered successes:
    codes, systems and units repeat); Rejected where one fails."""
    try:
        if o.id is not UNSET:
            fastpath._id(o.id)
        fastpath._code(o.status)
        if o.meta is not UNSET:
            _meta(o.meta)
        for cc in (o.code, *(o.category or ()), *(o.interpretation or ())):
            _cc(cc)
        if o.valueCodeableConcept is not UNSET:
            _cc(o.valueCodeableConcept)
        for r in (o.subject, o.encounter, *(o.performer or ())):
            if r is not UNSET:
                _ref(r)
        for when in (o.effectiveDateTime, o.issued):
            if when is not UNSET:
                fastpath._when(when)
        if o.issued is not UNSET and fastpath._when(o.issued).instant is None:
            raise Rejected
        if o.valueQuantity is not UNSET:
            _qty(o.valueQuantity)
        if o.valueString is not UNSET:
            fastpath._str(o.valueString)
        for rr in o.referenceRange or ():
            for q in (rr.low, rr.high):
                if q is not UNSET:
                    _qty(q)
            if rr.text is not UNSET:
                fastpath._str(rr.text)
            if rr.type is not UNSET:
                _cc(rr.type)
    except fastpath._Unusual as exc:
        raise Rejected from exc


# -- the fourth way: hashable Structs, each distinct one checked once --------------------------
# A chart repeats its codes, categories, subject and reference ranges; fastpath remembers them by
# their JSON text (one orjson.dumps each). Frozen Structs with tuples hash in C: the decode itself
# gives the key. Only successes are remembered, and the memories are bounded like fastpath's.

_ONE_HASHABLE = msgspec.json.Decoder(_types(False, True, True)["Observation"])
_LIMIT = 20_000
_CODINGS: dict[Any, tuple[Coding, ...]] = {}
_REFS: set[Any] = set()
_RANGES: dict[Any, Limits] = {}


def _bounded(memo: dict[Any, Any] | set[Any]) -> None:
    if len(memo) >= _LIMIT:
        memo.clear()


def _known_codings(cc: Any) -> tuple[Coding, ...]:
    found = _CODINGS.get(cc)
    if found is None:
        _cc(cc)
        found = _codings(cc, True)
        _bounded(_CODINGS)
        _CODINGS[cc] = found
    return found


def _known_ref(r: Any) -> None:
    if r not in _REFS:
        if _empty(r):
            raise Rejected
        _ref(r)
        _bounded(_REFS)
        _REFS.add(r)


def _checked_quantity(q: Any) -> tuple[float | None, str | None]:
    _qty(q)
    return _quantity(q, True)


def _known_ranges(ranges: Any) -> Limits:
    found = _RANGES.get(ranges)
    if found is None:
        found = _limits(ranges, _checked_quantity, _known_codings, fastpath._str)
        _bounded(_RANGES)
        _RANGES[ranges] = found
    return found


def hashed_view(o: Any) -> fastpath.ObservationView:
    """An Observation Struct of the hashable types, checked and read; repeated parts from memory."""
    try:
        _one_value(o)
        if o.id is not UNSET:
            fastpath._id(o.id)
        fastpath._code(o.status)
        if o.meta is not UNSET:
            _meta(o.meta)
        codings = _known_codings(o.code)
        for c in o.category or ():
            _known_codings(c)
        for r in (o.subject, o.encounter, *(o.performer or ())):
            if r is not UNSET:
                _known_ref(r)
        when = fastpath._when(o.effectiveDateTime) if o.effectiveDateTime is not UNSET else None
        issued = fastpath._when(o.issued) if o.issued is not UNSET else None
        if issued is not None and issued.instant is None:
            raise Rejected
        value, unit = (None, None)
        if o.valueQuantity is not UNSET:
            value, unit = _checked_quantity(o.valueQuantity)
        low, high = (None, None)
        if o.referenceRange is not UNSET:
            low, high = _known_ranges(o.referenceRange)
        text = None
        if o.valueString is not UNSET:
            text = fastpath._str(o.valueString)
        return fastpath.ObservationView(
            codings,
            when or issued,
            value,
            unit,
            _known_codings(o.valueCodeableConcept) if o.valueCodeableConcept is not UNSET else (),
            tuple(c for i in o.interpretation or () for c in _known_codings(i)),
            text,
            low,
            high,
        )
    except fastpath._Unusual as exc:
        raise Rejected from exc


def hashed_checked_view(text: bytes) -> fastpath.ObservationView | None:
    """One Observation's JSON the fourth way: its view, or None where fastpath says the models."""
    try:
        return hashed_view(_ONE_HASHABLE.decode(text))
    except (msgspec.ValidationError, Rejected):
        return None


# -- the readings ------------------------------------------------------------------------


def _observation_keys() -> tuple[list[str], list[str]]:
    """The service's prefetch keys (the order-sign service's templates): Observation and other."""
    from cds_service.app import pipeline_from_settings
    from cds_service.core.settings import Settings

    keys = pipeline_from_settings(Settings(demo=True)).keys
    return (
        [k.key for k in keys if k.resource_type == "Observation"],
        [k.key for k in keys if k.resource_type != "Observation"],
    )


def today(body: bytes, obs_keys: list[str]) -> list[fastpath.ObservationView | None]:
    raw = orjson.loads(body)
    out: list[fastpath.ObservationView | None] = []
    for key in obs_keys:
        for entry in (raw["prefetch"].get(key) or {}).get("entry", []):
            res = entry["resource"]
            out.append(fastpath.observation(res, fastpath.code(res)))
    return out


def with_msgspec(
    decoder: msgspec.json.Decoder[Any],
    checked: bool,
    body: bytes,
    obs_keys: list[str],
    memo: bool = False,
    hashed: bool = False,
) -> list[fastpath.ObservationView | None]:
    """Views from one typed decode (a body it rejects would go whole to today's path); `memo`:
    the strings checked by fastpath's remembered checks, not by msgspec patterns."""
    request = decoder.decode(body)
    out: list[fastpath.ObservationView | None] = []
    for key in obs_keys:
        bundle = getattr(request.prefetch, key)
        for entry in bundle.entry if bundle is not None else ():
            try:
                if hashed:
                    out.append(hashed_view(entry.resource))
                    continue
                if memo:
                    memo_check(entry.resource)
                out.append(view(entry.resource, checked))
            except Rejected:
                out.append(None)
    return out


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(size: int, repeats: int) -> Iterator[tuple[str, float]]:
    """(row, median ms) for one body of `size` resources; the views are compared first."""
    obs_keys, other_keys = _observation_keys()
    body = orjson.dumps(records.order_sign_request(size))
    checked = msgspec.json.Decoder(request_type(obs_keys, other_keys, True, True))
    closed = msgspec.json.Decoder(request_type(obs_keys, other_keys, False, True))
    unchecked = msgspec.json.Decoder(request_type(obs_keys, other_keys, False, False))
    hashable = msgspec.json.Decoder(request_type(obs_keys, other_keys, False, True, True))
    expected = today(body, obs_keys)
    if with_msgspec(checked, True, body, obs_keys) != expected:
        raise SystemExit("msgspec views differ from fastpath's: the comparison would be unfair")
    if with_msgspec(closed, True, body, obs_keys, memo=True) != expected:
        raise SystemExit("memo-checked msgspec views differ from fastpath's")
    if with_msgspec(hashable, True, body, obs_keys, hashed=True) != expected:
        raise SystemExit("hashed msgspec views differ from fastpath's")
    if with_msgspec(unchecked, False, body, obs_keys) != expected:
        raise SystemExit("unchecked msgspec views differ from fastpath's")
    rows: list[tuple[str, Callable[[], object]]] = [
        ("floor: orjson.loads", lambda: orjson.loads(body)),
        ("today: orjson + fastpath", lambda: today(body, obs_keys)),
        ("msgspec, checked", lambda: with_msgspec(checked, True, body, obs_keys)),
        ("msgspec + fastpath memos", lambda: with_msgspec(closed, True, body, obs_keys, True)),
        (
            "msgspec, memos by Struct",
            lambda: with_msgspec(hashable, True, body, obs_keys, hashed=True),
        ),
        ("msgspec, unchecked", lambda: with_msgspec(unchecked, False, body, obs_keys)),
        # where msgspec's time goes: the decode alone, without the views
        ("  checked: decode only", lambda: checked.decode(body)),
        ("  closed: decode only", lambda: closed.decode(body)),
        ("  hashable: decode only", lambda: hashable.decode(body)),
        ("  unchecked: decode only", lambda: unchecked.decode(body)),
    ]
    for _, fn in rows:
        fn()  # warm: fastpath's memories, as in a serving process
    # interleaved rounds: drift on a noisy machine lands on every row alike
    found: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(5):
        for name, fn in rows:
            found[name].append(_median_ms(fn, repeats))
    for name, _ in rows:
        yield name, statistics.median(found[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[200, 5000])
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])  # as the service
    for size in args.sizes:
        repeats = max(8, 20_000 // size)
        rows = list(measure(size, repeats))
        floor = rows[0][1]
        print(f"{size} resources (median of 5 rounds x {repeats}):")
        for name, ms in rows:
            print(f"  {name:<26} {ms:8.3f} ms  {ms / floor:5.2f}x floor")


if __name__ == "__main__":
    main()
