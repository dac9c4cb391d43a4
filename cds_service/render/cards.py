"""Build the CDS Hooks cards of one determination, once, complete: wording, suggestions, override
reasons and links. Wording lives in cards/ (findings.yaml and the *.md.j2 templates).

The summary card comes first and carries the contract object in
``extension["ivig-cds.determination"]``; it names each gap in one line. One card follows per
thing the clinician can act on now (a criterion not met or lacking documentation, the dose, the
safety labs), holding the detail, so no two cards say the same thing. Home infusion is a line of
the summary unless it is the only issue. When everything is met the summary is the only card.
"""

from __future__ import annotations

import datetime as dt
import re
import string
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from pydantic import BaseModel, ConfigDict, ValidationError

from cds_service.domain import Finding, Outcome, Status
from cds_service.hooks.crd import copy_json
from cds_service.hooks.models import Card, Coding, Indicator, Link, Suggestion
from cds_service.knowledge import KnowledgeError
from cds_service.render.orderables import Actions, OrderContext
from cds_service.rules.determination import Determination

Json = dict[str, Any]
DETERMINATION_KEY = "ivig-cds.determination"
ASSERTION_KEY = "ivig-cds.coverage-assertion-id"
REPORT_KEY = "ivig-cds.report"
CARD_TYPE_KEY = "ivig-cds.card-type"
INDICATOR: dict[str, Indicator] = {
    "meets-criteria": "info",
    "insufficient-documentation": "warning",
    "does-not-meet-criteria": "critical",
}
CARD_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
# a code from the client's record shown in card markdown: code-shaped only (no markup, no links)
_SAFE_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
SUMMARY_LIMIT = 139  # CDS Hooks 2.0: summary "<140 characters"
OWN_CARD = {"dose", "home-infusion"}  # criteria with a card of their own, not criterion.md.j2
GAPS = (Status.INSUFFICIENT, Status.NOT_MET)
UCUM = "http://unitsofmeasure.org"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Choice(_M):
    headline: str
    advice: str | None = None
    overrides: list[str] | None = None
    suggest: bool = True


class Labels(_M):
    outcome: dict[str, str]
    status: dict[str, str]
    criterion: dict[str, str]
    request_type: dict[str, str]


class FindingsFile(_M):
    labels: Labels
    criteria: dict[str, dict[str, Choice]]
    needs: dict[str, str]


