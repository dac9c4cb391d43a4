"""The reviewer's report (GET /reports/{id}) without a browser: formatting, the 404 page, the
chart's data mapping, the stored report facts, and escaping of hostile values."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.render import chart
from cds_service.render.report import ReportRenderer, css_string, fmt_date, fmt_num
from cds_service.storage import CardRecord, Evaluation, Storage
from tests.conftest import DETERMINATION_KEY, FIXTURES, load_json

SIGN = "/cds-services/ivig-order-sign"


def _report(client: TestClient, scenario: str) -> tuple[dict[str, Any], str]:
    """(determination, report HTML) for one scenario, through the service."""
    body = load_json(FIXTURES / scenario / "order-sign-request.json")
    answer = client.post(SIGN, json=body).json()
    url = next(x["url"] for x in answer["cards"][0]["links"] if "/reports/" in x["url"])
    page = client.get(url.split("8080", 1)[1])
    assert page.status_code == 200
    return answer["cards"][0]["extension"][DETERMINATION_KEY], page.text


def _visible(html: str) -> str:
    """The page without its raw-JSON <details> and the chart's SVG."""
    html = re.sub(r"<details>.*?</details>", "", html, flags=re.S)
    return re.sub(r"<svg.*?</svg>", "", html, flags=re.S)


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end, html.index(start))]


def _markers(svg: str, gid: str) -> int:
    """Markers drawn in one series' group (up to the next group that has an id)."""
    start = svg.index(f'<g id="{gid}">') + 1
    end = svg.find('<g id="', start)
    return svg[start : end if end > 0 else None].count("<use ")


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2025-03-12", "12 Mar 2025"),
        ("2025-03-12T08:30:00+00:00", "12 Mar 2025"),
        ("2025-03", "Mar 2025"),
        ("2025", "2025"),
        ("not a date", "not a date"),
        (None, ""),
    ],
)
def test_dates_are_formatted_as_dates(value: Any, shown: str) -> None:
    assert fmt_date(value) == shown


def test_numbers_lose_float_noise() -> None:
    assert fmt_num(40.0) == "40"
    assert fmt_num(571.4285) == "571.4"
    assert fmt_num(None) == ""


def test_seed_report_reads_as_a_document(client: TestClient) -> None:
    det, html = _report(client, "seed")
    title = re.search(r"<title>(.*?)</title>", html, flags=re.S)
    assert title is not None
    assert title[1] == "IG determination — Privigen, 20 Nov 2025"
    assert "<h1>IG determination — Privigen, 20 Nov 2025</h1>" in html
    visible = _visible(html)
    # criteria by their names, one status vocabulary
    criteria = _section(visible, '<table class="stack criteria">', "</table>")
    for name in ("Pre-treatment IgG", "Secondary causes excluded", "Home infusion services"):
        assert f'<th scope="row">{name}</th>' in criteria
    assert ">Insufficient documentation</td>" in criteria
    assert ">Met</td>" in criteria
    assert "baseline-igg<" not in criteria
    assert ">insufficient<" not in criteria
    # units everywhere; a missing weight is said so, never "not documented kg"
    dose = _section(visible, 'id="dose"', "</table>")
    assert "40 g every 28 days" in dose
    assert "weight not documented" in dose
    assert "not documented kg" not in visible
    assert "mg/kg per 4 weeks not computable" in dose
    # the IgG table: dates as dates, values with their unit, phase in words
    labs = _section(visible, "Serum IgG results", "</table>")
    assert '<th scope="row">12 Mar 2025</th>' in labs
    assert "471 mg/dL (trough)" in labs
    assert "On treatment" in labs
    assert not re.search(r"\d{4}-\d{2}-\d{2}T", labs)
    # the therapy start is stated with the first record of IG
    assert "start not documented (first record of IG 15 Jan 2025)" in visible
    # accessible tables
    assert visible.count("<caption>") >= 4
    assert '<th scope="col">Criterion</th>' in visible
    # cards as HTML from their markdown, not raw markdown in <pre>
    cards = _section(visible, 'id="cards"', 'id="feedback"')
    assert "<pre>" not in cards
    assert "<table>" in cards
    assert "<strong>" in cards
    assert "| --- |" not in cards
    assert "**" not in cards
    # the raw JSON is still there for the auditor, folded away
    assert "<details>" in html
    assert json.dumps(det["outcome"]) in html


def test_dose_with_weight_has_units(client: TestClient) -> None:
    det, html = _report(client, "initial-meets")
    dose = _section(_visible(html), 'id="dose"', "</table>")
    assert f"{fmt_num(det['dose']['weightKg'])} kg" in dose
    assert f"{fmt_num(det['dose']['mgPerKgPer4Weeks'])} mg/kg per 4 weeks" in dose
    assert ">Met</td>" in dose


