"""Record access: from prefetch (and, when wired, the EHR's FHIR server) to typed domain facts.

Raw JSON is filtered by resourceType, patient and code first (sub-millisecond); only the survivors
are validated with fhir.resources R4B models (about 0.3 ms each), then mapped to domain facts.
A resource that fails validation becomes a DataIssue, never a 500 and never silent evidence.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from cds_service import units
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
from cds_service.errors import BadRequest
from cds_service.fhir import fastpath, views
from cds_service.fhir.bundle import (
    for_patient,
    is_operation_outcome,
    raw_codings,
    refers_to_patient,
    resources_of,
)
from cds_service.fhir.models import MODELS, ValidationError, lenient, to_when, validation_summary
from cds_service.fhir.query import PrefetchKey
from cds_service.knowledge import Knowledge, Product

log = logging.getLogger(__name__)

IGNORED_STATUSES = frozenset({"entered-in-error", "cancelled"})
# What a resource of an unexpected JSON shape raises in the raw pre-filters (a list where a string
# belongs, a number where an object belongs): reported as unreadable data, never a 500.
DATA_ERRORS = (TypeError, AttributeError, ValueError, KeyError)


# Observation searches, narrowed by code. One key would carry ~210 LOINC codes (a ~5.6 KB URL, too
# close to the 8 KB request-line/header limits of common servers once a bearer token is added), so
# the codes are split by what reads them; together they are exactly the codes the rules read.
# No look-back date narrows them: CDS Hooks 2.0 templates have no date token (`{{today}}` is 3.0
# STU), and a pre-treatment IgG may be many years old; the fetcher also splits any code list
# that would still make a URL longer than `fetch_max_url`.
OBSERVATION_KEYS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("observations", ("igg-serum", "body-weight"), True),  # timeline, baseline, trough, dose
    (
        "labs",  # secondary-cause work-up and the IGIV boxed-warning safety labs
        (
            "creatinine",
            "bun",
            "cbc",
            "cbc-differential",
            "lft",
            "hiv-test",
            "spep",
            "serum-albumin",
            "urine-protein-24h",
            "stool-a1at",
        ),
        False,
    ),
    # vaccine response: serotype titers by current and older LOINC codes, and the panels that
    # hold them; ~250 codes, so the search is split over two keys (`titers`, `titers2`)
    ("titers", ("pneumococcal-titer", "pneumococcal-panel"), False),
)
OBSERVATION_KEY_PARTS = {"titers": 2}


def observation_key_codes(kn: Knowledge) -> list[tuple[str, list[str], bool]]:
    """(prefetch key, the LOINC codes its search asks for, required) for every Observation key;
    a key with several parts is split into equal shares of its sorted codes (`titers`,
    `titers2`, ...), so that no template nears the URL limits of common servers."""
    loinc = kn.systems["loinc"]
    out: list[tuple[str, list[str], bool]] = []
    for key, sets, required in OBSERVATION_KEYS:
        codes = sorted({c for vid in sets for (s, c) in kn.vs(vid).exact if s == loinc})
        parts = OBSERVATION_KEY_PARTS.get(key, 1)
        size = -(-len(codes) // parts)
        for i in range(parts):
            out.append(
                (key if i == 0 else f"{key}{i + 1}", codes[i * size : (i + 1) * size], required)
            )
    return out


def observation_query(kn: Knowledge, codes: Iterable[str]) -> str:
    loinc = kn.systems["loinc"]
    return "Observation?patient={{context.patientId}}&code=" + ",".join(
        f"{loinc}|{c}" for c in codes
    )


def prefetch_keys(kn: Knowledge) -> tuple[PrefetchKey, ...]:
    """Prefetch templates; Observation searches narrowed to the codes the rules read.

    `required`: without it the determination cannot be made (412 when unobtainable). Optional
    keys that cannot be read leave the criteria they feed `insufficient` (never met) and are
    named in the determination's `unavailable`.
    """
    pid = "patient={{context.patientId}}"
    observations = tuple(
        PrefetchKey(key, "Observation", observation_query(kn, codes), required)
        for key, codes, required in observation_key_codes(kn)
    )
    return (
        PrefetchKey("patient", "Patient", "Patient/{{context.patientId}}", True),
        PrefetchKey("conditions", "Condition", f"Condition?{pid}", True),
        *observations,
        PrefetchKey("medicationRequests", "MedicationRequest", f"MedicationRequest?{pid}", True),
        PrefetchKey(
            "medicationStatements", "MedicationStatement", f"MedicationStatement?{pid}", True
        ),
        PrefetchKey(
            "medicationAdministrations",
            "MedicationAdministration",
            f"MedicationAdministration?{pid}",
            True,
        ),
        PrefetchKey(
            "medicationDispenses", "MedicationDispense", f"MedicationDispense?{pid}", False
        ),
        PrefetchKey("immunizations", "Immunization", f"Immunization?{pid}", False),
        PrefetchKey("encounters", "Encounter", f"Encounter?{pid}", False),
    )


# Resource types a search Bundle may carry besides the one asked for (_include, outcome entries).
_ALWAYS_ALLOWED = frozenset({"OperationOutcome", "Medication", "Patient"})


def check_prefetch_value(spec: PrefetchKey, value: Any) -> None:
    """Reject a prefetch value of the wrong shape with a 400 naming the field."""
    where = f"prefetch.{spec.key}"
    if value is None or is_operation_outcome(value):
        return
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise BadRequest(where, "must be a FHIR resource, a Bundle, or null")
    rtype = value["resourceType"]
    if spec.is_read:
        if rtype not in (spec.resource_type, "Bundle"):
            raise BadRequest(where, f"expected {spec.resource_type}, got {rtype}")
        if rtype == spec.resource_type:
            return
    elif rtype != "Bundle":
        raise BadRequest(where, f"expected a Bundle of {spec.resource_type}, got {rtype}")
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest(f"{where}.entry", "must be an array")
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise BadRequest(f"{where}.entry[{i}].resource", "must be a FHIR resource")
        etype = res["resourceType"]
        if etype != spec.resource_type and etype not in _ALWAYS_ALLOWED:
            raise BadRequest(
                f"{where}.entry[{i}].resource.resourceType",
                f"expected {spec.resource_type}, got {etype}",
            )


_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# a serotype named in a local code's text: "Serotype 14", "Pn 6B", "S. pneumoniae type 23F"
# (bounded repeats: no backtracking blow-up on long runs of spaces; texts are cut to 120 chars)
_SEROTYPE_TEXT = re.compile(
    r"(?:serotype|sero|type|pn|spn|pneumo[a-z]{0,12}|s\.? ?pneumoniae|strep[a-z]{0,12})"
    r" {0,3}[:#-]? {0,3}(\d{1,2}[a-z]?)\b",
    re.IGNORECASE,
)
_PNEUMO_WORDS = re.compile(r"pneumo|\bpn\b|\bspn\b", re.IGNORECASE)
_FHIR_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


_UNIT_SHAPE = re.compile(r"^[A-Za-z0-9%/.\[\]{}_*^'\-]{1,32}$")


def _shown_unit(unit: str | None) -> str:
    """A unit for a DataIssue shown in cards: echoed only when it is unit-shaped (UCUM-like),
    never markup or a link from the client's record."""
    return repr(unit) if isinstance(unit, str) and _UNIT_SHAPE.match(unit) else "(not unit-shaped)"


