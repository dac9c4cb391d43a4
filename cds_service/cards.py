"""Render a Determination as CDS Hooks cards. Wording lives in cards/*.md.j2 templates.

The summary card comes first and carries the contract object in
``extension["ivig-cds.determination"]``; one card per thing to act on follows.
"""

from __future__ import annotations

import re
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from cds_service.domain import Finding, Outcome, Status
from cds_service.engine import Determination
from cds_service.wording import CARDS_DIR

DETERMINATION_KEY = "ivig-cds.determination"
INDICATOR = {
    "meets-criteria": "info",
    "insufficient-documentation": "warning",
    "does-not-meet-criteria": "critical",
}
OUTCOME_LABEL = {
    "meets-criteria": "Meets criteria",
    "insufficient-documentation": "Documentation insufficient",
    "does-not-meet-criteria": "Does not meet criteria",
}
STATUS_LABEL = {
    "met": "met",
    "not-met": "NOT MET",
    "insufficient": "missing documentation",
    "not-applicable": "n/a",
}
TITLES = {
    "diagnosis": "Diagnosis",
    "age": "Age",
    "baseline-igg": "Pre-treatment IgG",
    "secondary-causes-excluded": "Secondary causes excluded",
    "infection-history": "Recurrent infections",
    "vaccine-response": "Vaccine response",
    "clinical-response": "Clinical response",
    "trough-monitoring": "Trough monitoring",
    "dose": "Dose (mg/kg)",
    "home-infusion": "Home infusion services",
}
CARD_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
# a code from the client's record shown in card markdown: code-shaped only (no markup, no links)
_SAFE_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
SUMMARY_LIMIT = 139  # CDS Hooks 2.0: summary "<140 characters"
OWN_CARD = {"dose", "home-infusion"}


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


class CardRenderer:
    """Jinja2 environment over the cards/ directory, built once per process."""

    def __init__(self, directory: Path = CARDS_DIR) -> None:
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
        self.env.filters["extract"] = lambda key, table: table[key]

    def _render(self, name: str, **ctx: Any) -> tuple[str, str]:
        template: Template = self.env.get_template(name)
        context = template.new_context(ctx)
        summary = "".join(template.blocks["summary"](context)).strip()
        detail = "".join(template.blocks["detail"](context)).strip()
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
        return summary, detail

    def render(self, det: Determination, source: dict[str, Any]) -> list[dict[str, Any]]:
        findings = det.findings
        open_items = det.open_items
        base = {
            "order": det.order,
            "findings": findings,
            "titles": TITLES,
            "status_label": STATUS_LABEL,
            "policy": det.policy,
            "policy_title": source["policy_title"],
            "policy_short": source["policy_short"],
        }
        summary, detail = self._render(
            "summary.md.j2",
            **base,
            outcome=det.outcome,
            outcome_label=OUTCOME_LABEL[det.outcome],
            request_type=det.request_type,
            open_items=open_items,
            timeline=det.timeline,
            therapy_start=str(det.timeline.therapy_start) if det.timeline.therapy_start else None,
            not_met=[f for f in findings if f.status is Status.NOT_MET],
            issues=det.issues,
        )
        cards = [
            self._card(
                summary,
                detail,
                INDICATOR[det.outcome],
                source,
                "coverage-info",
                extension={DETERMINATION_KEY: det.to_contract()},
                kind="summary",
            )
        ]
        for f in findings:
            if f.id in OWN_CARD or f.status not in (Status.INSUFFICIENT, Status.NOT_MET):
                continue
            s, d = self._render("criterion.md.j2", **base, finding=f)
            cards.append(self._card(s, d, _indicator(f), source, "coverage-info", kind=f.id))
        dose = det.finding("dose")
        if dose.status is not Status.MET:
            s, d = self._render("dose.md.j2", **base, finding=dose, dose=det.dose)
            cards.append(self._card(s, d, _indicator(dose), source, "guideline", kind="dose"))
        if det.safety.missing or det.safety.risks:
            s, d = self._render("safety.md.j2", **base, safety=det.safety)
            cards.append(self._card(s, d, "info", source, "clinical-reminder", kind="safety"))
        home = det.finding("home-infusion")
        s, d = self._render("home-infusion.md.j2", **base, finding=home)
        cards.append(self._card(s, d, "info", source, "coverage-info", kind="home-infusion"))
        return cards

    def render_select(self, det: Determination, source: dict[str, Any]) -> list[dict[str, Any]]:
        """order-select: one card (what signing will need), still carrying the determination."""
        findings = det.findings
        open_items = det.open_items
        summary, detail = self._render(
            "select.md.j2",
            order=det.order,
            titles=TITLES,
            policy=det.policy,
            policy_title=source["policy_title"],
            policy_short=source["policy_short"],
            outcome=det.outcome,
            outcome_label=OUTCOME_LABEL[det.outcome],
            request_type=det.request_type,
            open_items=open_items,
            not_met=[f for f in findings if f.status is Status.NOT_MET],
        )
        indicator = "warning" if det.outcome == Outcome.DOES_NOT_MEET else "info"
        return [
            self._card(
                summary,
                detail,
                indicator,
                source,
                "coverage-info",
                extension={DETERMINATION_KEY: det.to_contract()},
                kind="summary",
            )
        ]

    @staticmethod
    def _card(
        summary: str,
        detail: str,
        indicator: str,
        source: dict[str, Any],
        topic: str,
        *,
        kind: str,
        extension: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        card: dict[str, Any] = {
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
            "extension": {"ivig-cds.card-type": kind, **(extension or {})},
        }
        return card


def _indicator(f: Finding) -> str:
    return "critical" if f.status is Status.NOT_MET else "warning"


@cache
def default() -> CardRenderer:
    return CardRenderer()