def test_unknown_report_is_an_html_page_with_404(client: TestClient) -> None:
    page = client.get("/reports/not-a-report")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>Report not found</h1>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "not-a-report" not in page.text  # nothing from the URL is echoed


def test_report_keeps_its_csp_and_makes_no_outside_reference(client: TestClient) -> None:
    body = load_json(FIXTURES / "seed" / "order-sign-request.json")
    answer = client.post(SIGN, json=body).json()
    url = next(x["url"] for x in answer["cards"][0]["links"] if "/reports/" in x["url"])
    page = client.get(url.split("8080", 1)[1])
    csp = page.headers["content-security-policy"]
    assert csp == "default-src 'none'; style-src 'unsafe-inline'"
    html = page.text
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']https?://""", _section(html, "<svg", "</svg>"))
    assert not re.search(r"xlink:href=\"(?!#)", html)  # the SVG only points inside itself
    assert "@import" not in html


# -- the chart: data mapping and drawing -------------------------------------------------


def test_chart_points_per_phase_and_troughs(client: TestClient) -> None:
    det, html = _report(client, "continuation-dated")
    assert det["therapyStart"] == "2025-01-10"
    svg = _section(html, "<svg", "</svg>")
    assert 'id="therapy-start"' in svg
    assert 'id="start-unknown"' not in svg
    assert _markers(svg, "igg-baseline") == 1
    assert _markers(svg, "igg-on-treatment") == 1
    assert 'id="igg-on-treatment"' in svg
    assert 'id="igg-troughs"' in svg
    assert 'id="threshold"' in svg
    assert 'id="age-limit"' in svg


def test_chart_data_maps_the_stored_objects() -> None:
    det = {
        "therapyStart": None,
        "labs": [
            {
                "reference": "Observation/a",
                "date": "2024-11-02",
                "valueMgDl": 320.0,
                "phase": "baseline",
            },
            {
                "reference": "Observation/b",
                "date": "2025-04-01T09:00:00+00:00",
                "valueMgDl": 610.0,
                "phase": "on-treatment",
            },
            {
                "reference": "Observation/c",
                "date": "2025-06",
                "valueMgDl": 640.0,
                "phase": "on-treatment",
            },
            {
                "reference": "Observation/d",
                "date": "unknown",
                "valueMgDl": 500.0,
                "phase": "unknown",
            },
            {
                "reference": "Observation/e",
                "date": "2025-07-01",
                "valueMgDl": None,
                "phase": "on-treatment",
            },
        ],
    }
    facts = {
        "thresholdMgDl": 500,
        "ageLowerLimits": [{"date": "2024-11-02", "mgDl": 700}],
        "therapyStart": "2025-01-10",
        "firstIgRecord": "2025-01-10",
        "startUndocumented": False,
        "troughs": ["Observation/b"],
        "exposures": [{"date": "2025-01-10", "kind": "MedicationAdministration"}],
        "weights": [{"date": "2025-03-01", "kg": 72.0}],
        "orderDate": "2025-07-15",
    }
    data = chart.chart_data(det, facts)
    # undated and value-less results are listed in the table, not charted
    assert [p.ref for p in data.points] == ["Observation/a", "Observation/b", "Observation/c"]
    assert (data.count("baseline"), data.count("on-treatment"), data.count("unknown")) == (1, 2, 0)
    assert [p.ref for p in data.points if p.trough] == ["Observation/b"]
    assert data.points[2].day.isoformat() == "2025-06-01"  # a partial date: its first day
    assert data.threshold == 500
    assert data.therapy_start is not None
    assert not data.start_unknown
    say = ReportRenderer().say
    svg = chart.render_svg(
        data, {**say["chart"], **{f"phase-{k}": v for k, v in say["phase"].items()}}
    )
    assert svg.startswith("<svg")
    assert ' width="' not in svg.split(">", 1)[0]  # CSS sizes it
    assert _markers(svg, "igg-on-treatment") == 2
    assert _markers(svg, "igg-baseline") == 1
    assert _markers(svg, "igg-troughs") == 1
    assert "Policy threshold 500 mg/dL" in svg
    assert "Therapy start 10 Jan 2025" in svg
    assert "72 kg" in svg
    assert len(re.findall(r'id="igg-baseline"', svg)) == 1  # ids unique (legend copies none)


