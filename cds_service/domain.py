"""Small typed facts the rules read. Each keeps the FHIR reference it came from.

Rules never touch FHIR models: the record module maps validated R4B resources to these, so a rule
can be read (and tested) as clinical logic alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

Coding = tuple[str | None, str | None]


class Status(StrEnum):
    MET = "met"
    NOT_MET = "not-met"
    INSUFFICIENT = "insufficient"
    NOT_APPLICABLE = "not-applicable"


class Outcome(StrEnum):
    """The contract's outcome (docs/determination.md, outcome rule)."""

    MEETS = "meets-criteria"
    INSUFFICIENT = "insufficient-documentation"
    DOES_NOT_MEET = "does-not-meet-criteria"


class Phase(StrEnum):
    BASELINE = "baseline"
    ON_TREATMENT = "on-treatment"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class When:
    """A clinical time with its precision: date-only values must not be compared as midnight."""

    date: dt.date
    instant: dt.datetime | None = None  # timezone-aware when the source carried a time
    # a partial date ('2025-03', '2025') means some day up to this one; None for a full date
    end: dt.date | None = None

    @property
    def last(self) -> dt.date:
        """The latest day this value may mean (its own day unless the date is partial)."""
        return self.end or self.date

    def __str__(self) -> str:
        """The date as recorded: '2025-03' or '2025' for a partial date, never a made-up day."""
        if self.end is None:
            return self.date.isoformat()
        same_month = self.end.month == self.date.month  # '2025-03', else a year '2025'
        return self.date.isoformat()[:7] if same_month else self.date.isoformat()[:4]


@dataclass(frozen=True)
class PatientFact:
    ref: str
    birth_date: dt.date | None
    gender: str | None
    birth_date_last: dt.date | None = None  # latest possible birth date when only partial


@dataclass(frozen=True)
class IgGResult:
    ref: str
    when: When | None
    value_mg_dl: float | None
    unit: str | None  # the unit as sent; value_mg_dl is None when it could not be converted
    reference_low_mg_dl: float | None = None
    has_value: bool = True  # False when the Observation carries no quantity at all


class Measurement(NamedTuple):
    """Any other coded Observation the rules read (weight, safety labs, HIV, titers...).

    A named tuple, not a frozen dataclass: as immutable, and a chart makes hundreds of these per
    request, which a frozen dataclass builds at 2.5 times the cost (one guarded set per field)."""

    ref: str
    codings: tuple[Coding, ...]
    when: When | None
    value: float | None
    unit: str | None
    value_code: tuple[Coding, ...] = ()
    interpretation: tuple[Coding, ...] = ()
    text: str | None = None
    # pneumococcal serotype (Danish numbering) when the result is a serotype titer, read from its
    # code, or from a local code's text inside a pneumococcal panel (component or hasMember)
    serotype: str | None = None
    part_of: str | None = None  # the panel Observation a component or member result came from
    range_high: float | None = None  # the lab's upper reference limit, in the result's unit


@dataclass(frozen=True)
class ConditionFact:
    ref: str
    codings: tuple[Coding, ...]
    onset: When | None
    recorded: When | None
    active: bool  # clinicalStatus active/recurrence/relapse (or absent) and not refuted
    resolved: bool
    confirmed: bool = True  # verificationStatus confirmed (or absent); False when provisional etc.

    @property
    def when(self) -> When | None:
        return self.onset or self.recorded


@dataclass(frozen=True)
class EncounterFact:
    ref: str
    reason_codings: tuple[Coding, ...]
    when: When | None


@dataclass(frozen=True)
class Exposure:
    """Evidence that IG was given or taken: the timeline's input."""

    ref: str
    kind: str  # the resource type that documents the exposure
    product: str
    start: When | None  # when the exposure began, if documented
    asserted: (
        When | None
    )  # the date the record says it was known (e.g. MedicationStatement.dateAsserted)
    ongoing: bool