def _ref(res: dict[str, Any]) -> str:
    """'Type/id' for evidence and DataIssues; ids that are not FHIR ids are never echoed into
    cards (they could carry markdown or HTML into the EHR's display)."""
    rtype, rid = res.get("resourceType"), res.get("id")
    rtype = rtype if isinstance(rtype, str) and _FHIR_TYPE.match(rtype) else "Resource"
    rid = rid if isinstance(rid, str) and _FHIR_ID.match(rid) else "invalid-id"
    return f"{rtype}/{rid}"


# ---------------------------------------------------------------------------------------------
# model -> fact helpers


def _codings(cc: views.CodeableConcept | None) -> tuple[Coding, ...]:
    if cc is None:
        return ()
    return tuple((c.system, c.code) for c in (cc.coding or []))


def _texts(cc: views.CodeableConcept | None) -> list[str | None]:
    if cc is None:
        return []
    return [cc.text, *(c.display for c in (cc.coding or []))]


def _quantity(q: views.Quantity | None) -> tuple[float | None, str | None]:
    if q is None or q.value is None:
        return None, None
    return float(q.value), (q.code or q.unit)


def _observation_view(obs: views.Observation) -> fastpath.ObservationView:
    """The facts read from a validated Observation model (fastpath reads the same from raw)."""
    value, unit = _quantity(obs.valueQuantity)
    low: tuple[float, str | None] | None = None
    high: tuple[float, str | None] | None = None
    for rr in obs.referenceRange or []:
        lv, lu = _quantity(rr.low)
        hv, hu = _quantity(rr.high)
        if low is None and lv is not None:
            low = (lv, lu)
        if high is None and hv is not None:
            high = (hv, hu)
    return fastpath.ObservationView(
        codings=_codings(obs.code),
        when=to_when(
            obs.effectiveDateTime
            or (obs.effectivePeriod and obs.effectivePeriod.start)
            or obs.effectiveInstant
            or obs.issued
        ),
        value=value,
        unit=unit,
        value_code=_codings(obs.valueCodeableConcept),
        interpretation=tuple(c for i in (obs.interpretation or []) for c in _codings(i)),
        text=obs.valueString,
        range_low=low,
        range_high=high,
    )


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
        # every Observation value set a prefetch key asks for: the rules read exactly these
        self._obs_sets = [kn.vs(v) for _, sets, _ in OBSERVATION_KEYS for v in sets]
        self._condition_sets = [
            kn.vs(v)
            for v in (
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
        ]
        # one look-up per resource instead of one per value set (same matches)
        self._igg = kn.vs("igg-serum")
        self._titer = kn.vs("pneumococcal-titer")
        self._pneumo_panel = kn.vs("pneumococcal-panel")
        self._serotype_names = frozenset(self._titer.serotypes.values())
        self._observations_by_id: dict[str, dict[str, Any]] = {}
        self._obs_filter = self._obs_sets[0].union(*self._obs_sets[1:])
        self._condition_filter = self._condition_sets[0].union(*self._condition_sets[1:])

    # -- parsing boundary ------------------------------------------------------------------
    def parse(self, res: dict[str, Any]) -> Any | None:
        plain = fastpath.resource(res)  # plain, valid resources skip model validation
        if plain is not None:
            return plain
        model = MODELS[res["resourceType"]]
        try:
            return model.model_validate(lenient(res))
        except ValidationError as exc:
            loc, msg = validation_summary(exc)
            self.issues.append(DataIssue(_ref(res), loc, msg))
            log.info("unreadable %s: %s: %s", res.get("resourceType"), loc, msg)
            return None
        except (KeyError, TypeError, ValueError) as exc:
            self.issues.append(DataIssue(_ref(res), "(resource)", str(exc)))
            return None

    # -- entry point -----------------------------------------------------------------------
    def build(self, resources: Iterable[dict[str, Any]], draft_orders: Any) -> Record:
        by_type: dict[str, dict[str, dict[str, Any]]] = {}
        for res in resources_of(draft_orders):
            if res.get("resourceType") == "Medication":
                self._medications[str(res.get("id"))] = res
        for res in resources:
            rtype = res.get("resourceType")
            if rtype not in MODELS:
                continue
            if rtype == "Medication":
                self._medications[str(res.get("id"))] = res
                continue
            if not for_patient(res, self.patient_id, self.server):
                continue
            by_type.setdefault(rtype, {})[str(res.get("id"))] = res  # de-duplicate by id
        draft_ids = {
            str(r.get("id"))
            for r in resources_of(draft_orders)
            if r.get("resourceType") == "MedicationRequest"
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
            DataIssue(_ref(raw), "(resource)", f"unexpected element shape ({type(exc).__name__})")
        )
        log.info("unreadable %s: %s", raw.get("resourceType"), type(exc).__name__)

    def _patient(self, raw: dict[str, Any]) -> PatientFact | None:
        model: views.Patient | None = self.parse(raw)
        if model is None:
            return None
        when = to_when(model.birthDate)
        return PatientFact(
            _ref(raw), when.date if when else None, model.gender, when.end if when else None
        )

    def _observations(self, raws: Iterable[dict[str, Any]], record: Record) -> None:
        """Results in the three shapes labs send: one Observation per result, a panel whose
        `component`s hold the results, and a panel whose `hasMember`s are Observations."""
        for raw in raws:
            if raw.get("status") in IGNORED_STATUSES:
                continue
            codings = raw_codings(raw.get("code"))
            known = self._obs_filter.any_match(codings)
            components = raw.get("component")
            panel = self._pneumo_panel.any_match(codings) or (
                bool(components) and self._names_pneumococcus(raw)
            )
            if not known and not panel and not self._known_component(components):
                continue  # e.g. blood pressure: components, none of them read by the rules
            view = fastpath.observation(raw)  # plain results skip model validation
            obs: views.Observation | None = None
            if view is None:
                obs = self.parse(raw)
                if obs is None:
                    continue
                view = _observation_view(obs)
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

    def _titer_codes(self, codings: list[Coding]) -> bool:
        serotypes = self._titer.serotypes
        return any(c in serotypes for c in codings)

    def _known_component(self, components: Any) -> bool:
        return isinstance(components, list) and any(
            isinstance(c, dict) and self._obs_filter.any_match(raw_codings(c.get("code")))
            for c in components
        )

    @staticmethod
    def _names_pneumococcus(raw: dict[str, Any]) -> bool:
        """A locally coded panel whose own name says it holds pneumococcal titers."""
        code = raw.get("code")
        if not isinstance(code, dict):
            return False
        texts = [code.get("text")] + [
            c.get("display") for c in code.get("coding") or [] if isinstance(c, dict)
        ]
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
                        _ref(raw),
                        "valueQuantity.unit",
                        f"unit {_shown_unit(unit)} is not a known IgG unit",
                    )
                )
            low = None
            if view.range_low is not None:
                lv, lu = view.range_low
                low = units.igg_to_mg_dl(lv, lu or unit)
            record.igg.append(IgGResult(_ref(raw), view.when, mg_dl, unit, low, value is not None))
            return
        record.measurements.append(
            Measurement(
                ref=_ref(raw),
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
        codings = _codings(comp.code)
        texts = [t for t in _texts(comp.code) if t]
        serotype = self._serotype(codings, texts, pneumo_panel)
        if not self._obs_filter.any_match(codings) and serotype is None:
            return
        value, unit = _quantity(comp.valueQuantity)
        view = panel_view._replace(
            codings=codings,
            value=value,
            unit=unit,
            value_code=_codings(comp.valueCodeableConcept),
            interpretation=tuple(c for i in (comp.interpretation or []) for c in _codings(i)),
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
        self._result(raw, view, record, serotype=serotype, part_of=_ref(raw))

    def _members(
        self, raw: dict[str, Any], panel_view: fastpath.ObservationView, record: Record
    ) -> None:
        """hasMember results of a pneumococcal panel that are coded only locally (a member with a
        code the rules know is read on its own, like any other Observation)."""
        for ref in raw.get("hasMember") or []:
            target = ref.get("reference") if isinstance(ref, dict) else None
            if not isinstance(target, str) or not target.startswith("Observation/"):
                continue
            member = self._observations_by_id.get(target.split("/", 1)[1])
            if member is None or member.get("status") in IGNORED_STATUSES:
                continue
            codings = raw_codings(member.get("code"))
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
                view = _observation_view(obs)
            if view.when is None:
                view = view._replace(when=panel_view.when)
            self._result(member, view, record, serotype=serotype, part_of=_ref(raw))

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
            concept = source.get("code")
            if isinstance(concept, dict):
                raw_texts = [concept.get("text")] + [
                    c.get("display") for c in concept.get("coding") or [] if isinstance(c, dict)
                ]
                texts = [t for t in raw_texts if isinstance(t, str)]
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
            codings = raw_codings(raw.get("code"))
            if not self._condition_filter.any_match(codings):
                continue
            verification = {c for _, c in raw_codings(raw.get("verificationStatus"))}
            if verification & {"refuted", "entered-in-error"}:
                continue
            cond: views.Condition | None = self.parse(raw)
            if cond is None:
                continue
            clinical = {c for _, c in _codings(cond.clinicalStatus)}
            resolved = bool(clinical & {"resolved", "inactive", "remission"})
            active = not resolved
            confirmed = not (verification & {"unconfirmed", "provisional", "differential"})
            onset = to_when(cond.onsetDateTime or (cond.onsetPeriod and cond.onsetPeriod.start))
            record.conditions.append(
                ConditionFact(
                    _ref(raw),
                    _codings(cond.code),
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
            if raw.get("status") in IGNORED_STATUSES:
                continue
            codings = [c for cc in raw.get("reasonCode", []) or [] for c in raw_codings(cc)]
            if not infections.any_match(codings):
                continue
            enc: views.Encounter | None = self.parse(raw)
            if enc is None:
                continue
            reasons = tuple(c for cc in (enc.reasonCode or []) for c in _codings(cc))
            record.encounters.append(
                EncounterFact(_ref(raw), reasons, to_when(enc.period.start if enc.period else None))
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
            if raw.get("status") != "completed":
                continue
            codings = raw_codings(raw.get("vaccineCode"))
            kind = next((k for k, vs in kinds if vs.any_match(codings)), None)
            if kind is None:
                continue
            imm: views.Immunization | None = self.parse(raw)
            if imm is None:
                continue
            record.immunizations.append(
                ImmunizationFact(
                    _ref(raw), _codings(imm.vaccineCode), to_when(imm.occurrenceDateTime), kind
                )
            )

    # -- medications ----------------------------------------------------------------------
    def _concept(
        self, model: views.MedicationConcept, raw: dict[str, Any]
    ) -> tuple[tuple[Coding, ...], list[str | None]]:
        """Codings and names of a medication[x], resolving contained or bundled Medication."""
        if model.medicationCodeableConcept is not None:
            cc = model.medicationCodeableConcept
            return _codings(cc), _texts(cc)
        ref = model.medicationReference
        if ref is None or not ref.reference:
            return (), [ref.display if ref else None]
        target: dict[str, Any] | None = None
        if ref.reference.startswith("#"):
            for contained in raw.get("contained", []) or []:
                if contained.get("id") == ref.reference[1:]:
                    target = contained
        else:
            target = self._medications.get(ref.reference.rsplit("/", 1)[-1])
        if target is None:
            return (), [ref.display]
        med: views.Medication | None = self.parse(target)
        if med is None:
            return (), [ref.display]
        return _codings(med.code), [*_texts(med.code), ref.display]

    def identify(
        self, model: views.MedicationConcept, raw: dict[str, Any]
    ) -> tuple[Product | None, tuple[Coding, ...], list[str | None]]:
        codings, texts = self._concept(model, raw)
        return self.kn.product_index.identify(codings, texts), codings, texts

    def _medication_use(self, raw: dict[str, Any], record: Record) -> None:
        status = raw.get("status")
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
                    Exposure(_ref(raw), raw["resourceType"], "immune globulin", None, None, False)
                )
            return
        product, codings, texts = self.identify(model, raw)
        rtype = raw["resourceType"]
        if rtype == "MedicationStatement" and self.kn.vs("no-known-medications").any_match(codings):
            # an explicit "no known medications" statement: the list was reviewed and is empty
            statement = cast(views.MedicationStatement, model)
            when = to_when(
                statement.effectiveDateTime
                or (statement.effectivePeriod and statement.effectivePeriod.start)
                or statement.dateAsserted
            )
            record.no_medications = NoMedications(_ref(raw), when)
            return
        start, asserted, last = _use_dates(model, rtype)
        if product is not None:
            record.exposures.append(
                Exposure(
                    _ref(raw),
                    rtype,
                    product.name,
                    start,
                    asserted,
                    ongoing=status in {"active", "in-progress"},
                )
            )
            return
        record.other_medications.append(_ref(raw))
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
        rtype, status = raw["resourceType"], raw.get("status")
        start, asserted, last = dates
        hit = self.kn.vs("causative-drugs").first_match(codings)
        lowered = [t.lower() for t in texts if t]  # once per text, not once per drug name
        name = next((n for t in lowered for n in self.kn.drug_names if n in t), None)
        if hit is None and name is None:
            return None
        if rtype == "MedicationRequest" and raw.get("intent") in {"proposal", "plan"}:
            return None  # a proposal or plan is not an order: nothing was given
        label = name or next((t for t in texts if t), None) or "medication"
        dosages = _dosages(model, rtype)
        if rtype == "MedicationRequest" and last is None:
            last = _bounds_end(dosages, start)  # the order's own course end, if stated
        ongoing = last is None and status in {"active", "in-progress", "on-hold"}
        rule = self.kn.drug_rules.get(f"{hit[0]}|{hit[1]}" if hit else "") or (
            self.kn.drug_rules.get(name) if name else None
        )
        first = start.date if start is not None else None
        end = last.date if last is not None else (self.today if ongoing else None)
        return DrugExposure(
            _ref(raw),
            codings,
            label,
            last or start or asserted,
            ongoing,
            ingredient=rule.name if rule else label,
            route=self._route_class(dosages, texts),
            days=_course_days(model, rtype, dosages, first, end),
            daily_mg=_daily_mg(dosages),
            single_dose=rtype == "MedicationAdministration",
            start=start,
            uncertain=rtype == "MedicationRequest" and status == "stopped",
        )

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
            codings = _codings(d.route)
            if systemic.any_match(codings):
                return "systemic"  # any systemic dosage makes the course systemic
            coded_local = coded_local or local.any_match(codings)
            route_texts += [t for t in _texts(d.route) if t]
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
            if raw.get("resourceType") != "MedicationRequest":
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
        subject = raw.get("subject")
        target = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(target, str) and not refers_to_patient(target, self.patient_id, self.server):
            raise BadRequest(
                f"context.draftOrders.entry[{index}].resource.subject",
                "refers to another patient than context.patientId",
            )

    def _raw_names_ig(self, raw: dict[str, Any]) -> bool:
        """Whether one raw draft MedicationRequest names an IG product (or a Medication to read)."""
        cc = raw.get("medicationCodeableConcept")
        texts: list[str | None] = []
        if isinstance(cc, dict):
            texts = [
                cc.get("text"),
                *(c.get("display") for c in cc.get("coding", []) or [] if isinstance(c, dict)),
            ]
        ref = raw.get("medicationReference")
        codings = raw_codings(cc)
        if isinstance(ref, dict):
            texts.append(ref.get("display"))
            target = str(ref.get("reference", ""))
            for contained in raw.get("contained", []) or []:
                if isinstance(contained, dict) and f"#{contained.get('id')}" == target:
                    codings += raw_codings(contained.get("code"))
                    texts.append((contained.get("code") or {}).get("text"))
            if not target.startswith("#") and target:
                return True  # a reference to a Medication resource: decide after reading it
        return self.kn.product_index.identify(codings, texts) is not None

    def _raw_is_ig(self, raw: dict[str, Any]) -> bool:
        """Whether an unreadable medication resource names an IG product, reading a referenced
        Medication from the record (unlike _raw_names_ig, never 'maybe' for a reference)."""
        ref = raw.get("medicationReference")
        target = str(ref.get("reference", "")) if isinstance(ref, dict) else ""
        if not target or target.startswith("#"):
            return self._raw_names_ig(raw)
        med = self._medications.get(target.rsplit("/", 1)[-1])
        code = med.get("code") if isinstance(med, dict) else None
        texts = [ref.get("display") if isinstance(ref, dict) else None]
        if isinstance(code, dict):
            texts += [
                code.get("text"),
                *(c.get("display") for c in code.get("coding", []) or [] if isinstance(c, dict)),
            ]
        return self.kn.product_index.identify(raw_codings(code), texts) is not None

    def _draft_orders(self, draft_orders: Any) -> list[DraftOrder]:
        orders: list[DraftOrder] = []
        for index, raw in enumerate(resources_of(draft_orders)):
            if raw.get("resourceType") != "MedicationRequest":
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
            dose = _dose(model, product)
            route = product.route if product.route in ("IV", "SC") else self._route(model)
            orders.append(
                DraftOrder(
                    _ref(raw),
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
            codings = _codings(di.route)
            if iv.any_match(codings):
                return "IV"
            if sc.any_match(codings):
                return "SC"
            text = " ".join(t for t in _texts(di.route) if t).lower()
            if "intraven" in text:
                return "IV"
            if "subcut" in text:
                return "SC"
        return None


Basis = tuple[str, tuple[tuple[str, str], ...]] | None
# a dosage of a request or statement, or a MedicationAdministration's single dosage
Dosages = views.Dosage | views.AdministrationDosage


def _dosages(model: Any, rtype: str) -> list[Dosages]:
    """The Dosage elements of a medication resource (MedicationAdministration has one `dosage`,
    of another shape, read for its route only)."""
    if rtype == "MedicationAdministration":
        return [model.dosage] if getattr(model, "dosage", None) is not None else []
    return list(getattr(model, "dosageInstruction", None) or getattr(model, "dosage", None) or [])


def _per_day(rep: views.TimingRepeat | None) -> float | None:
    """Administrations per day from timing.repeat (frequency per period)."""
    if rep is None or rep.period is None:
        return None
    days = units.duration_to_days(float(rep.period), rep.periodUnit)
    if not days:
        return None
    return float(rep.frequency or 1) / days


def _repeat_of(d: Dosages) -> views.TimingRepeat | None:
    """The timing.repeat of a dosage (a MedicationAdministration's dosage has no timing)."""
    timing: views.Timing | None = getattr(d, "timing", None)
    return timing.repeat if timing is not None else None


def _daily_mg(dosages: list[Dosages]) -> float | None:
    """mg of the drug per day from the first dosage with a mass dose and a frequency."""
    for d in dosages:
        rep = _repeat_of(d)
        per_day = _per_day(rep)
        for dr in getattr(d, "doseAndRate", None) or []:
            q = dr.doseQuantity or (dr.doseRange.high if dr.doseRange else None)
            value, unit = _quantity(q)
            grams = units.mass_to_grams(value, unit) if value is not None else None
            if grams is not None and per_day is not None:
                return round(grams * 1000.0 * per_day, 3)
    return None


def _dosage_days(d: Dosages) -> float | None:
    """Days one dosage instruction covers: its bounds (duration or period), or its repeat count
    over the frequency; None when it does not say."""
    rep = _repeat_of(d)
    if rep is None:
        return None
    b = rep.boundsDuration
    if b is not None and b.value is not None:
        days = units.duration_to_days(float(b.value), b.code or b.unit)
        if days is not None:
            return days
    if rep.boundsPeriod is not None and rep.boundsPeriod.start and rep.boundsPeriod.end:
        a, b2 = to_when(rep.boundsPeriod.start), to_when(rep.boundsPeriod.end)
        if a is not None and b2 is not None:
            return float((b2.last - a.date).days + 1)
    per_day = _per_day(rep)
    if rep.count is not None and per_day:
        return float(rep.count) / per_day
    return None


def _bounds_end(dosages: list[Dosages], start: When | None) -> When | None:
    """The last day an order's own timing covers (boundsPeriod.end, or its start plus a
    boundsDuration): a course authored long ago may still run into the look-back."""
    ends: list[When] = []
    for d in dosages:
        rep = _repeat_of(d)
        if rep is None:
            continue
        if rep.boundsPeriod is not None and rep.boundsPeriod.end:
            end = to_when(rep.boundsPeriod.end)
            if end is not None:
                ends.append(end)
        elif start is not None and rep.boundsDuration is not None:
            b = rep.boundsDuration
            days = units.duration_to_days(float(b.value), b.code or b.unit) if b.value else None
            if days is not None:  # duration_to_days refuses absurd lengths
                ends.append(When(start.date + dt.timedelta(days=round(days))))
    return max(ends, key=lambda w: w.last) if ends else None


def _use_dates(
    model: views.MedicationConcept, rtype: str
) -> tuple[When | None, When | None, When | None]:
    """(start, asserted, last) of a medication use: when it was given, taken, ordered or
    handed over; when a statement was made; when a stated period ended."""
    asserted: When | None = None
    if rtype == "MedicationAdministration":
        given = cast(views.MedicationAdministration, model)
        start = to_when(
            given.effectiveDateTime or (given.effectivePeriod and given.effectivePeriod.start)
        )
    elif rtype == "MedicationRequest":
        start = to_when(cast(views.MedicationRequest, model).authoredOn)
    elif rtype == "MedicationStatement":
        taken = cast(views.MedicationStatement, model)
        start = to_when(
            taken.effectiveDateTime or (taken.effectivePeriod and taken.effectivePeriod.start)
        )
        asserted = to_when(taken.dateAsserted)
    else:
        handed = cast(views.MedicationDispense, model)
        start = to_when(handed.whenHandedOver or handed.whenPrepared)
    period: views.Period | None = getattr(model, "effectivePeriod", None)
    last = to_when(period.end) if period is not None and period.end else None
    return start, asserted, last


def _course_days(
    model: Any, rtype: str, dosages: list[Dosages], first: dt.date | None, end: dt.date | None
) -> float | None:
    """How long the documented course lasts, in days, from what the record states: timing
    bounds (duration or period), a repeat count over its frequency, the supply duration, or the
    resource's own start and end. None when the record does not say."""
    if rtype == "MedicationAdministration":
        return 1.0
    # sequenced dosages (a taper: 60 mg x 7 d, then 50 mg x 7 d...) add up
    total = 0.0
    for d in dosages:
        days = _dosage_days(d)
        if days is not None:
            total += days
    if total > 0:
        return total
    request = getattr(model, "dispenseRequest", None)
    supply = getattr(request, "expectedSupplyDuration", None)
    if supply is not None and supply.value is not None:
        days = units.duration_to_days(float(supply.value), supply.code or supply.unit)
        if days is not None:
            refills = getattr(request, "numberOfRepeatsAllowed", None) or 0
            return days * (1 + int(refills))  # each refill is another supply
    if first is not None and end is not None and end >= first:
        return float((end - first).days + 1)
    return None


@dataclass(frozen=True)
class _Dose:
    grams: float | None
    interval: float | None
    text: str | None
    basis: Basis
    mg_per_kg: float | None = None  # a weight-based dose (g/kg or mg/kg per dose)
    course_doses: float | None = None  # the number of doses when the order is course-limited


def _dose(model: views.MedicationRequest, product: Product) -> _Dose:
    """Grams per dose, interval in days, free text, how the grams were derived, a weight-based
    dose, and the number of doses of a course-limited order.

    Each dosageInstruction is read on its own (dose and interval from the same instruction);
    with several (a loading dose, then maintenance), the maintenance one decides: the last
    open-ended repeat, else the last with a dose. A dose in mL is converted with the product's
    labelled concentration (never guessed); a dose per kg is kept per kg (the documented weight
    turns it into grams); timing.repeat count or bounds make the order one course, not an
    endless repeat; without a dose, dispenseRequest (quantity over the expected supply
    duration) is the fallback.
    """
    read = [_instruction_dose(di, product) for di in _in_sequence(model.dosageInstruction or [])]
    text = next((d.text for d in read if d.text), None)
    dosed = [d for d in read if d.grams is not None or d.mg_per_kg is not None or d.basis]
    maintenance = [d for d in dosed if d.interval is not None and d.course_doses is None]
    candidates = maintenance or dosed
    chosen = candidates[-1] if candidates else None
    if chosen is None:
        interval = next((d.interval for d in read if d.interval is not None), None)
        grams, interval, basis = _dispense(model, interval)
        return _Dose(grams, interval, text, basis)
    interval, course = chosen.interval, chosen.course_doses
    if course is not None and interval is None:
        interval = 1.0  # a course without a period: its doses on consecutive days
    return _Dose(chosen.grams, interval, text, chosen.basis, chosen.mg_per_kg, course)


def _in_sequence(instructions: list[views.Dosage]) -> list[views.Dosage]:
    """Dosage instructions in the order they apply (`sequence` when given, else as listed)."""
    indexed = list(enumerate(instructions))
    indexed.sort(key=lambda item: (item[1].sequence is None, item[1].sequence or 0, item[0]))
    return [di for _, di in indexed]


def _instruction_dose(di: views.Dosage, product: Product) -> _Dose:
    """What one dosageInstruction orders: its dose (g, mL, or per kg), interval and course."""
    grams = interval = per_kg = course = None
    basis: Basis = None
    for dr in di.doseAndRate or []:
        value, unit = _quantity(dr.doseQuantity)
        if value is None or grams is not None or per_kg is not None:
            continue
        per_kg = units.dose_per_kg_mg(value, unit)
        if per_kg is not None:
            basis = ("basis-per-kg", (("dose", f"{value:g} {unit}"),))
            continue
        grams = units.mass_to_grams(value, unit)
        ml = units.volume_to_ml(value, unit) if grams is None else None
        if ml is not None:
            conc = product.concentration_g_per_ml
            fields = (("ml", f"{ml:g}"), ("product", product.name))
            if conc is None:
                basis = ("basis-ml-unknown", fields)
            else:
                grams = round(ml * conc, 4)
                basis = ("basis-ml", (*fields, ("conc", f"{conc:g}")))
    rep = di.timing.repeat if di.timing else None
    if rep is not None and rep.period is not None:
        days = units.duration_to_days(float(rep.period), rep.periodUnit)
        if days is not None:
            interval = days / float(rep.frequency or 1)
    if rep is not None:
        course = _course_doses(rep, interval)
    return _Dose(grams, interval, di.text, basis, per_kg, course)


def _course_doses(rep: views.TimingRepeat, interval: float | None) -> float | None:
    """Doses in a course-limited order: repeat.count, or the bounds (duration or period) over
    the dosing interval; None for an open-ended repeat; 0 when the order states a course that
    no calendar holds (a zero, negative, reversed or absurd bound): the dose is not read."""
    if rep.count is not None:
        return float(rep.count) if rep.count >= 1 else 0.0
    days: float | None = None
    if rep.boundsDuration is not None:
        b = rep.boundsDuration
        days = (
            units.duration_to_days(float(b.value), b.code or b.unit)
            if b.value is not None
            else None
        )
    elif rep.boundsPeriod is not None and rep.boundsPeriod.start and rep.boundsPeriod.end:
        start, end = to_when(rep.boundsPeriod.start), to_when(rep.boundsPeriod.end)
        if start is not None and end is not None:
            days = float((end.last - start.date).days + 1)
    else:
        return None
    if days is None or days <= 0:
        return 0.0
    if not interval:
        return None
    return max(1.0, float(int(days / interval + 1e-9)))


def _dispense(
    model: views.MedicationRequest, interval: float | None
) -> tuple[float | None, float | None, Basis]:
    """Fallback: grams per dose from dispenseRequest quantity and expected supply duration."""
    dr = model.dispenseRequest
    if dr is None:
        return None, interval, None
    value, unit = _quantity(dr.quantity)
    total = units.mass_to_grams(value, unit) if value is not None else None
    supply = dr.expectedSupplyDuration
    days = (
        units.duration_to_days(float(supply.value), supply.code or supply.unit)
        if supply is not None and supply.value is not None
        else None
    )
    if total is None or days is None or days <= 0:
        return None, interval, None
    fields = (("grams", f"{total:g}"), ("days", f"{days:g}"))
    if interval is None:
        return total, days, ("basis-dispense", fields)
    return round(total * interval / days, 4), interval, ("basis-dispense", fields)
