"""Cards that act: suggestions that create draft orders, and reasons a clinician may dismiss a card.

Data, not code: ``knowledge/orderables.yaml`` (what may be ordered, its code, which card suggests
it and when; billing codes for the coverage-information systemAction) and
``cards/override-reasons.yaml`` (Card.overrideReasons per card type). Every orderable's code must
be a member of the codes.yaml value set it names, so a typo stops the service at start-up.

A suggestion appears only when the missing-documentation item it would document is in the
finding's ``missing`` list; each item is a typed ``Missing`` that keeps the cards/reasons.yaml key
it was worded from, and the suggestion rule names that key: rewording reasons.yaml cannot change
which orders are offered (no sentence matching).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cds_service.domain import Status
from cds_service.hooks.models import Coding, Suggestion
from cds_service.knowledge import KNOWLEDGE_DIR, Knowledge, KnowledgeError
from cds_service.rules.determination import Determination
from cds_service.wording import CARDS_DIR

Json = dict[str, Any]
SUMMARY = "summary"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Category(_M):
    system: str
    code: str
    display: str
    source: str


class Orderable(_M):
    label: str
    valueset: str
    code: str
    display: str
    category: str
    source: str


class SuggestRule(_M):
    orderable: str
    when_missing: str | None = None
    when_safety: str | None = None
    recommended: Literal["always", "initial-only", "never"] = "always"


class BillingCode(_M):
    system: str
    code: str
    display: str
    source: str


class OrderablesFile(_M):
    version: str
    sources: dict[str, str]
    categories: dict[str, Category]
    orderables: dict[str, Orderable]
    suggest: dict[str, list[SuggestRule]]
    billing: dict[str, list[BillingCode]]


class OverrideFile(_M):
    system: str
    reasons: dict[str, str]
    cards: dict[str, list[str]]


@dataclass(frozen=True)
class OrderContext:
    """Who and what the suggested orders are for (from the hook context)."""

    patient_id: str
    encounter_id: str | None
    user_id: str
    order_ref: str


def _yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeError(f"{path}: cannot read: {exc}") from exc


def _model(model: type[_M], path: Path) -> Any:
    try:
        return model.model_validate(_yaml(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise KnowledgeError(f"{path.name}: {loc}: {first['msg']}") from exc


class Actions:
    """Suggestions, override reasons and billing codes, loaded and cross-checked once."""

    def __init__(
        self,
        kn: Knowledge,
        knowledge_dir: Path = KNOWLEDGE_DIR,
        cards_dir: Path = CARDS_DIR,
    ) -> None:
        self.kn = kn
        self.file: OrderablesFile = _model(OrderablesFile, knowledge_dir / "orderables.yaml")
        self.overrides: OverrideFile = _model(OverrideFile, cards_dir / "override-reasons.yaml")
        reasons = _yaml(cards_dir / "reasons.yaml")
        for oid, o in self.file.orderables.items():
            where = f"orderables.yaml: orderables.{oid}"
            if o.category not in self.file.categories:
                raise KnowledgeError(f"{where}: unknown category {o.category!r}")
            if o.source not in self.file.sources:
                raise KnowledgeError(f"{where}: unknown source {o.source!r}")
            if not kn.vs(o.valueset).matches(kn.systems["loinc"], o.code):
                raise KnowledgeError(f"{where}: LOINC {o.code} is not in value set {o.valueset!r}")
        for kind, rules in self.file.suggest.items():
            for rule in rules:
                if rule.orderable not in self.file.orderables:
                    raise KnowledgeError(f"orderables.yaml: suggest.{kind}: {rule.orderable!r}?")
                if rule.when_missing is not None:
                    node: Any = reasons
                    for part in rule.when_missing.split("."):
                        node = node.get(part) if isinstance(node, dict) else None
                    if not isinstance(node, str):
                        raise KnowledgeError(
                            f"orderables.yaml: suggest.{kind}: reasons.yaml has no "
                            f"{rule.when_missing!r}"
                        )
        for group, codes in self.file.billing.items():
            for c in codes:
                if c.system not in kn.systems:
                    raise KnowledgeError(f"orderables.yaml: billing.{group}: system {c.system}?")
                if not kn.vs("home-infusion-codes").matches(kn.systems[c.system], c.code):
                    raise KnowledgeError(f"orderables.yaml: billing.{group}: {c.code} unknown")
        for kind, codes in self.overrides.cards.items():
            for code in codes:
                if code not in self.overrides.reasons:
                    raise KnowledgeError(f"override-reasons.yaml: cards.{kind}: {code!r}?")

    # -- override reasons ----------------------------------------------------------------
    def override_reasons(self, kind: str, codes: list[str] | None = None) -> list[Coding]:
        """The card's override reasons: `codes` (chosen for the finding) or its type's list."""
        chosen = self.overrides.cards.get(kind, []) if codes is None else codes
        return [
            {"system": self.overrides.system, "code": code, "display": self.overrides.reasons[code]}
            for code in chosen
        ]

    # -- suggestions ---------------------------------------------------------------------
    def _rules_that_apply(self, kind: str, det: Determination) -> list[SuggestRule]:
        rules = self.file.suggest.get(kind, [])
        if kind == "safety":
            return [r for r in rules if r.when_safety in det.safety.missing]
        try:
            finding = det.finding(kind)
        except StopIteration:
            return []
        if finding.status not in (Status.INSUFFICIENT, Status.NOT_MET):
            return []
        keys = {m.key for m in finding.missing}  # typed items: looked up by key, not wording
        return [r for r in rules if r.when_missing is not None and r.when_missing in keys]

    def suggestions(
        self, kind: str, det: Determination, ctx: OrderContext, already: set[str]
    ) -> list[Suggestion]:
        """Suggestions for one card; `already` holds orderables suggested on earlier cards."""
        out = []
        for rule in self._rules_that_apply(kind, det):
            if rule.orderable in already:
                continue
            if rule.recommended == "initial-only" and det.request_type != "initial":
                continue  # e.g. re-testing IgG on therapy measures the infused IgG: not offered
            already.add(rule.orderable)
            out.append(self._suggestion(rule.orderable, rule.recommended != "never", ctx))
        return out

    def all_suggestions(self, det: Determination, ctx: OrderContext) -> list[Suggestion]:
        already: set[str] = set()
        out: list[Suggestion] = []
        for kind in self.file.suggest:
            out.extend(self.suggestions(kind, det, ctx, already))
        return out

    def _suggestion(self, oid: str, recommended: bool, ctx: OrderContext) -> Suggestion:
        o = self.file.orderables[oid]
        cat = self.file.categories[o.category]
        loinc = self.kn.systems["loinc"]
        resource: Json = {
            "resourceType": "ServiceRequest",
            "id": str(uuid.uuid4()),
            "status": "draft",
            "intent": "order",
            "category": [
                {"coding": [{"system": cat.system, "code": cat.code, "display": cat.display}]}
            ],
            "code": {
                "coding": [{"system": loinc, "code": o.code, "display": o.display}],
                "text": o.label,
            },
            "subject": {"reference": f"Patient/{ctx.patient_id}"},
            "note": [
                {
                    "text": f"Documents medical necessity for the immune globulin order "
                    f"{ctx.order_ref}."
                }
            ],
        }
        if ctx.encounter_id:
            resource["encounter"] = {"reference": f"Encounter/{ctx.encounter_id}"}
        if ctx.user_id.startswith(("Practitioner/", "PractitionerRole/")):
            resource["requester"] = {"reference": ctx.user_id}
        verb = "Record" if oid == "body-weight" else "Order"
        return {
            "label": f"{verb} {o.label}",
            "uuid": str(uuid.uuid4()),
            "isRecommended": recommended,
            "actions": [
                {
                    "type": "create",
                    "description": f"Add a draft order: {o.label} (LOINC {o.code})",
                    "resource": resource,
                }
            ],
        }

    # -- billing -------------------------------------------------------------------------
    def _jcode_display(self, code: str, product: str) -> str:
        """The HCPCS descriptor from ig-products.yaml when recorded, else product and unit."""
        for p in self.kn.products.products:
            for ref in p.hcpcs:
                if ref.code == code:
                    descriptor = (ref.model_extra or {}).get("descriptor")
                    if isinstance(descriptor, str) and descriptor:
                        return descriptor
                    if ref.billing_unit_mg:
                        return f"Injection, immune globulin ({p.name}), {ref.billing_unit_mg} mg"
        return f"Injection, immune globulin ({product})"

    def billing_codes(self, det: Determination) -> list[Json]:
        """The product's J-code (when known), then the home-infusion service codes."""
        out: list[Json] = []
        if det.order.hcpcs:
            out.append(
                {
                    "system": self.kn.systems["hcpcs"],
                    "code": det.order.hcpcs,
                    "display": self._jcode_display(det.order.hcpcs, det.order.product),
                }
            )
        for c in self.file.billing.get("home-infusion", []):
            out.append({"system": self.kn.systems[c.system], "code": c.code, "display": c.display})
        return out