@dataclass(frozen=True)
class DrugExposure:
    """A non-IG medication that can cause secondary hypogammaglobulinemia."""

    ref: str
    codings: tuple[Coding, ...]
    name: str
    when: When | None
    ongoing: bool = False  # active / in-progress with no end: being taken as of the order
    ingredient: str = ""  # the causative-drugs entry it matched (its display), for its rule
    route: str | None = None  # "systemic" | "local" (inhaled, topical, eye...) | None unknown
    days: float | None = None  # length of the documented course, when the record gives one
    daily_mg: float | None = None  # mg of the drug per day, when dose and frequency are given
    single_dose: bool = False  # one administration (e.g. an IV premedication), not a course
    start: When | None = None  # when the exposure began (the `when` above is its latest date)
    # an order that documents no administration (status stopped): exposure not shown
    uncertain: bool = False


@dataclass(frozen=True)
class ImmunizationFact:
    ref: str
    codings: tuple[Coding, ...]
    when: When | None
    kind: str = "polysaccharide"  # "polysaccharide" (PPSV23) | "conjugate" (PCV13/15/20/21...)


@dataclass(frozen=True)
class DraftOrder:
    """The IG order being signed."""

    ref: str
    product: str
    route: str | None  # IV | SC | None
    grams_per_dose: float | None
    interval_days: float | None
    authored: When | None
    dose_text: str | None
    hcpcs: str | None = None
    product_id: str = ""
    dose_basis: str | None = (
        None  # how grams were obtained when not a plain gram dose (wording key)
    )
    dose_basis_fields: tuple[tuple[str, str], ...] = ()  # str.format fields for that wording
    mg_per_kg_dose: float | None = None  # a weight-based order (doseQuantity in g/kg or mg/kg)
    course_doses: float | None = None  # doses in a course-limited order (repeat count/bounds)


@dataclass(frozen=True)
class DataIssue:
    """Something the service could not read; reported, never treated as met."""

    ref: str
    field: str
    problem: str


@dataclass(frozen=True)
class NoMedications:
    """The record states the medication list was reviewed and holds no medications."""

    ref: str
    when: When | None


@dataclass
class Record:
    """Everything known about one patient for one evaluation."""

    patient: PatientFact | None
    orders: list[DraftOrder]
    igg: list[IgGResult] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    encounters: list[EncounterFact] = field(default_factory=list)
    exposures: list[Exposure] = field(default_factory=list)
    drugs: list[DrugExposure] = field(default_factory=list)
    other_medications: list[str] = field(default_factory=list)  # non-IG medication records read
    # an explicit statement that the patient takes no medications (IPS no-known-medications)
    no_medications: NoMedications | None = None
    immunizations: list[ImmunizationFact] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # key -> why it could not be read
    empty: set[str] = field(default_factory=set)  # keys the EHR answered with no data (null/empty)
    today: dt.date = field(default_factory=dt.date.today)
    # filled by rules.context.dated_measurements: each distinct coding of the dated measurements
    # -> their positions (built once per record), and value set id -> the dated measurements it
    # matches; both stamped with the measurement count they were built from
    measurement_index: dict[str, tuple[int, tuple[Measurement, ...]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    coding_index: tuple[int, dict[Coding, list[int]]] = field(
        default=(-1, {}), repr=False, compare=False
    )


class Text(str):
    """A sentence worded from cards/reasons.yaml that remembers its key, so cards choose their
    headline, advice and suggestions by what was found, never by matching the sentence."""

    key: str

    def __new__(cls, text: str, key: str) -> Text:
        item = super().__new__(cls, text)
        item.key = key
        return item


class Missing(Text):
    """A missing-documentation item: its wording (the string, as the contract sends it) and the
    cards/reasons.yaml key it was worded from, which suggestions look up (never the sentence)."""


@dataclass(frozen=True)
class Finding:
    """One criterion's result: the rule output contract."""

    id: str
    status: Status
    reason: str
    evidence: tuple[str, ...] = ()
    missing: tuple[Missing, ...] = ()
    # the reasons.yaml key the reason was worded from ("" when it was composed): cards choose
    # their wording by it
    reason_key: str = ""

    def __post_init__(self) -> None:
        if not self.reason_key and isinstance(self.reason, Text):
            object.__setattr__(self, "reason_key", self.reason.key)
