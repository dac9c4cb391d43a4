"""Small readers shared by the record builders: the facts of validated elements (codings, names,
quantities; an Observation model as the view the fast path reads), and a unit as cards may show
it.

Everything here reads validated models or views (cds_service.fhir); never resource JSON.
"""

from __future__ import annotations

import re

from cds_service.domain import Coding
from cds_service.fhir import fastpath, views
from cds_service.fhir.models import to_when

_UNIT_SHAPE = re.compile(r"^[A-Za-z0-9%/.\[\]{}_*^'\-]{1,32}$")


def shown_unit(unit: str | None) -> str:
    """A unit for a DataIssue shown in cards: echoed only when it is unit-shaped (UCUM-like),
    never markup or a link from the client's record."""
    return repr(unit) if isinstance(unit, str) and _UNIT_SHAPE.match(unit) else "(not unit-shaped)"


# ---------------------------------------------------------------------------------------------
# model -> fact helpers


def codings_of(cc: views.CodeableConcept | None) -> tuple[Coding, ...]:
    if cc is None:
        return ()
    return tuple((c.system, c.code) for c in (cc.coding or []))


def texts_of(cc: views.CodeableConcept | None) -> list[str | None]:
    if cc is None:
        return []
    return [cc.text, *(c.display for c in (cc.coding or []))]


def quantity_of(q: views.Quantity | None) -> tuple[float | None, str | None]:
    if q is None or q.value is None:
        return None, None
    return float(q.value), (q.code or q.unit)


def observation_view(obs: views.Observation) -> fastpath.ObservationView:
    """The facts read from a validated Observation model (fastpath reads the same from raw)."""
    value, unit = quantity_of(obs.valueQuantity)
    low: tuple[float, str | None] | None = None
    high: tuple[float, str | None] | None = None
    for rr in obs.referenceRange or []:
        lv, lu = quantity_of(rr.low)
        hv, hu = quantity_of(rr.high)
        if low is None and lv is not None:
            low = (lv, lu)
        if high is None and hv is not None:
            high = (hv, hu)
    return fastpath.ObservationView(
        codings=codings_of(obs.code),
        when=to_when(
            obs.effectiveDateTime
            or (obs.effectivePeriod and obs.effectivePeriod.start)
            or obs.effectiveInstant
            or obs.issued
        ),
        value=value,
        unit=unit,
        value_code=codings_of(obs.valueCodeableConcept),
        interpretation=tuple(c for i in (obs.interpretation or []) for c in codings_of(i)),
        text=obs.valueString,
        range_low=low,
        range_high=high,
    )
