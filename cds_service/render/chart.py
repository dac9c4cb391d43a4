"""The report's IgG timeline chart: inline SVG drawn by matplotlib's SVG backend, server-side.

No script and no external request (the report's CSP allows neither): the SVG is text in the page.
Every drawn series carries an id (matplotlib's `gid`) so tests and assistive tooling can find it:
``igg-baseline``, ``igg-on-treatment``, ``igg-unknown`` (one marker per result), ``igg-troughs``,
``threshold``, ``age-limit``, ``therapy-start`` or ``start-unknown``, ``lane-ig``, ``lane-weight``.
The data mapping (:func:`chart_data`) is separate from the drawing so it can be tested alone.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
from dataclasses import dataclass, field
from typing import Any

PHASE_COLOURS = {"baseline": "#1f5fa8", "on-treatment": "#b34700", "unknown": "#6b6b6b"}
PHASE_MARKERS = {"baseline": "o", "on-treatment": "s", "unknown": "^"}
# matplotlib's font cache and text layout are not thread-safe; reports are rare, so one at a time
_LOCK = threading.Lock()
# a matplotlib Axes: its stubs take no dates for x, its unit converters do (Any keeps them usable)
Panel = Any


@dataclass(frozen=True)
class Point:
    ref: str
    day: dt.date
    mg_dl: float
    phase: str
    trough: bool = False


@dataclass
class ChartData:
    """What the chart draws, from the stored determination and report facts."""

    points: list[Point] = field(default_factory=list)
    threshold: float | None = None
    age_limits: list[tuple[dt.date, float]] = field(default_factory=list)  # the lower limits
    limit_sources: set[str] = field(default_factory=set)  # "age" (table), "lab" (its range)

    therapy_start: dt.date | None = None
    first_ig_record: dt.date | None = None
    start_unknown: bool = False
    exposures: list[tuple[dt.date, str]] = field(default_factory=list)  # (day, kind)
    weights: list[tuple[dt.date, float]] = field(default_factory=list)
    order_date: dt.date | None = None

    def count(self, phase: str) -> int:
        return sum(1 for p in self.points if p.phase == phase)

    def limit_word(self) -> str:
        """Which wording names the lower-limit line: the age table's, the lab's, or both."""
        if self.limit_sources == {"lab"}:
            return "lab-limit"
        return "mixed-limit" if "lab" in self.limit_sources else "age-limit"


def parse_day(text: Any) -> dt.date | None:
    """The day of a stored date ('2025-03-04', an ISO instant, a partial '2025-03'); None when
    it is 'unknown' or unreadable (such results are listed in the table, not charted)."""
    if not isinstance(text, str):
        return None
    match = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", text)
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[2] or 1), int(match[3] or 1))
    except ValueError:
        return None


def _dated(items: Any, number: str | None = None) -> list[tuple[dt.date, float, dict[str, Any]]]:
    """The stored items with a readable date (and, when `number` names one, a numeric value
    there): (day, value, item), in stored order; the others are not charted."""
    out: list[tuple[dt.date, float, dict[str, Any]]] = []
    for item in items or ():
        day = parse_day(item.get("date"))
        value = item.get(number) if number is not None else 0.0
        if day is not None and isinstance(value, int | float):
            out.append((day, float(value), item))
    return out


def chart_data(determination: dict[str, Any], facts: dict[str, Any] | None) -> ChartData:
    """Map the stored objects to chart series: every IgG result with a value and a date."""
    facts = facts or {}
    troughs = set(facts.get("troughs") or ())
    data = ChartData()
    for day, value, lab in _dated(determination.get("labs"), "valueMgDl"):
        phase = str(lab["phase"]) if lab.get("phase") in PHASE_COLOURS else "unknown"
        ref = str(lab.get("reference", ""))
        data.points.append(Point(ref, day, value, phase, ref in troughs))
    threshold = facts.get("thresholdMgDl")
    data.threshold = float(threshold) if isinstance(threshold, int | float) else None
    # version 1 facts (stored before the lab's own limit was charted) hold age limits only
    for day, mg_dl, item in _dated(facts.get("lowerLimits") or facts.get("ageLowerLimits"), "mgDl"):
        data.age_limits.append((day, mg_dl))
        data.limit_sources.add("lab" if item.get("source") == "lab" else "age")
    data.therapy_start = parse_day(facts.get("therapyStart") or determination.get("therapyStart"))
    data.first_ig_record = parse_day(facts.get("firstIgRecord"))
    data.start_unknown = bool(facts.get("startUndocumented")) or (
        data.therapy_start is None and data.first_ig_record is not None
    )
    data.exposures = [(day, str(e.get("kind", ""))) for day, _, e in _dated(facts.get("exposures"))]
    data.weights = [(day, kg) for day, kg, _ in _dated(facts.get("weights"), "kg")]
    data.order_date = parse_day(facts.get("orderDate"))
    return data


def _day(day: dt.date) -> str:
    """A date as the report writes it: 15 Jan 2025."""
    return f"{day.day} {day:%b %Y}"


def _span(data: ChartData) -> tuple[dt.date, dt.date] | None:
    days = [p.day for p in data.points]
    days += [d for d, _ in data.exposures] + [d for d, _ in data.weights]
    days += [d for d in (data.therapy_start, data.first_ig_record, data.order_date) if d]
    if not days:
        return None
    lo, hi = min(days), max(days)
    pad = dt.timedelta(days=max(15, (hi - lo).days // 20))
    if data.start_unknown and data.first_ig_record is not None:
        # the "start unknown" span must be visible even with nothing on record before it
        lo = min(lo, data.first_ig_record - dt.timedelta(days=max(60, (hi - lo).days // 8)))
    return lo - pad, hi + pad


def render_svg(data: ChartData, say: dict[str, str]) -> str:
    """The chart as an inline <svg> element (no XML prolog, no fixed size: CSS sizes it)."""
    import matplotlib
    from matplotlib.figure import Figure

    span = _span(data)
    if span is None:
        return ""
    # text stays text (readable, selectable); ids are stable across renders
    with (
        _LOCK,
        matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ivig-cds", "font.size": 9}),
    ):
        # fixed margins: a layout engine would measure every label twice (a third of the time)
        fig = Figure(figsize=(7.2, 4.6))
        top, lane = fig.subplots(2, 1, sharex=True, height_ratios=[4, 1.2])
        fig.subplots_adjust(left=0.1, right=0.98, top=0.98, bottom=0.07, hspace=0.62)
        lo, hi = span
        top.set_xlim(lo, hi)
        _draw_therapy_start(top, data, say, lo)
        _draw_limits(top, data, say, lo, hi)
        _draw_results(top, data, say)
        _draw_lanes(lane, data, say)
        for ax in (top, lane):
            ax.spines[["top", "right"]].set_visible(False)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    # CSS sizes the chart to its column (a 390 px phone included); the viewBox keeps its shape
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", svg, count=1)


def _draw_therapy_start(top: Panel, data: ChartData, say: dict[str, str], lo: dt.date) -> None:
    """Where therapy began: its date, or (start unknown) the span before the first IG record."""
    if data.start_unknown and data.first_ig_record is not None:
        top.axvspan(
            lo,
            data.first_ig_record,
            color="#d9d9d9",
            alpha=0.6,
            hatch="//",
            label=say["start-unknown"],
            gid="start-unknown",
        )
    start = data.first_ig_record if data.start_unknown else data.therapy_start
    if start is None:
        return
    known = not data.start_unknown
    top.axvline(
        start,
        color="#1b7a1b" if known else "#444",
        linestyle="-" if known else ":",
        linewidth=2 if known else 1.2,
        label=f"{say['start' if known else 'first-record']} {_day(start)}",
        gid="therapy-start" if known else "first-ig-record",
    )


def _draw_limits(
    top: Panel, data: ChartData, say: dict[str, str], lo: dt.date, hi: dt.date
) -> None:
    """The policy's threshold and the lower limit each result was compared with."""
    if data.threshold is not None:
        top.axhline(
            data.threshold,
            color="#a30000",
            linestyle="--",
            linewidth=1.4,
            label=say["threshold"].format(value=f"{data.threshold:g}"),
            gid="threshold",
        )
    if data.age_limits:
        xs = [lo] + [d for d, _ in data.age_limits] + [hi]
        ys = [data.age_limits[0][1]] + [v for _, v in data.age_limits]
        ys.append(ys[-1])
        top.step(
            xs,
            ys,
            where="post",
            color="#7a4fa3",
            linewidth=1.2,
            label=say[data.limit_word()],
            gid="age-limit",
        )