def test_chart_without_facts_still_plots_the_results() -> None:
    det = {
        "labs": [
            {
                "reference": "Observation/a",
                "date": "2024-11-02",
                "valueMgDl": 320.0,
                "phase": "baseline",
            }
        ]
    }
    data = chart.chart_data(det, None)
    assert data.count("baseline") == 1
    assert data.threshold is None
    assert chart.chart_data({"labs": []}, None).points == []


def test_chart_renders_fast_enough() -> None:
    """Measured, not assumed: a seed-sized chart draws in well under a second once warm."""
    det = load_json(FIXTURES / "seed" / "expected-determination.json")
    data = chart.chart_data(
        det, {"thresholdMgDl": 500, "firstIgRecord": "2025-01-15", "startUndocumented": True}
    )
    say = ReportRenderer().say
    words = {**say["chart"], **{f"phase-{k}": v for k, v in say["phase"].items()}}
    chart.render_svg(data, words)  # import and font cache
    started = time.perf_counter()
    svg = chart.render_svg(data, words)
    elapsed = time.perf_counter() - started
    assert 'id="start-unknown"' in svg
    assert elapsed < 2.0, f"{elapsed * 1000:.0f} ms"


# -- report facts stored with the evaluation -------------------------------------------------


def test_report_facts_are_stored_with_the_evaluation(client: TestClient) -> None:
    body = load_json(FIXTURES / "continuation-dated" / "order-sign-request.json")
    answer = client.post(SIGN, json=body).json()
    url = next(x["url"] for x in answer["cards"][0]["links"] if "/reports/" in x["url"])
    store: Storage = client.app.state.storage  # type: ignore[attr-defined]
    ev = store.evaluation(url.rsplit("/", 1)[1])
    assert ev is not None
    facts = ev.report_facts
    assert facts is not None
    assert facts["thresholdMgDl"] == 500
    assert facts["therapyStart"] == "2025-01-10"
    assert facts["product"]
    assert facts["lowerLimits"]
    assert all(e["date"] for e in facts["exposures"])
    assert facts["weights"][-1]["kg"] == 72.0
    on_treatment = [
        x["reference"] for x in ev.determination["labs"] if x["phase"] == "on-treatment"
    ]
    assert set(facts["troughs"]) | set(facts["peaks"]) == set(on_treatment)


