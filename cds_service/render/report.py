"""The human-readable report of one stored evaluation (``GET /reports/{id}``, HTML).

Rendered from what storage kept at evaluation time (the response as sent, the determination
snapshot, the report facts) plus the feedback received since, so it never re-evaluates and stays
as long as the feedback does. Jinja2 with autoescaping: every value from the record is escaped;
card markdown becomes HTML through markdown-it with raw HTML off (the text is escaped, links
other than http(s) are dropped), so a hostile value in the record cannot become markup. Wording
lives in cards/report.yaml and cards/report.html.j2.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from cds_service.hooks.crd import EXT_URL
from cds_service.render import chart
from cds_service.storage import Evaluation
from cds_service.wording import CARDS_DIR


@dataclass(frozen=True)
class Rendered:
    html: str
    chart_ms: float  # time spent drawing the chart (0 when there was nothing to draw)


def _markdown() -> MarkdownIt:
    """CommonMark with GFM tables; raw HTML off (shown as text); markdown-it's validateLink drops
    javascript:, vbscript:, file: and data: link targets."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    return md


def fmt_date(value: Any) -> str:
    """'2025-03-04T10:00:00+00:00' -> '4 Mar 2025'; a partial date stays as precise as recorded
    ('Mar 2025', '2025'); anything else is shown as it is (escaped by the template)."""
    if not isinstance(value, str) or not value:
        return ""
    text = value.strip()
    try:
        if len(text) == 4 and text.isdigit():
            return text
        if len(text) == 7 and text[4] == "-":
            return dt.date(int(text[:4]), int(text[5:7]), 1).strftime("%b %Y")
        day = dt.date.fromisoformat(text[:10])
    except ValueError:
        return text
    return f"{day.day} {day.strftime('%b %Y')}"


def css_string(value: Any) -> Markup:
    """Text safe inside a double-quoted CSS string in <style> (the print header): no quote,
    backslash, angle bracket or line break can end the string or the element (so it is not
    HTML-escaped: <style> is raw text, an entity would show as written)."""
    return Markup("".join(" " if ch in '"\\<>\n\r' else ch for ch in str(value))[:120])


def fmt_num(value: Any) -> str:
    """12.0 -> '12', 571.4285 -> '571.4'; None -> ''."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return str(value)


class ReportRenderer:
    def __init__(self, directory: Path = CARDS_DIR) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["date"] = fmt_date
        self.env.filters["num"] = fmt_num
        self.env.filters["css_string"] = css_string
        self.md = _markdown()
        self.env.filters["markdown"] = lambda text: Markup(self.md.render(str(text or "")))
        with (directory / "report.yaml").open(encoding="utf-8") as fh:
            self.say: dict[str, Any] = yaml.safe_load(fh)
        self.last_chart_ms = 0.0

    def render(self, ev: Evaluation, feedback: list[dict[str, Any]]) -> str:
        return self.render_timed(ev, feedback).html

    def render_timed(self, ev: Evaluation, feedback: list[dict[str, Any]]) -> Rendered:
        det = ev.determination
        facts = ev.report_facts
        say = self.say
        cards = ev.response.get("cards", [])
        product = (facts or {}).get("product") or ev.order_ref
        when = (facts or {}).get("orderDate") or ev.created_at
        title = say["title"].format(product=product, date=fmt_date(when))
        data = chart.chart_data(det, facts)
        chart_say = {**say["chart"], **{f"phase-{k}": v for k, v in say["phase"].items()}}
        started = time.perf_counter()
        svg = chart.render_svg(data, chart_say) if data.points or facts else ""
        chart_ms = (time.perf_counter() - started) * 1000.0 if svg else 0.0
        html = self.env.get_template("report.html.j2").render(
            ev=ev,
            det=det,
            facts=facts,
            say=say,
            title=title,
            product=product,
            cards=cards,
            coverage=_coverage_rows(ev.response),
            feedback=feedback,
            chart_svg=Markup(svg),
            chart=data,
            caption=_caption(data, facts, say),
            start_text=_start_text(det, facts, say),
        )
        return Rendered(html, chart_ms)


def _start_text(det: dict[str, Any], facts: dict[str, Any] | None, say: dict[str, Any]) -> str:
    start = det.get("therapyStart") or (facts or {}).get("therapyStart")
    if start and not (facts or {}).get("startUndocumented"):
        return str(say["therapy-start"]).format(date=fmt_date(start))
    first = (facts or {}).get("firstIgRecord")
    if first:
        return str(say["therapy-start-unknown"]).format(date=fmt_date(first))
    if det.get("requestType") == "continuation":
        return str(say["therapy-start-unknown"]).format(date=say["undated"])
    return str(say["therapy-start-none"])


def _caption(data: chart.ChartData, facts: dict[str, Any] | None, say: dict[str, Any]) -> str:
    """The chart's text alternative: what a sighted reader takes from it, in one paragraph."""
    text = say["chart"]
    if not data.points:
        return str(text["no-results"])
    phases = ", ".join(f"{v}: {data.count(k)}" for k, v in say["phase"].items() if data.count(k))
    start = ""
    if data.start_unknown and data.first_ig_record:
        start = text["start-unknown-text"].format(date=fmt_date(data.first_ig_record.isoformat()))
    elif data.therapy_start:
        start = text["start-text"].format(date=fmt_date(data.therapy_start.isoformat()))
    lines = ""
    if data.threshold is not None:
        bands = _changes(data.age_limits)
        ages = (  # one band: its value; several (a child growing up): where each begins
            f"{bands[0][1]:g} mg/dL"
            if len(bands) == 1
            else ", ".join(f"{v:g} mg/dL from {fmt_date(d.isoformat())}" for d, v in bands)
        )
        lines = text["lines"].format(
            threshold=f"{data.threshold:g}",
            age=text["lines-age"].format(label=text["lines-label"][data.limit_word()], values=ages)
            if ages
            else "",
        )
    elif facts is None:
        lines = text["no-facts"]
    count = f"{len(data.points)} {text['result' if len(data.points) == 1 else 'results']}"
    return str(text["caption"]).format(count=count, phases=phases, start=start, lines=lines).strip()


def _changes(limits: list[tuple[dt.date, float]]) -> list[tuple[dt.date, float]]:
    """The age limit where it changes (one entry per band the results fall in)."""
    out: list[tuple[dt.date, float]] = []
    for day, value in limits:
        if not out or out[-1][1] != value:
            out.append((day, value))
    return out


def _coverage_rows(response: Mapping[str, Any]) -> list[tuple[str, str]]:
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


def not_found_page(directory: Path = CARDS_DIR) -> str:
    """The page for an unknown or expired report id (served with 404)."""
    env = Environment(
        loader=FileSystemLoader(directory),
        undefined=StrictUndefined,
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    return env.get_template("report-not-found.html.j2").render()