def _draw_results(top: Panel, data: ChartData, say: dict[str, str]) -> None:
    """IgG results by phase, the troughs ringed, the y range and the legend."""
    for phase, colour in PHASE_COLOURS.items():
        pts = [p for p in data.points if p.phase == phase]
        if pts:
            top.plot(
                [p.day for p in pts],
                [p.mg_dl for p in pts],
                linestyle="none",
                marker=PHASE_MARKERS[phase],
                markersize=7,
                color=colour,
                label=say[f"phase-{phase}"],
                gid=f"igg-{phase}",
            )
    troughs = [p for p in data.points if p.trough]
    if troughs:
        top.plot(
            [p.day for p in troughs],
            [p.mg_dl for p in troughs],
            linestyle="none",
            marker="o",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor="#000",
            markeredgewidth=1.2,
            label=say["trough"],
            gid="igg-troughs",
        )
    values = [p.mg_dl for p in data.points] + [v for _, v in data.age_limits]
    values += [data.threshold] if data.threshold is not None else []
    top.set_ylim(0, max(values + [100.0]) * 1.15)
    top.set_ylabel(say["ylabel"])
    top.grid(axis="y", color="#e3e3e3")
    legend = top.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.02), ncols=2, fontsize=8, frameon=False
    )
    legend.set_gid("legend")
    for handle in legend.legend_handles:  # copies of the series: their ids stay unique
        if handle is not None:
            handle.set_gid(None)
    top.tick_params(labelbottom=False)


