"""The record's measurement index (rules/context.py) answers as a scan of the whole list would:
same measurements, same record order, same tie rule, also after the list grows."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.domain import Measurement, Record, When
from cds_service.knowledge import ValueSet
from cds_service.rules.context import dated_measurements, latest_measurement

A, B = "http://a", "http://b"
DAY0 = dt.date(2025, 1, 1)
# a small vocabulary so that measurements share codings, value sets overlap and days tie
CODINGS = [(A, "1"), (A, "2"), (A, "3"), (B, "1"), (B, "X1"), (None, "1"), (A, None)]
VALUESETS = [
    ValueSet("one", frozenset({(A, "1")}), ()),
    ValueSet("two", frozenset({(A, "1"), (A, "2"), (B, "1")}), ()),
    ValueSet("prefix", frozenset({(A, "3")}), ((B, "X"),)),
    ValueSet("none", frozenset(), ()),
]


@st.composite
def measurements(draw: st.DrawFn) -> list[Measurement]:
    out = []
    for i in range(draw(st.integers(0, 12))):
        codings = tuple(draw(st.lists(st.sampled_from(CODINGS), max_size=3)))  # repeats too
        day = draw(st.none() | st.integers(0, 5).map(lambda d: DAY0 + dt.timedelta(days=d)))
        out.append(Measurement(f"Observation/m{i}", codings, When(day) if day else None, 1.0, "x"))
    return out


def _scan(ms: list[Measurement], vs: ValueSet) -> tuple[Measurement, ...]:
    return tuple(m for m in ms if m.when is not None and vs.any_match(m.codings))


def _scan_latest(ms: list[Measurement], vs: ValueSet, since: dt.date | None) -> Measurement | None:
    best = None
    for m in _scan(ms, vs):
        assert m.when is not None
        if since is not None and m.when.date < since:
            continue
        if best is None or (best.when is not None and m.when.date > best.when.date):
            best = m
    return best


@settings(max_examples=300, deadline=None)
@given(measurements(), measurements(), st.none() | st.integers(0, 5))
def test_index_answers_as_a_scan(
    first: list[Measurement], more: list[Measurement], since_days: int | None
) -> None:
    since = DAY0 + dt.timedelta(days=since_days) if since_days is not None else None
    record = Record(patient=None, orders=[], measurements=list(first))
    for ms in (first, [*first, *more]):  # measurements added after the index was built
        record.measurements[:] = ms
        for vs in VALUESETS:
            indexed = dated_measurements(record, vs)
            assert [id(m) for m in indexed] == [id(m) for m in _scan(ms, vs)]
            found = latest_measurement(record, vs, since)
            expected = _scan_latest(ms, vs, since)
            assert found is expected