def test_an_old_database_gets_the_report_facts_column(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from cds_service.storage import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    migrate.upgrade(engine, "0002")  # the schema as it was before report_facts
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO evaluations VALUES ('old', '2026-01-01T00:00:00Z', 's', 'order-sign',"
            " 'h', 'p', 'MedicationRequest/x', 'a-old', 'pol', 'meets-criteria', '{\"labs\": []}',"
            " '{\"cards\": []}')"
        )
    engine.dispose()
    store = Storage(url)
    try:
        old = store.evaluation("old")
        assert old is not None
        assert old.report_facts is None
        store.record(_evaluation("new", report_facts={"thresholdMgDl": 500}))
        new = store.evaluation("new")
        assert new is not None
        assert new.report_facts == {"thresholdMgDl": 500}
    finally:
        store.close()


# -- escaping --------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


def _evaluation(eid: str, **overrides: Any) -> Evaluation:
    values: dict[str, Any] = {
        "id": eid,
        "service_id": "ivig-order-sign",
        "hook": "order-sign",
        "hook_instance": "h",
        "patient_id": "p",
        "order_ref": "MedicationRequest/x",
        "assertion_id": f"a-{eid}",
        "policy": "pol",
        "outcome": "insufficient-documentation",
        "determination": {
            "policy": "pol",
            "outcome": "insufficient-documentation",
            "requestType": "initial",
            "therapyStart": None,
            "criteria": [],
            "dose": {
                "gramsPerDose": None,
                "intervalDays": None,
                "weightKg": None,
                "mgPerKgPer4Weeks": None,
                "status": "insufficient",
            },
            "labs": [],
        },
        "response": {"cards": []},
        "cards": (CardRecord("c1", "summary", "s", ()),),
    }
    values.update(overrides)
    return Evaluation(**values)


def test_hostile_values_are_escaped_everywhere() -> None:
    det = _evaluation("x").determination
    det["criteria"] = [
        {
            "id": HOSTILE,
            "status": HOSTILE,
            "reason": HOSTILE,
            "evidence": [HOSTILE],
            "missing": [HOSTILE],
        }
    ]
    det["labs"] = [
        {"reference": HOSTILE, "date": "2025-01-02", "valueMgDl": 300.0, "phase": "baseline"}
    ]
    card = {
        "uuid": "c1",
        "indicator": "warning",
        "summary": HOSTILE,
        "detail": f"{HOSTILE}\n\n[click](javascript:alert(1)) <img src=x onerror=alert(1)>",
        "source": {"label": "x"},
        "links": [{"label": HOSTILE, "url": "javascript:alert(1)", "type": "absolute"}],
        "suggestions": [{"label": HOSTILE, "uuid": "s1"}],
    }
    ev = _evaluation(
        "x",
        determination=det,
        response={"cards": [card]},
        report_facts={
            "product": HOSTILE,
            "orderDate": "2025-01-03",
            "thresholdMgDl": 500,
            "exposures": [
                {"date": "2025-01-01", "kind": HOSTILE, "product": HOSTILE, "dated": True}
            ],
            "weights": [],
            "troughs": [],
        },
    )
    html = ReportRenderer().render(
        ev,
        [
            {
                "card_type": HOSTILE,
                "outcome": HOSTILE,
                "override_display": HOSTILE,
                "override_code": None,
                "user_comment": HOSTILE,
                "outcome_timestamp": HOSTILE,
            }
        ],
    )
    assert "<script" not in html
    assert "<img" not in html
    assert 'href="javascript' not in html  # dropped from links and from the markdown
    assert "&lt;script&gt;" in html
    title = re.search(r"<title>(.*?)</title>", html, flags=re.S)
    assert title is not None
    assert title[1].startswith("IG determination — &lt;script&gt;")
    # the print header's CSS string: nothing that could end the string or the <style>
    style = _section(html, "<style>", "</style>")
    assert "alert" in style
    assert '"x"' not in style


def test_css_string_removes_what_could_end_it() -> None:
    assert css_string('a"b\\c<d>e\nf') == "a b c d e f"


# -- public base URL ---------------------------------------------------------------------------


def test_base_url_is_the_configured_one_else_the_bound_address() -> None:
    from cds_service.core.settings import Settings

    assert Settings(public_base_url="https://cds.example.org/ivig/").base_url == (
        "https://cds.example.org/ivig"
    )
    assert Settings(host="127.0.0.1", port=9000).base_url == "http://127.0.0.1:9000"
    assert Settings(host="::1", port=9001).base_url == "http://[::1]:9001"
    assert ":8080" not in Settings(host="0.0.0.0", port=9002).base_url


def test_report_links_follow_the_port(tmp_path: Path) -> None:
    from cds_service.app import create_app
    from tests.conftest import open_settings

    settings = open_settings(tmp_path, port=9137)
    with TestClient(create_app(settings)) as c:
        body = load_json(FIXTURES / "seed" / "order-sign-request.json")
        answer = c.post(SIGN, json=body).json()
        url = next(x["url"] for x in answer["cards"][0]["links"] if "/reports/" in x["url"])
        assert url.startswith("http://127.0.0.1:9137/reports/")
        assert c.get(url.removeprefix("http://127.0.0.1:9137")).status_code == 200


def test_the_chart_draws_the_limit_the_rule_used(client: TestClient) -> None:
    """The baseline IgG carries the lab's own range (low 610 mg/dL) and the policy prefers it:
    the report's limit line at that result is 610 from the lab, not the age table's 700; the
    order date, with no result, keeps the age table's limit. Old stored facts still chart."""
    body = load_json(FIXTURES / "continuation-dated" / "order-sign-request.json")
    for entry in body["prefetch"]["observations"]["entry"]:
        res = entry["resource"]
        if res.get("effectiveDateTime", "").startswith("2024-12-01"):
            res["referenceRange"][0]["low"]["value"] = 610
    answer = client.post(SIGN, json=body).json()
    url = next(x["url"] for x in answer["cards"][0]["links"] if "/reports/" in x["url"])
    store: Storage = client.app.state.storage  # type: ignore[attr-defined]
    ev = store.evaluation(url.rsplit("/", 1)[1])
    assert ev is not None
    assert ev.report_facts is not None
    limits = {x["date"]: (x["mgDl"], x["source"]) for x in ev.report_facts["lowerLimits"]}
    assert limits["2024-12-01"] == (610.0, "lab")
    assert limits[ev.report_facts["evaluatedOn"]] == (700.0, "age")
    data = chart.chart_data(ev.determination, ev.report_facts)
    assert data.limit_word() == "mixed-limit"
    html = client.get(url).text
    assert "Lower limit (lab&#39;s range, else for age)" in html or (
        "Lower limit (lab's range, else for age)" in html
    )
    assert "610 mg/dL from" in _visible(html)
    old = {"lowerLimits": None, "ageLowerLimits": [{"date": "2024-12-01", "mgDl": 700}]}
    assert chart.chart_data(ev.determination, old).limit_word() == "age-limit"