def _marks(
    lane: Panel,
    days: list[dt.date],
    row: int,
    style: tuple[str, int, str, str],
    notes: list[str] | None = None,
) -> None:
    """One row of markers on the lane panel (style: marker, size, colour, gid), each labelled
    with its note when notes are given."""
    marker, size, color, gid = style
    lane.plot(
        days,
        [row] * len(days),
        linestyle="none",
        marker=marker,
        markersize=size,
        color=color,
        gid=gid,
    )
    for day, note in zip(days, notes or (), strict=False):
        lane.annotate(
            note, (day, row), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7
        )


def _draw_lanes(lane: Panel, data: ChartData, say: dict[str, str]) -> None:
    """The lanes under the results: IG given and the order being signed; weights (or a note
    that there are none), and the date axis both panels share."""
    from matplotlib import dates as mdates

    lane.set_ylim(-0.6, 1.6)
    lane.set_yticks([1, 0], [say["lane-ig"], say["lane-weight"]])
    if data.exposures:
        _marks(lane, [d for d, _ in data.exposures], 1, ("v", 8, "#b34700", "lane-ig"))
    if data.order_date is not None:
        _marks(lane, [data.order_date], 1, ("*", 11, "#1f5fa8", "lane-order"), [say["order"]])
    if data.weights:
        _marks(
            lane,
            [d for d, _ in data.weights],
            0,
            ("D", 6, "#2a6f6f", "lane-weight"),
            [say["weight-label"].format(kg=f"{kg:g}") for _, kg in data.weights],
        )
    else:
        lane.annotate(
            say["weight-missing"],
            (0.5, 0.0),
            xycoords=("axes fraction", "data"),
            ha="center",
            va="center",
            fontsize=8,
            color="#555",
        )
    locator = mdates.AutoDateLocator(minticks=3, maxticks=6)  # type: ignore[no-untyped-call]
    lane.xaxis.set_major_locator(locator)
    lane.xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    )


def warm() -> None:
    """Import matplotlib and lay out one small chart, so the first report a clinician opens does
    not pay for the import and the font cache (about 1-2 s); `serve` calls it before serving."""
    point = Point("warm-up", dt.date(2025, 1, 1), 500.0, "baseline")
    words = {k: k for k in ("threshold", "age-limit", "start", "ylabel", "lane-ig", "order")}
    words |= {"lab-limit": "", "mixed-limit": ""}
    words |= {"lane-weight": "", "weight-label": "{kg}", "weight-missing": "", "trough": ""}
    words |= {f"phase-{k}": k for k in PHASE_COLOURS}
    render_svg(ChartData(points=[point], threshold=500.0), words)
