"""Explicit unit conversion. Anything not listed is refused (None), never guessed."""

from __future__ import annotations

# IgG concentration -> mg/dL. UCUM codes and the spellings labs commonly send as Quantity.unit.
_IGG_TO_MG_DL: dict[str, float] = {
    "mg/dl": 1.0,
    "g/l": 100.0,
    "mg/l": 0.1,
    "mg/ml": 100.0,
}  # contract: mg/dL, g/L, mg/L and mg/mL convert; anything else is reported unusable

_WEIGHT_TO_KG: dict[str, float] = {
    "kg": 1.0,
    "g": 0.001,
    "[lb_av]": 0.45359237,
    "lb": 0.45359237,
    "lbs": 0.45359237,
    "[oz_av]": 0.028349523125,
}

_MASS_TO_G: dict[str, float] = {
    "g": 1.0,
    "mg": 0.001,
    "kg": 1000.0,
    "gm": 1.0,
    "gram": 1.0,
    "grams": 1.0,
}

_VOLUME_TO_ML: dict[str, float] = {"ml": 1.0, "l": 1000.0, "cl": 10.0, "dl": 100.0}

_DURATION_TO_DAYS: dict[str, float] = {
    "d": 1.0,
    "day": 1.0,
    "days": 1.0,
    "wk": 7.0,
    "week": 7.0,
    "weeks": 7.0,
    "mo": 30.0,
    "month": 30.0,
    "months": 30.0,  # FHIR 'mo' is a calendar month; 30 days
    "h": 1.0 / 24.0,
}


def _key(unit: str | None) -> str:
    return (unit or "").strip().lower()


def igg_to_mg_dl(value: float, unit: str | None) -> float | None:
    """IgG in mg/dL, or None when the unit is not a known concentration unit."""
    factor = _IGG_TO_MG_DL.get(_key(unit))
    return None if factor is None else round(value * factor, 4)


def weight_to_kg(value: float, unit: str | None) -> float | None:
    factor = _WEIGHT_TO_KG.get(_key(unit))
    return None if factor is None else round(value * factor, 4)


def mass_to_grams(value: float, unit: str | None) -> float | None:
    factor = _MASS_TO_G.get(_key(unit))
    return None if factor is None else value * factor


def duration_to_days(value: float, unit: str | None) -> float | None:
    """Days in a duration; None for an unknown unit or a value no calendar holds (negative,
    or beyond a century: a typo, never a course)."""
    factor = _DURATION_TO_DAYS.get(_key(unit))
    if factor is None:
        return None
    days = value * factor
    return days if 0 <= days <= 36_525 else None


def volume_to_ml(value: float, unit: str | None) -> float | None:
    factor = _VOLUME_TO_ML.get(_key(unit))
    return None if factor is None else value * factor


def mg_dl_to(value_mg_dl: float, unit: str) -> float | None:
    """The inverse of igg_to_mg_dl (for reports and round-trip tests)."""
    factor = _IGG_TO_MG_DL.get(_key(unit))
    return None if factor is None else value_mg_dl / factor


_ALBUMIN_TO_G_DL: dict[str, float] = {"g/dl": 1.0, "g/l": 0.1, "mg/dl": 0.001}

_URINE_PROTEIN_TO_G_PER_DAY: dict[str, float] = {
    "g/(24.h)": 1.0,
    "g/24.h": 1.0,
    "g/24h": 1.0,
    "g/d": 1.0,
    "g/day": 1.0,
    "mg/(24.h)": 0.001,
    "mg/24.h": 0.001,
    "mg/24h": 0.001,
    "mg/d": 0.001,
    "mg/day": 0.001,
}


def albumin_to_g_dl(value: float, unit: str | None) -> float | None:
    """Serum albumin in g/dL (g/L and mg/dL convert), None for any other unit."""
    factor = _ALBUMIN_TO_G_DL.get(_key(unit))
    return None if factor is None else value * factor


def urine_protein_g_per_day(value: float, unit: str | None) -> float | None:
    """Urine protein excretion in g per day, None for any other unit."""
    factor = _URINE_PROTEIN_TO_G_PER_DAY.get(_key(unit))
    return None if factor is None else value * factor


_PER_KG_TO_MG: dict[str, float] = {
    "g/kg": 1000.0,
    "mg/kg": 1.0,
    "g/kg{dose}": 1000.0,
    "mg/kg{dose}": 1.0,
}


def dose_per_kg_mg(value: float, unit: str | None) -> float | None:
    """A weight-based dose in mg per kg (g/kg and mg/kg), None for any other unit."""
    factor = _PER_KG_TO_MG.get(_key(unit))
    return None if factor is None else value * factor
