"""The human-readable report of one stored evaluation (``GET /reports/{id}``, HTML).

Rendered from what storage kept at evaluation time (the response as sent, the determination
snapshot) plus the feedback received since, so it never re-evaluates and stays as long as the
feedback does. Jinja2 with autoescaping: every value from the record is escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from cds_service.crd import EXT_URL
from cds_service.storage import Evaluation
from cds_service.wording import CARDS_DIR


class ReportRenderer:
    def __init__(self, directory: Path = CARDS_DIR) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, ev: Evaluation, feedback: list[dict[str, Any]]) -> str:
        cards = ev.response.get("cards", [])
        product = ev.order_ref
        if cards:
            product = cards[0]["summary"].split(":")[0]
        return self.env.get_template("report.html.j2").render(
            ev=ev,
            det=ev.determination,
            order_product=product,
            cards=cards,
            coverage=_coverage_rows(ev.response),
            feedback=feedback,
        )


def _coverage_rows(response: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for action in response.get("systemActions", []):
        for ext in (action.get("resource") or {}).get("extension", []):
            if ext.get("url") != EXT_URL:
                continue
            for sub in ext.get("extension", []):
                value = next((v for k, v in sub.items() if k.startswith("value")), "")
                if isinstance(value, dict):
                    value = (
                        value.get("reference")
                        or value.get("text")
                        or f"{value.get('code', '')} {value.get('display', '')}".strip()
                    )
                rows.append((str(sub.get("url")), str(value)))
    return rows