def _load(directory: Path) -> FindingsFile:
    path = directory / "findings.yaml"
    try:
        with path.open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        raw["labels"]["request_type"] = raw["labels"].pop("request-type")
        return FindingsFile.model_validate(raw)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise KnowledgeError(f"{path}: cannot read: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise KnowledgeError(f"findings.yaml: {loc}: {first['msg']}") from exc


def _code(codings: Any) -> str:
    """The first code-shaped code of a (system, code) list, for display in card markdown."""
    for _system, code in codings:
        if isinstance(code, str) and _SAFE_CODE.match(code):
            return code
    return "coded condition"


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return str(value)


def _cell(value: Any) -> str:
    """Text safe inside a GFM table cell: no pipe ends the cell, no newline ends the row."""
    return " ".join(str(value).split()).replace("|", "\\|")


# the month names strftime's %b gives in the C locale (the service never sets LC_TIME), without
# a strftime call per date: a card shows a dozen dates
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date(value: Any) -> str:
    """A date as clinicians read it (2 Dec 2026); anything else unchanged."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"
    return str(value)


_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})(?:T[0-9:.+\-Z]+)?\b")


def _as_date(m: re.Match[str]) -> str:
    """An ISO date (or date-time) found in a reason, as `_date` shows it; not a date unchanged."""
    try:
        return _date(dt.date(int(m[1]), int(m[2]), int(m[3])))
    except ValueError:
        return m[0]


def human(text: Any) -> str:
    """A reason as a clinician reads it: ISO dates as dates; the reviewer's "(unverified)" note
    on a source stays in the determination and the report, not on the card."""
    return _ISO_DATE.sub(_as_date, str(text).replace(" (unverified)", ""))


def _months_between(earlier: dt.date, later: dt.date) -> int:
    return max(0, (later.year - earlier.year) * 12 + later.month - earlier.month)


# one card to act on: kind, topic (CRD card type), summary, detail, indicator, its finding
Gap = tuple[str, str, str, str, Indicator, Finding | None]


@dataclass(frozen=True)
class CardCall:
    """What the cards of one call depend on besides the determination."""

    hook: str
    ctx: OrderContext
    assertion_id: str
    report_url: str | None = None
    draft_order: Json | None = None  # the draft MedicationRequest, for the dose update action
    config: dict[str, Any] = field(default_factory=dict)  # CRD configuration options


class CardRenderer:
    """Jinja2 environment over the cards/ directory and its wording data, built once."""

    def __init__(self, directory: Path, actions: Actions) -> None:
        self.directory = directory
        self.env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,  # compiled once per process: no stat() of the file per card
        )
        self.env.filters["num"] = _num
        self.env.filters["code"] = _code
        self.env.filters["cell"] = _cell
        self.env.filters["date"] = _date
        self.env.filters["human"] = human
        self.env.filters["extract"] = lambda key, table: table[key]
        self._templates: dict[str, Template] = {}
        self.wording = _load(directory)
        self.labels = self.wording.labels
        self.actions = actions
        # numbers of the policy that card wording names ({weeks_lo}-{weeks_hi}): from the
        # knowledge, never copied into the wording by hand
        window = actions.kn.criteria.vaccine_response.post_vaccine_window_days
        self.policy_words: dict[str, Any] = {
            "weeks_lo": window.min // 7,
            "weeks_hi": window.max // 7,
        }
        self._check(actions)
        # the policy is fixed for the renderer's life: each card type's sources, found once
        kinds = (*actions.kn.policy.criteria.by_id(), "safety", "summary")
        self._sources_by_kind = {kind: self._find_sources(kind) for kind in kinds}

    def _check(self, actions: Actions) -> None:
        """Every override code a choice names exists, and every {placeholder} of its wording is
        one the renderer fills (a typo stops start-up, not a card)."""
        known = actions.overrides.reasons
        fillable = {"product", "needs", *self.policy_words}
        for cid, choices in self.wording.criteria.items():
            for name, choice in choices.items():
                for code in choice.overrides or []:
                    if code not in known:
                        raise KnowledgeError(f"findings.yaml: criteria.{cid}.{name}: {code!r}?")
                for text in (choice.headline, choice.advice or ""):
                    for _, field_name, _, _ in string.Formatter().parse(text):
                        if field_name is not None and field_name not in fillable:
                            raise KnowledgeError(
                                f"findings.yaml: criteria.{cid}.{name}: {{{field_name}}}?"
                            )

    # -- wording -----------------------------------------------------------------------------
    def choice(self, f: Finding, request_type: str) -> Choice:
        """The card wording for one finding: by reason key and request type, then reason key,
        then status."""
        choices = self.wording.criteria.get(f.id, {})
        reason = f.reason_key.rsplit(".", 1)[-1] if f.reason_key else ""
        for name in (f"{reason}@{request_type}", reason, f.status.value):
            if name and name in choices:
                return choices[name]
        title = self.labels.criterion.get(f.id, f.id)
        return Choice(headline=f"{title}: {self.labels.status[f.status.value].lower()}")

    def headline(self, f: Finding, det: Determination) -> str:
        needs = list(dict.fromkeys(self.wording.needs.get(m.key, "") for m in f.missing))
        text = self.choice(f, det.request_type).headline.format(
            product=det.order.product,
            needs=_join([n for n in needs if n]) or "see the card",
            **self.policy_words,
        )
        return _clip(text)

    def advice(self, choice: Choice) -> str | None:
        """The next step a choice advises, with the policy's numbers filled in."""
        return choice.advice.format(**self.policy_words) if choice.advice else None

    def _template(self, name: str) -> Template:
        """A card template, loaded on first use (the names are the renderer's own: bounded).
        Jinja chains a template's globals over the environment's in a ChainMap that every new
        context copies and iterates (~7 us a card); nothing adds globals after start-up, so the
        template keeps a plain dict of them instead."""
        template = self._templates.get(name)
        if template is None:
            template = self.env.get_template(name)
            template.globals = dict(template.globals)
            self._templates[name] = template
        return template

    def _render(self, name: str, **ctx: Any) -> tuple[str, str]:
        template = self._template(name)
        context = template.new_context(ctx)
        summary = "".join(template.blocks["summary"](context)).strip()
        detail = "".join(template.blocks["detail"](context)).strip()
        return _clip(summary), detail

    # -- cards -------------------------------------------------------------------------------
    def render(self, det: Determination, source: Json, call: CardCall) -> list[Card]:
        """The cards of an order-sign call, complete, in the order the clinician reads them."""
        wanted = call.config
        gaps: list[Gap] = []
        base = self._base(det, source)
        for f in det.findings:
            if f.id in OWN_CARD or f.status not in GAPS:
                continue
            choice = self.choice(f, det.request_type)
            s, d = self._render(
                "criterion.md.j2",
                **base,
                finding=f,
                headline=self.headline(f, det),
                choice=choice,
                advice=self.advice(choice),
            )
            gaps.append((f.id, "coverage-info", s, d, _indicator(f), f))
        dose = det.finding("dose")
        if dose.status is not Status.MET:
            s, d = self._render("dose.md.j2", **base, finding=dose, dose=det.dose, **_dose(det))
            gaps.append(("dose", "guideline", s, d, _indicator(dose), dose))
        if det.safety.missing or det.safety.risks:
            s, d = self._render("safety.md.j2", **base, safety=det.safety)
            gaps.append(("safety", "clinical-reminder", s, d, "info", None))
        home = det.finding("home-infusion")
        home_alone = not gaps and home.status is not Status.MET
        if home_alone:
            s, d = self._render("home-infusion.md.j2", **base, finding=home)
            gaps.append(("home-infusion", "coverage-info", s, d, _indicator(home), home))
        shown = [g for g in gaps if wanted.get(g[1], True)]
        summary, detail = self._render(
            "summary.md.j2",
            **base,
            gaps=[g[2] for g in gaps],
            carded={g[0] for g in gaps},
            home=None if home_alone else home,
            not_met=_not_met(det),
        )
        evidence = _all_evidence(det)
        cards = [
            self._card(
                call,
                det,
                "summary",
                summary,
                detail,
                INDICATOR[det.outcome],
                source,
                "coverage-info",
                evidence,
                extension={
                    DETERMINATION_KEY: det.to_contract(),
                    ASSERTION_KEY: call.assertion_id,
                },
            )
        ]
        already: set[str] = set()
        for kind, topic, s, d, indicator, gap in shown:
            refs = tuple(gap.evidence) if gap is not None else _safety_evidence(det)
            cards.append(
                self._card(call, det, kind, s, d, indicator, source, topic, refs, already=already)
            )
        return cards[: int(wanted.get("max-cards", len(cards)))]

    def render_select(self, det: Determination, source: Json, call: CardCall) -> list[Card]:
        """order-select: one card (what signing will need), still carrying the determination."""
        base = self._base(det, source)
        summary, detail = self._render(
            "select.md.j2",
            **base,
            open_items=det.open_items,
            not_met=_not_met(det),
        )
        indicator: Indicator = "warning" if det.outcome == Outcome.DOES_NOT_MEET else "info"
        return [
            self._card(
                call,
                det,
                "summary",
                summary,
                detail,
                indicator,
                source,
                "coverage-info",
                _all_evidence(det),
                extension={
                    DETERMINATION_KEY: det.to_contract(),
                    ASSERTION_KEY: call.assertion_id,
                },
            )
        ]

    def _base(self, det: Determination, source: Json) -> Json:
        start = det.timeline.therapy_start
        return {
            "det": det,
            "order": det.order,
            "findings": det.findings,
            "labels": self.labels,
            "outcome": str(det.outcome),
            "outcome_label": self.labels.outcome[str(det.outcome)],
            "request_label": self.labels.request_type[det.request_type],
            "policy_title": source["policy_title"],
            "therapy_start": start.date if start and start.end is None else None,
            "on_therapy": det.timeline.on_therapy,
            "issues": det.issues,
            "today": det.evaluated_on,
        }

    def _card(
        self,
        call: CardCall,
        det: Determination,
        kind: str,
        summary: str,
        detail: str,
        indicator: Indicator,
        source: Json,
        topic: str,
        evidence: tuple[str, ...],
        *,
        extension: Json | None = None,
        already: set[str] | None = None,
    ) -> Card:
        card: Card = {
            "uuid": str(uuid.uuid4()),
            "summary": summary,
            "indicator": indicator,
            "detail": detail,
            "source": {
                "label": source["label"],
                "url": source["url"],
                "topic": {
                    "system": CARD_TYPE_SYSTEM,
                    "code": topic,
                    "display": topic.replace("-", " "),
                },
            },
        }
        suggestions = self._suggestions(call, det, kind, already)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "any"
        if indicator != "info" or suggestions:
            reasons = self._override_reasons(det, kind)
            if reasons:
                card["overrideReasons"] = reasons
        links: list[Link] = [
            {
                "label": f"Policy: {s.label}",
                "url": s.url,
                "type": "absolute",
                "autolaunchable": False,
            }
            for s in self._sources(kind)
        ]
        ext: Json = {CARD_TYPE_KEY: kind, **(extension or {})}
        if call.report_url is not None:
            n = len(evidence)
            label = (
                f"Full report (based on {n} record{'s' if n != 1 else ''})"
                if n
                else "Full report of this determination"
            )
            links.append(
                {
                    "label": label,
                    "url": call.report_url,
                    "type": "absolute",
                    "autolaunchable": False,
                }
            )
            ext[REPORT_KEY] = call.report_url
        if links:
            card["links"] = links
        card["extension"] = ext
        return card

    def _sources(self, kind: str) -> tuple[Any, ...]:
        """Policy sources a card rests on: looked up once per card type at start-up."""
        found = self._sources_by_kind.get(kind)
        return found if found is not None else self._find_sources(kind)

    def _find_sources(self, kind: str) -> tuple[Any, ...]:
        """Policy sources a card rests on (distinct urls), the policy's first for the summary."""
        kn = self.actions.kn
        try:
            found = kn.sources_for(kind)
        except KeyError:
            found = list(kn.policy.sources.values())[:1]
        return tuple({s.url: s for s in found}.values())[:3]

    def _override_reasons(self, det: Determination, kind: str) -> list[Coding]:
        codes: list[str] | None = None
        if kind not in ("summary", "dose", "safety"):
            try:
                codes = self.choice(det.finding(kind), det.request_type).overrides
            except StopIteration:
                codes = None
        return self.actions.override_reasons(kind, codes)

    def _suggestions(
        self, call: CardCall, det: Determination, kind: str, already: set[str] | None
    ) -> list[Suggestion]:
        if call.hook == "order-select":
            return self.actions.all_suggestions(det, call.ctx)
        if kind == "summary" or already is None:
            return []
        if kind not in ("dose", "safety", "home-infusion"):
            finding = det.finding(kind)
            if not self.choice(finding, det.request_type).suggest:
                return []
        out = self.actions.suggestions(kind, det, call.ctx, already)
        if kind == "dose":
            change = self._dose_change(det, call)
            if change is not None:
                out.insert(0, change)
        return out

    def _dose_change(self, det: Determination, call: CardCall) -> Suggestion | None:
        """An out-of-range dose: the in-range dose at the documented weight, as an update of the
        draft MedicationRequest (only for a plain gram dose the update can rewrite exactly)."""
        d, order = det.dose, det.order
        grams = d.proposed_grams()
        if grams is None or d.weight is None or order.dose_basis or order.mg_per_kg_dose:
            return None
        resource = _with_dose(call.draft_order, grams)
        if resource is None:
            return None
        mgkg = d.mg_per_kg_at(grams, d.weight.kg)
        s, _ = self._render(
            "dose-change.md.j2",
            order=order,
            grams=grams,
            mgkg=mgkg,
            weight=d.weight.kg,
        )
        return {
            "label": s,
            "uuid": str(uuid.uuid4()),
            "isRecommended": True,
            "actions": [{"type": "update", "description": s, "resource": resource}],
        }


def _with_dose(draft: Json | None, grams: float) -> Json | None:
    """The draft order with its first dose set to `grams` g, or None when its dose is not a
    plain quantity in grams (then no update is offered: it could not be exact)."""
    if not isinstance(draft, dict):
        return None
    resource = copy_json(draft)
    try:
        quantity = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(quantity, dict) or (quantity.get("code") or quantity.get("unit")) != "g":
        return None
    quantity.update({"value": grams, "unit": "g", "system": UCUM, "code": "g"})
    return resource


def _dose(det: Determination) -> Json:
    """Figures the dose card shows beyond the check itself."""
    d = det.dose
    out: Json = {"stale": None, "in_range": None, "stale_months": None, "stale_mgkg": None}
    if d.stale_weight is not None and d.grams_per_dose:
        out["stale"] = d.stale_weight
        if d.stale_weight.date is not None:
            out["stale_months"] = _months_between(d.stale_weight.date, det.evaluated_on)
        out["stale_mgkg"] = d.mg_per_kg_at(d.grams_per_dose, d.stale_weight.kg)
    kg = d.weight.kg if d.weight else None
    if kg is not None and d.status is Status.NOT_MET:
        bounds = d.grams_in_range(kg)
        if bounds is not None:
            out["in_range"] = (round(bounds[0], 1), round(bounds[1], 1), kg)
    return out


def _not_met(det: Determination) -> list[Finding]:
    """Criteria not met; home infusion is derived from the others, so it is not counted."""
    return [f for f in det.findings if f.status is Status.NOT_MET and f.id != "home-infusion"]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _clip(text: str) -> str:
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def _indicator(f: Finding) -> Indicator:
    return "critical" if f.status is Status.NOT_MET else "warning"


def _all_evidence(det: Determination) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r for f in det.findings for r in f.evidence))


def _safety_evidence(det: Determination) -> tuple[str, ...]:
    refs = [i.latest.ref for i in det.safety.items if i.latest is not None]
    return tuple(dict.fromkeys([*refs, *(c.ref for c in det.safety.risks)]))
