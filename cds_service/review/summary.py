"""summary.csv and summary.html from determinations.ndjson (read as a stream, once).

The page is self-contained (inline CSS and SVG, no script, no external request) and rendered by
Jinja2 with autoescaping: every value from a record is escaped. Spreadsheet cells that would start
a formula are prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from cds_service.wording import CARDS_DIR

TEMPLATE = "review-summary.html.j2"
CSV_COLUMNS = (
    "patient",
    "order",
    "outcome",
    "requestType",
    "doseStatus",
    "mgPerKgPer4Weeks",
    "missing",
)
# mg/kg per 4 weeks, lower bounds of the dose distribution's bins
DOSE_BINS = (0, 200, 400, 600, 800, 1000)
HTML_PATIENT_ROWS = 20_000  # beyond this the page names summary.csv for the rest
TOP_MISSING = 20


@dataclass
class Summary:
    patients: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    dose_status: Counter[str] = field(default_factory=Counter)
    dose_bins: Counter[str] = field(default_factory=Counter)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rows_omitted: int = 0


def lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                yield orjson.loads(raw)


def dose_bin(mgkg: float | None) -> str:
    if mgkg is None:
        return "not computable"
    label = f"≥ {DOSE_BINS[-1]}"
    for low, high in zip(DOSE_BINS, DOSE_BINS[1:], strict=False):
        if mgkg < high:
            label = f"{low}–{high}"
            break
    return label


def row_of(line: dict[str, Any]) -> dict[str, Any]:
    det = line.get("determination")
    if det is None:
        return {
            "patient": line["patient"],
            "order": line.get("order") or "",
            "outcome": line.get("status", ""),
            "requestType": "",
            "doseStatus": "",
            "mgPerKgPer4Weeks": None,
            "missing": [],
        }
    missing = list(
        dict.fromkeys(
            m
            for c in det["criteria"]
            if c["status"] in ("insufficient", "not-met")
            for m in c["missing"]
        )
    )
    return {
        "patient": line["patient"],
        "order": line.get("order") or "",
        "outcome": det["outcome"],
        "requestType": det["requestType"],
        "doseStatus": det["dose"]["status"],
        "mgPerKgPer4Weeks": det["dose"]["mgPerKgPer4Weeks"],
        "missing": missing,
    }


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write(out: Path, *, as_of: str = "", reports: bool = False, bad_lines: int = 0) -> Summary:
    """Write summary.csv and summary.html under `out`; return the counts."""
    summary = Summary()
    rows_by_patient: list[dict[str, Any]] = []
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for line in lines(out / "determinations.ndjson"):
            row = row_of(line)
            summary.patients += 1
            summary.outcomes[row["outcome"]] += 1
            summary.missing.update(row["missing"])
            if row["doseStatus"]:
                summary.dose_status[row["doseStatus"]] += 1
                summary.dose_bins[dose_bin(row["mgPerKgPer4Weeks"])] += 1
            writer.writerow(
                [_cell(row[c]) if c != "missing" else _cell("; ".join(row[c])) for c in CSV_COLUMNS]
            )
            if len(rows_by_patient) < HTML_PATIENT_ROWS:
                rows_by_patient.append(row)
            else:
                summary.rows_omitted += 1
    summary.rows = sorted(rows_by_patient, key=lambda r: r["patient"])
    env = Environment(
        loader=FileSystemLoader(CARDS_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    bins = [dose_bin(b) for b in DOSE_BINS] + ["not computable"]
    html = env.get_template(TEMPLATE).render(
        s=summary,
        outcomes=summary.outcomes.most_common(),
        missing=summary.missing.most_common(TOP_MISSING),
        dose_status=summary.dose_status.most_common(),
        dose_bins=[(b, summary.dose_bins[b]) for b in bins if b in summary.dose_bins],
        as_of=as_of,
        reports=reports,
        bad_lines=bad_lines,
    )
    (out / "summary.html").write_text(html, encoding="utf-8")
    return summary
