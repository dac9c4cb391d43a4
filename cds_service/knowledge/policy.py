"""Typed policy parameters: one pydantic model per criterion, validated when the policy loads.

A misspelt, missing or mistyped key in policy-cvid-ig.yaml stops start-up with one line naming the
file and the key (`KnowledgeError`), instead of starting and then failing every evaluation with a
`KeyError`. Unknown keys are refused too (extra="forbid"): a typo is never silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceRef(_Strict):
    label: str
    url: str


class Params(_Strict):
    """What every criterion carries: the question it answers and the sources it rests on."""

    question: str
    source: list[str] = Field(min_length=1)
    note: str | None = None

    def valuesets(self) -> Iterator[tuple[str, str]]:
        """(parameter name, value-set id) for every value set the criterion names."""
        for name, value in self:
            if isinstance(value, BaseModel):
                for inner, vid in _valueset_fields(value):
                    yield f"{name}.{inner}", vid
            elif "valueset" in name:
                yield from ((name, v) for v in _ids(value))


def _ids(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    return []


def _valueset_fields(model: BaseModel) -> Iterator[tuple[str, str]]:
    for name, value in model:
        if isinstance(value, BaseModel):
            yield from ((f"{name}.{n}", v) for n, v in _valueset_fields(value))
        elif "valueset" in name or name in {"renal", "cbc", "liver"}:
            yield from ((name, v) for v in _ids(value))


class DiagnosisParams(Params):
    valueset: str
    broad_valueset: str
    silent_valueset: str | None = None
    list_revision: str = ""
    require_confirmed: bool = True


class AgeParams(Params):
    min_age_years: int


class BaselineIgGParams(Params):
    threshold_mg_dl: float = Field(gt=0)
    age_reference: str
    prefer_lab_reference_low: bool = True


class CorticosteroidParams(_Strict):
    local_route_valueset: str
    systemic_route_valueset: str
    local_form_words: list[str]
    systemic_form_words: list[str]
    short_course_max_days: float


class ProteinLossParams(_Strict):
    valueset: str
    lookback_months: int
    albumin_valueset: str
    albumin_normal_min_g_dl: float
    # the lab's interpretation codes that read a result as above range / as normal
    high_interpretation_valueset: str
    normal_interpretation_valueset: str
    urine_protein_valueset: str
    urine_protein_nephrotic_g_per_day: float
    stool_a1at_valueset: str


class SecondaryCausesParams(Params):
    drug_lookback_months: int
    workup_lookback_months: int
    hiv_test_valueset: str
    malignancy_workup_valuesets: list[str]
    workup_requires_all: bool = True
    condition_valuesets: dict[str, str]
    drug_valueset: str
    corticosteroid: CorticosteroidParams
    review_condition_valuesets: dict[str, str]
    hiv_inconclusive_valueset: str
    protein_loss_conditional: ProteinLossParams


class InfectionHistoryParams(Params):
    valueset: str
    min_count: int
    lookback_months: int
    count_rule_note: str | None = None


class FractionBand(_Strict):
    min_age_years: int
    fraction: float


class DayWindow(_Strict):
    min: int = Field(ge=0)
    max: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> DayWindow:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class VaccineResponseParams(Params):
    vaccine_valueset: str
    titer_valueset: str
    protective_titer_ug_ml: float = Field(gt=0)
    impaired_if_protective_fraction_below: list[FractionBand] = Field(min_length=1)
    min_serotypes: int = Field(ge=1)
    post_vaccine_window_days: DayWindow
    conjugate_vaccine_valueset: str
    titer_units: list[str]


class ClinicalResponseParams(Params):
    before_months: int = Field(ge=1)
    on_therapy_min_months: float = Field(gt=0)


class TroughParams(Params):
    interval_months: int
    peak_window_hours: float


class DoseParams(Params):
    min_mg_per_kg_per_4_weeks: float
    max_mg_per_kg_per_4_weeks: float
    scig_min_mg_per_kg_per_4_weeks: float
    scig_max_mg_per_kg_per_4_weeks: float
    weight_recency_months: int
    illustrative_weights_kg: list[Annotated[float, Field(gt=0)]]


class HomeInfusionParams(Params):
    codes: str

    def valuesets(self) -> Iterator[tuple[str, str]]:
        yield "codes", self.codes


class Criteria(_Strict):
    """Every criterion of the contract, each with its typed parameters (YAML keys are the ids)."""

    diagnosis: DiagnosisParams
    age: AgeParams
    baseline_igg: BaselineIgGParams = Field(alias="baseline-igg")
    secondary_causes_excluded: SecondaryCausesParams = Field(alias="secondary-causes-excluded")
    infection_history: InfectionHistoryParams = Field(alias="infection-history")
    vaccine_response: VaccineResponseParams = Field(alias="vaccine-response")
    clinical_response: ClinicalResponseParams = Field(alias="clinical-response")
    trough_monitoring: TroughParams = Field(alias="trough-monitoring")
    dose: DoseParams
    home_infusion: HomeInfusionParams = Field(alias="home-infusion")

    def by_id(self) -> dict[str, Params]:
        """Criterion id (as in the contract) -> its parameters."""
        return {
            (field.alias or name): getattr(self, name)
            for name, field in type(self).model_fields.items()
        }


class SafetyLabs(_Strict):
    renal: list[str]
    cbc: list[str]
    liver: list[str]


class SafetyParams(Params):
    lookback_months: int
    labs: SafetyLabs
    risk_valuesets: list[str]


class PolicyFile(_Strict):
    """One policy version: sources, the criteria's parameters, the safety advisory."""

    id: str
    version: str
    title: str
    sources: dict[str, SourceRef]
    criteria: Criteria
    safety: SafetyParams

    @model_validator(mode="after")
    def _sources_resolve(self) -> PolicyFile:
        for cid, spec in {**self.criteria.by_id(), "safety": self.safety}.items():
            for ref in spec.source:
                if ref not in self.sources:
                    raise ValueError(f"criteria.{cid}.source: unknown source id {ref!r}")
        return self

    def params(self, criterion: str) -> Params:
        """The parameters of a criterion id, or of 'safety'."""
        return self.safety if criterion == "safety" else self.criteria.by_id()[criterion]

    def valueset_refs(self) -> Iterator[tuple[str, str]]:
        """(where in the file, value-set id) for every value set the policy names."""
        for cid, spec in {**self.criteria.by_id(), "safety": self.safety}.items():
            where = "safety" if cid == "safety" else f"criteria.{cid}"
            yield from ((f"{where}.{name}", vid) for name, vid in spec.valuesets())
