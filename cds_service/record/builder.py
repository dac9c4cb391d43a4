"""Record access: from prefetch (and, when wired, the EHR's FHIR server) to typed domain facts.

Raw JSON is filtered by resourceType, patient and code first (sub-millisecond); only the survivors
are validated (fhir/fastpath.py for plain resources, else the fhir.resources R4B models), then
mapped to domain facts. A resource that fails validation becomes a DataIssue, never a 500 and
never silent evidence.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

from cds_service import units
from cds_service.core.errors import BadRequest
from cds_service.domain import (
    Coding,
    ConditionFact,
    DataIssue,
    DraftOrder,
    DrugExposure,
    EncounterFact,
    Exposure,
    IgGResult,
    ImmunizationFact,
    Measurement,
    NoMedications,
    PatientFact,
    Record,
    When,
)
from cds_service.fhir import fastpath, unvalidated, views
from cds_service.fhir.bundle import (
    for_patient,
    refers_to_patient,
    resources_of,
)
from cds_service.fhir.models import MODELS, ValidationError, lenient, to_when, validation_summary
from cds_service.fhir.unvalidated import ref_of
from cds_service.knowledge import DrugRule, Knowledge, Product, ValueSet
from cds_service.record.elements import (
    codings_of,
    observation_view,
    quantity_of,
    shown_unit,
    texts_of,
)
from cds_service.record.medications import (
    Dosages,
    bounds_end,
    course_days,
    daily_mg,
    dosages_of,
    order_dose,
    use_dates,
)
from cds_service.record.prefetch import OBSERVATION_KEYS

log = logging.getLogger(__name__)

IGNORED_STATUSES = frozenset({"entered-in-error", "cancelled"})
# What a resource of an unexpected JSON shape raises in the raw pre-filters (a list where a string
# belongs, a number where an object belongs): reported as unreadable data, never a 500.
DATA_ERRORS = (TypeError, AttributeError, ValueError, KeyError)

# a serotype named in a local code's text: "Serotype 14", "Pn 6B", "S. pneumoniae type 23F"
# (bounded repeats: no backtracking blow-up on long runs of spaces; texts are cut to 120 chars)
_SEROTYPE_TEXT = re.compile(
    r"(?:serotype|sero|type|pn|spn|pneumo[a-z]{0,12}|s\.? ?pneumoniae|strep[a-z]{0,12})"
    r" {0,3}[:#-]? {0,3}(\d{1,2}[a-z]?)\b",
    re.IGNORECASE,
)
_PNEUMO_WORDS = re.compile(r"pneumo|\bpn\b|\bspn\b", re.IGNORECASE)


# the Condition value sets the rules read
_CONDITION_SETS = (
    "pi-diagnosis",
    "infection-bacterial",
    "secondary-hiv",
    "secondary-malignancy",
    "secondary-protein-loss",
    "secondary-genetic",
    "secondary-drug-induced",
    "secondary-drug-review",
    "secondary-malignancy-review",
    "secondary-other-review",
    "protein-loss-conditional",
    "hiv-inconclusive",
    "thrombosis-risk",
    "renal-risk",
)


class _Filters(NamedTuple):
    """The value sets the builder's pre-filters match: one look-up per resource instead of one
    per value set (same matches)."""

    igg: ValueSet
    titer: ValueSet
    pneumo_panel: ValueSet
    serotype_names: frozenset[str]
    observations: ValueSet  # every Observation value set a prefetch key asks for
    conditions: ValueSet

    @classmethod
    def of(cls, kn: Knowledge) -> _Filters:
        obs_sets = [kn.vs(v) for _, sets, _ in OBSERVATION_KEYS for v in sets]
        condition_sets = [kn.vs(v) for v in _CONDITION_SETS]
        titer = kn.vs("pneumococcal-titer")
        return cls(
            igg=kn.vs("igg-serum"),
            titer=titer,
            pneumo_panel=kn.vs("pneumococcal-panel"),
            serotype_names=frozenset(titer.serotypes.values()),
            observations=obs_sets[0].union(*obs_sets[1:]),
            conditions=condition_sets[0].union(*condition_sets[1:]),
        )


# per knowledge (by identity; the knowledge is held, so its id is not reused): the unions are
# sets of thousands of codes, made once instead of once per request
_FILTERS: dict[int, tuple[Knowledge, _Filters]] = {}


def _filters(kn: Knowledge) -> _Filters:
    held = _FILTERS.get(id(kn))
    if held is not None and held[0] is kn:
        return held[1]
    made = _Filters.of(kn)
    if len(_FILTERS) >= 8:  # tests load many; a service, one
        _FILTERS.clear()
    _FILTERS[id(kn)] = (kn, made)
    return made


class RecordBuilder:
    """Maps one request's raw resources to a Record. One instance per evaluation."""

    def __init__(
        self, kn: Knowledge, patient_id: str, today: dt.date, server: str | None = None
    ) -> None:
        self.kn = kn
        self.patient_id = patient_id
        self.server = server
        self.today = today
        self.issues: list[DataIssue] = []
        self._medications: dict[str, dict[str, Any]] = {}
        filters = _filters(kn)
        self._igg = filters.igg
        self._titer = filters.titer
        self._pneumo_panel = filters.pneumo_panel
        self._serotype_names = filters.serotype_names
        self._obs_filter = filters.observations
        self._condition_filter = filters.conditions
        self._observations_by_id: dict[str, dict[str, Any]] = {}

    # -- parsing boundary ------------------------------------------------------------------
    def parse(self, res: dict[str, Any]) -> Any | None:
        plain = fastpath.resource(res)  # plain, valid resources skip model validation
        if plain is not None:
            return plain
        model = MODELS[unvalidated.resource_type(res)]
        try:
            return model.model_validate(lenient(res))
        except ValidationError as exc:
            loc, msg = validation_summary(exc)
            self.issues.append(DataIssue(ref_of(res), loc, msg))
            log.info("unreadable %s: %s: %s", unvalidated.resource_type(res), loc, msg)
            return None
        except (KeyError, TypeError, ValueError) as exc:
            self.issues.append(DataIssue(ref_of(res), "(resource)", str(exc)))
            return None

    # -- entry point -----------------------------------------------------------------------
    def build(self, resources: Iterable[dict[str, Any]], draft_orders: Any) -> Record:
        by_type: dict[str, dict[str, dict[str, Any]]] = {}
        for res in resources_of(draft_orders):
            if unvalidated.resource_type(res) == "Medication":
                self._medications[unvalidated.id_of(res)] = res
        for res in resources:
            rtype = unvalidated.resource_type(res)
            if rtype not in MODELS:
                continue
            if rtype == "Medication":
                self._medications[unvalidated.id_of(res)] = res
                continue
            if not for_patient(res, self.patient_id, self.server):
                continue
            by_type.setdefault(rtype, {})[unvalidated.id_of(res)] = res  # de-duplicate by id
        draft_ids = {
            unvalidated.id_of(r)
            for r in resources_of(draft_orders)
            if unvalidated.resource_type(r) == "MedicationRequest"
        }
        patient: PatientFact | None = None
        raw_patient = by_type.get("Patient", {}).get(self.patient_id)
        if raw_patient is not None:
            try:
                patient = self._patient(raw_patient)
            except DATA_ERRORS as exc:
                self._unreadable(raw_patient, exc)
        orders = self._draft_orders(draft_orders)
        authored = orders[0].authored if orders else None
        if authored is not None:
            # the record is built as of the order's date, as the rules read it: an ongoing course
            # ends there, not at the wall clock (a re-review with a past --as-of, a replayed call)
            self.today = authored.date
        record = Record(patient=patient, orders=orders, today=self.today)
        self._observations_by_id = by_type.get("Observation", {})
        handlers: tuple[tuple[str, Callable[[Iterable[dict[str, Any]], Record], None]], ...] = (
            ("Observation", self._observations),
            ("Condition", self._conditions),
            ("Encounter", self._encounters),
            ("Immunization", self._immunizations),
        )
        for rtype, handler in handlers:
            for raw in by_type.get(rtype, {}).values():
                self._guarded(raw, handler, (raw,), record)
        for rtype in (
            "MedicationAdministration",
            "MedicationRequest",
            "MedicationStatement",
            "MedicationDispense",
        ):
            for rid, res in by_type.get(rtype, {}).items():
                if rtype == "MedicationRequest" and rid in draft_ids:
                    continue  # the order being signed is not exposure
                self._guarded(res, self._medication_use, res, record)
        record.issues.extend(self.issues)
        return record

    # -- per type ----------------------------------------------------------------------------
    def _guarded(self, raw: dict[str, Any], handler: Callable[..., None], *args: Any) -> None:
        """Run one resource's handler; a resource of an unexpected shape becomes a DataIssue."""
        try:
            handler(*args)
        except DATA_ERRORS as exc:
            self._unreadable(raw, exc)

    def _unreadable(self, raw: dict[str, Any], exc: Exception) -> None:
        self.issues.append(
            DataIssue(ref_of(raw), "(resource)", f"unexpected element shape ({type(exc).__name__})")
        )
        log.info("unreadable %s: %s", unvalidated.resource_type(raw), type(exc).__name__)

    def _patient(self, raw: dict[str, Any]) -> PatientFact | None:
        model: views.Patient | None = self.parse(raw)
        if model is None:
            return None
        when = to_when(model.birthDate)
        return PatientFact(
            ref_of(raw), when.date if when else None, model.gender, when.end if when else None
        )

    def _observations(self, raws: Iterable[dict[str, Any]], record: Record) -> None:
        """Results in the three shapes labs send: one Observation per result, a panel whose
        `component`s hold the results, and a panel whose `hasMember`s are Observations."""
        for raw in raws:
            if unvalidated.status(raw) in IGNORED_STATUSES:
                continue
            checked = fastpath.code(raw)  # the same (system, code) pairs as the raw read
            codings = checked if checked is not None else unvalidated.codings(raw, "code")
            known = self._obs_filter.any_match(codings)
            components = unvalidated.components(raw)
            panel = self._pneumo_panel.any_match(codings) or (
                bool(components) and self._names_pneumococcus(raw)
            )
            if not known and not panel and not self._known_component(components):
                continue  # e.g. blood pressure: components, none of them read by the rules
            view = fastpath.observation(raw, checked)  # plain results skip model validation
            obs: views.Observation | None = None
            if view is None:
                obs = self.parse(raw)
                if obs is None:
                    continue
                view = observation_view(obs)
            if known:
                # a result of its own names its serotype by its code (text only inside a panel)
                serotype = (
                    self._serotype(codings, [], False) if self._titer_codes(codings) else None
                )
                self._result(raw, view, record, serotype=serotype)
            for comp in (obs.component or []) if obs is not None else []:
                self._component(raw, view, comp, panel, record)
            if panel:
                self._members(raw, view, record)

    def _titer_codes(self, codings: Sequence[Coding]) -> bool:
        return not self._titer.serotypes.keys().isdisjoint(codings)

    def _known_component(self, components: Any) -> bool:
        return any(
            self._obs_filter.any_match(codings)
            for codings in unvalidated.component_codings(components)
        )

    @staticmethod
    def _names_pneumococcus(raw: dict[str, Any]) -> bool:
        """A locally coded panel whose own name says it holds pneumococcal titers."""
        texts = unvalidated.names(raw, "code")
        return any(isinstance(t, str) and _PNEUMO_WORDS.search(t[:120]) for t in texts)

    def _result(
        self,
        raw: dict[str, Any],
        view: fastpath.ObservationView,
        record: Record,
        *,
        serotype: str | None = None,
        part_of: str | None = None,
    ) -> None:
        """One result (an Observation, or one component of a panel) into the record."""
        value, unit = view.value, view.unit
        if self._igg.any_match(view.codings):
            mg_dl = units.igg_to_mg_dl(value, unit) if value is not None else None
            if value is not None and mg_dl is None:
                self.issues.append(
                    DataIssue(
                        ref_of(raw),
                        "valueQuantity.unit",
                        f"unit {shown_unit(unit)} is not a known IgG unit",
                    )
                )
            low = None
            if view.range_low is not None:
                lv, lu = view.range_low
                low = units.igg_to_mg_dl(lv, lu or unit)
            record.igg.append(
                IgGResult(ref_of(raw), view.when, mg_dl, unit, low, value is not None)
            )
            return
        record.measurements.append(
            Measurement(
                ref=ref_of(raw),
                codings=view.codings,
                when=view.when,
                value=value,
                unit=unit,
                value_code=view.value_code,
                interpretation=view.interpretation,
                text=view.text,
                serotype=serotype,
                part_of=part_of,
                range_high=view.range_high[0]
                if view.range_high is not None and view.range_high[1] in (None, unit)
                else None,
            )
        )

    def _component(
        self,
        raw: dict[str, Any],
        panel_view: fastpath.ObservationView,
        comp: views.ObservationComponent,
        pneumo_panel: bool,
        record: Record,
    ) -> None:
        """A panel component is a result of its own, dated and referenced by its panel."""
        codings = codings_of(comp.code)
        texts = [t for t in texts_of(comp.code) if t]
        serotype = self._serotype(codings, texts, pneumo_panel)
        if not self._obs_filter.any_match(codings) and serotype is None:
            return
        value, unit = quantity_of(comp.valueQuantity)
        view = panel_view._replace(
            codings=codings,
            value=value,
            unit=unit,
            value_code=codings_of(comp.valueCodeableConcept),
            interpretation=tuple(c for i in (comp.interpretation or []) for c in codings_of(i)),
            text=comp.valueString,
            range_low=next(
                (
                    (float(rr.low.value), rr.low.code or rr.low.unit)
                    for rr in comp.referenceRange or []
                    if rr.low is not None and rr.low.value is not None
                ),
                None,
            ),
            range_high=next(
                (
                    (float(rr.high.value), rr.high.code or rr.high.unit)
                    for rr in comp.referenceRange or []
                    if rr.high is not None and rr.high.value is not None
                ),
                None,
            ),
        )
        self._result(raw, view, record, serotype=serotype, part_of=ref_of(raw))

    def _members(
        self, raw: dict[str, Any], panel_view: fastpath.ObservationView, record: Record
    ) -> None:
        """hasMember results of a pneumococcal panel that are coded only locally (a member with a
        code the rules know is read on its own, like any other Observation)."""
        for member_id in unvalidated.member_ids(raw):
            member = self._observations_by_id.get(member_id)
            if member is None or unvalidated.status(member) in IGNORED_STATUSES:
                continue
            codings = unvalidated.codings(member, "code")
            if self._obs_filter.any_match(codings):
                continue  # read on its own
            serotype = self._serotype(codings, member, True)
            if serotype is None:
                continue
            view = fastpath.observation(member)
            if view is None:
                obs: views.Observation | None = self.parse(member)
                if obs is None:
                    continue
                view = observation_view(obs)
            if view.when is None:
                view = view._replace(when=panel_view.when)
            self._result(member, view, record, serotype=serotype, part_of=ref_of(raw))

    def _serotype(
        self, codings: Iterable[Coding], source: dict[str, Any] | list[str], in_panel: bool
    ) -> str | None:
        """The Danish serotype a titer is for: from its code, else (inside a pneumococcal panel,
        or when the text itself names pneumococcus) from the text of a local code ("Serotype
        14", "Pn 6B"). Only serotypes the value set knows are accepted."""
        known = self._titer.serotypes
        for system, code in codings:
            hit = known.get((system, code)) if system and code else None
            if hit is not None:
                return hit
        texts: list[str] = []
        if isinstance(source, dict):
            names = unvalidated.names(source, "code")
            texts = [t for t in names if isinstance(t, str)]
        else:
            texts = source
        for text in (t[:120] for t in texts):
            if not in_panel and not _PNEUMO_WORDS.search(text):
                continue
            for found in _SEROTYPE_TEXT.findall(text):
                token = str(found).upper()
                token = self._titer.serotype_aliases.get(token, token)
                if token in self._serotype_names:
                    return token
        return None

    def _conditions(self, raws: Iterable[dict[str, Any]], record: Record) -> None:
        for raw in raws:
            codings = unvalidated.codings(raw, "code")
            if not self._condition_filter.any_match(codings):
                continue
            verification = {c for _, c in unvalidated.codings(raw, "verificationStatus")}
            if verification & {"refuted", "entered-in-error"}:
                continue
            cond: views.Condition | None = self.parse(raw)
            if cond is None:
                continue
            clinical = {c for _, c in codings_of(cond.clinicalStatus)}
            resolved = bool(clinical & {"resolved", "inactive", "remission"})
            active = not resolved
            confirmed = not (verification & {"unconfirmed", "provisional", "differential"})
            onset = to_when(cond.onsetDateTime or (cond.onsetPeriod and cond.onsetPeriod.start))
            record.conditions.append(
                ConditionFact(
                    ref_of(raw),
                    codings_of(cond.code),
                    onset,
                    to_when(cond.recordedDate),
                    active,
                    resolved,
                    confirmed,
                )
            )

    def _encounters(self, raws: Iterable[dict[str, Any]], record: Record) -> None:
        infections = self.kn.vs("infection-bacterial")
        for raw in raws:
            if unvalidated.status(raw) in IGNORED_STATUSES:
                continue
            codings = unvalidated.list_codings(raw, "reasonCode")
            if not infections.any_match(codings):
                continue
            enc: views.Encounter | None = self.parse(raw)
            if enc is None:
                continue
            reasons = tuple(c for cc in (enc.reasonCode or []) for c in codings_of(cc))
            record.encounters.append(
                EncounterFact(
                    ref_of(raw), reasons, to_when(enc.period.start if enc.period else None)
                )
            )

    def _immunizations(self, raws: Iterable[dict[str, Any]], record: Record) -> None:
        """Pneumococcal vaccinations: the polysaccharide challenge, the conjugate vaccines that
        spoil a later sample, and unspecified formulations (CVX 109), which prove neither."""
        kinds = (
            ("polysaccharide", self.kn.vs("pneumococcal-polysaccharide-vaccine")),
            ("conjugate", self.kn.vs("pneumococcal-conjugate-vaccine")),
            ("unspecified", self.kn.vs("pneumococcal-unspecified-vaccine")),
        )
        for raw in raws:
            if unvalidated.status(raw) != "completed":
                continue
            codings = unvalidated.codings(raw, "vaccineCode")
            kind = next((k for k, vs in kinds if vs.any_match(codings)), None)
            if kind is None:
                continue
            imm: views.Immunization | None = self.parse(raw)
            if imm is None:
                continue
            record.immunizations.append(
                ImmunizationFact(
                    ref_of(raw), codings_of(imm.vaccineCode), to_when(imm.occurrenceDateTime), kind
                )
            )

    # -- medications ----------------------------------------------------------------------
    def _concept(
        self, model: views.MedicationConcept, raw: dict[str, Any]
    ) -> tuple[tuple[Coding, ...], list[str | None]]:
        """Codings and names of a medication[x], resolving contained or bundled Medication."""
        if model.medicationCodeableConcept is not None:
            cc = model.medicationCodeableConcept
            return codings_of(cc), texts_of(cc)
        ref = model.medicationReference
        if ref is None or not ref.reference:
            return (), [ref.display if ref else None]
        target: dict[str, Any] | None = None
        if ref.reference.startswith("#"):
            target = unvalidated.contained(raw, ref.reference[1:])
        else:
            target = self._medications.get(ref.reference.rsplit("/", 1)[-1])
        if target is None:
            return (), [ref.display]
        med: views.Medication | None = self.parse(target)
        if med is None:
            return (), [ref.display]
        return codings_of(med.code), [*texts_of(med.code), ref.display]

    def identify(
        self, model: views.MedicationConcept, raw: dict[str, Any]
    ) -> tuple[Product | None, tuple[Coding, ...], list[str | None]]:
        codings, texts = self._concept(model, raw)
        return self.kn.product_index.identify(codings, texts), codings, texts

    def _medication_use(self, raw: dict[str, Any], record: Record) -> None:
        status = unvalidated.status(raw)
        if status in IGNORED_STATUSES or status in {
            "not-done",
            "not-taken",
            "draft",
            "intended",
            "declined",  # a MedicationDispense that was never handed over
        }:
            return
        model: views.MedicationConcept | None = self.parse(raw)
        if model is None:
            if self._raw_is_ig(raw):
                # IG use that could not be read: therapy is on record, its date is not known
                # (never 'no IG given', which would make every IgG a baseline)
                record.exposures.append(
                    Exposure(
                        ref_of(raw),
                        unvalidated.resource_type(raw),
                        "immune globulin",
                        None,
                        None,
                        False,
                    )
                )
            return
        product, codings, texts = self.identify(model, raw)
        rtype = unvalidated.resource_type(raw)
        if rtype == "MedicationStatement" and self.kn.vs("no-known-medications").any_match(codings):
            # an explicit "no known medications" statement: the list was reviewed and is empty
            statement = cast(views.MedicationStatement, model)
            when = to_when(
                statement.effectiveDateTime
                or (statement.effectivePeriod and statement.effectivePeriod.start)
                or statement.dateAsserted
            )
            record.no_medications = NoMedications(ref_of(raw), when)
            return
        start, asserted, last = use_dates(model, rtype)
        if product is not None:
            record.exposures.append(
                Exposure(
                    ref_of(raw),
                    rtype,
                    product.name,
                    start,
                    asserted,
                    ongoing=status in {"active", "in-progress"},
                )
            )
            return
        record.other_medications.append(ref_of(raw))
        drug = self._causative_drug(raw, model, codings, texts, (start, asserted, last))
        if drug is not None:
            record.drugs.append(drug)

    def _causative_drug(
        self,
        raw: dict[str, Any],
        model: views.MedicationConcept,
        codings: tuple[Coding, ...],
        texts: list[str | None],
        dates: tuple[When | None, When | None, When | None],
    ) -> DrugExposure | None:
        """A non-IG medication that can cause secondary hypogammaglobulinemia (by code, else by
        a drug name in its text), with its course as the record states it; None otherwise."""
        rtype, status = unvalidated.resource_type(raw), unvalidated.status(raw)
        start, asserted, last = dates
        hit, name = self._drug_named(codings, texts)
        if hit is None and name is None:
            return None
        if rtype == "MedicationRequest" and unvalidated.intent(raw) in {"proposal", "plan"}:
            return None  # a proposal or plan is not an order: nothing was given
        label = name or next((t for t in texts if t), None) or "medication"
        dosages = dosages_of(model, rtype)
        if rtype == "MedicationRequest" and last is None:
            last = bounds_end(dosages, start)  # the order's own course end, if stated
        ongoing = last is None and status in {"active", "in-progress", "on-hold"}
        rule = self._drug_rule(hit, name)
        return DrugExposure(
            ref_of(raw),
            codings,
            label,
            last or start or asserted,
            ongoing,
            ingredient=rule.name if rule else label,
            route=self._route_class(dosages, texts),
            days=course_days(model, rtype, dosages, *self._course_bounds(start, last, ongoing)),
            daily_mg=daily_mg(dosages),
            single_dose=rtype == "MedicationAdministration",
            start=start,
            uncertain=rtype == "MedicationRequest" and status == "stopped",
        )

    def _drug_named(
        self, codings: tuple[Coding, ...], texts: list[str | None]
    ) -> tuple[tuple[str, str] | None, str | None]:
        """The causative-drug code among `codings`, and the first known drug name in the texts
        (each text lowered once, not once per drug name)."""
        hit = self.kn.vs("causative-drugs").first_match(codings)
        lowered = [t.lower() for t in texts if t]
        name = next((n for t in lowered for n in self.kn.drug_names if n in t), None)
        return hit, name

    def _drug_rule(self, hit: tuple[str, str] | None, name: str | None) -> DrugRule | None:
        """The drug's rule: by its code, else by its name."""
        by_code = self.kn.drug_rules.get(f"{hit[0]}|{hit[1]}" if hit else "")
        return by_code or (self.kn.drug_rules.get(name) if name else None)

    def _course_bounds(
        self, start: When | None, last: When | None, ongoing: bool
    ) -> tuple[dt.date | None, dt.date | None]:
        """First and last day of a course; an ongoing one runs to the record's date."""
        first = start.date if start is not None else None
        end = last.date if last is not None else (self.today if ongoing else None)
        return first, end

    def _route_class(self, dosages: list[Dosages], texts: list[str | None]) -> str | None:
        """'local' (inhaled, nasal, topical, eye, ear...), 'systemic', or None when unknown:
        from the dosage route's codes, else words in the route text or the drug's name."""
        rule = self.kn.criteria.secondary_causes_excluded.corticosteroid
        local = self.kn.vs(rule.local_route_valueset)
        systemic = self.kn.vs(rule.systemic_route_valueset)
        words = rule.local_form_words
        route_texts: list[str] = []
        coded_local = False
        for d in dosages:
            codings = codings_of(d.route)
            if systemic.any_match(codings):
                return "systemic"  # any systemic dosage makes the course systemic
            coded_local = coded_local or local.any_match(codings)
            route_texts += [t for t in texts_of(d.route) if t]
        if coded_local:
            return "local"
        names = " ".join([*route_texts, *(t for t in texts if t)]).lower()
        if any(w in names for w in words):
            return "local"
        if any(w in names for w in rule.systemic_form_words):
            return "systemic"
        return None

    def ig_draft_orders(self, draft_orders: Any) -> bool:
        """Cheap pre-check on raw JSON: does any draft MedicationRequest name an IG product?"""
        for index, raw in enumerate(resources_of(draft_orders)):
            if unvalidated.resource_type(raw) != "MedicationRequest":
                continue
            try:
                if self._raw_names_ig(raw):
                    self._check_draft_subject(raw, index)
                    return True
            except DATA_ERRORS as exc:
                raise BadRequest(
                    f"context.draftOrders.entry[{index}].resource",
                    f"unexpected element shape ({type(exc).__name__})",
                ) from exc
        return False

    def _check_draft_subject(self, raw: dict[str, Any], index: int) -> None:
        """A draft order for another patient is a bad request (contract: draft orders must be
        for context.patientId); evaluating it against this patient's record would be wrong."""
        target = unvalidated.subject_reference(raw)
        if isinstance(target, str) and not refers_to_patient(target, self.patient_id, self.server):
            raise BadRequest(
                f"context.draftOrders.entry[{index}].resource.subject",
                "refers to another patient than context.patientId",
            )

    def _raw_names_ig(self, raw: dict[str, Any]) -> bool:
        """Whether one raw draft MedicationRequest names an IG product (or a Medication to read)."""
        codings, texts, target = unvalidated.medication_names(raw)
        if target and not target.startswith("#"):
            return True  # a reference to a Medication resource: decide after reading it
        return self.kn.product_index.identify(codings, texts) is not None

    def _raw_is_ig(self, raw: dict[str, Any]) -> bool:
        """Whether an unreadable medication resource names an IG product, reading a referenced
        Medication from the record (unlike _raw_names_ig, never 'maybe' for a reference)."""
        target = unvalidated.reference_target(raw, "medicationReference")
        if not target or target.startswith("#"):
            return self._raw_names_ig(raw)
        med = self._medications.get(target.rsplit("/", 1)[-1])
        codings, names = unvalidated.concept(med, "code") if med is not None else ([], [])
        texts = [unvalidated.reference_display(raw, "medicationReference"), *names]
        return self.kn.product_index.identify(codings, texts) is not None

    def _draft_orders(self, draft_orders: Any) -> list[DraftOrder]:
        orders: list[DraftOrder] = []
        for index, raw in enumerate(resources_of(draft_orders)):
            if unvalidated.resource_type(raw) != "MedicationRequest":
                continue
            model: views.MedicationRequest | None = self.parse(raw)
            if model is None:
                if self._raw_names_ig(raw):
                    issue = self.issues.pop()
                    raise BadRequest(
                        f"context.draftOrders.entry[{index}].resource.{issue.field}", issue.problem
                    )
                continue
            product, _, _ = self.identify(model, raw)
            if product is None:
                continue
            dose = order_dose(model, product)
            route = product.route if product.route in ("IV", "SC") else self._route(model)
            orders.append(
                DraftOrder(
                    ref_of(raw),
                    product.name,
                    route,
                    dose.grams,
                    dose.interval,
                    to_when(model.authoredOn),
                    dose.text,
                    product.primary_hcpcs,
                    product.id,
                    dose.basis[0] if dose.basis else None,
                    dose.basis[1] if dose.basis else (),
                    mg_per_kg_dose=dose.mg_per_kg,
                    course_doses=dose.course_doses,
                )
            )
        return orders

    def _route(self, model: views.MedicationRequest) -> str | None:
        """IV or SC from the order's route, for products labelled for both."""
        iv, sc = self.kn.vs("route-intravenous"), self.kn.vs("route-subcutaneous")
        for di in model.dosageInstruction or []:
            codings = codings_of(di.route)
            if iv.any_match(codings):
                return "IV"
            if sc.any_match(codings):
                return "SC"
            text = " ".join(t for t in texts_of(di.route) if t).lower()
            if "intraven" in text:
                return "IV"
            if "subcut" in text:
                return "SC"
        return None
