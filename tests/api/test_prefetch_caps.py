"""Prefetch is bounded like the fetch path: a cap for all keys together (413 naming the largest),
and what storage keeps of an evaluation has bounded evidence lists (issue 13, item 2). Before:
50 000 IgG results were evaluated (7-8 s) and every one stored (14 MB per evaluation)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from cds_service.service import STORED_EVIDENCE_MAX
from tests.conftest import DETERMINATION_KEY, problem
from tests.support.scenario import BASE

URL = "/cds-services/ivig-order-sign"


def _flooded(counts: dict[str, int]) -> dict[str, Any]:
    """BASE with `n` more copies (new ids, spread dates) of each key's first resource."""
    req: dict[str, Any] = json.loads(json.dumps(BASE))
    for key, n in counts.items():
        entries = req["prefetch"][key]["entry"]
        template = entries[0]["resource"]
        for i in range(n):
            res = dict(template, id=f"{key}-flood-{i}")
            if "effectiveDateTime" in res:
                res["effectiveDateTime"] = f"20{10 + i % 12:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}"
            entries.append({"resource": res})
    return req


def test_prefetch_over_the_total_cap_is_413_naming_the_largest_keys(client: TestClient) -> None:
    """Each key under its own cap (5000), together over the request's (20 000)."""
    req = _flooded(
        {"observations": 4900, "labs": 4900, "titers": 4900, "titers2": 4900, "conditions": 900}
    )
    r = client.post(URL, json=req)
    assert r.status_code == 413, r.text[:300]
    message = problem(r.json())
    assert "more than 20000" in message
    assert "largest: prefetch.titers2 (" in message  # the largest first
    assert r.json()["issue"][0]["code"] == "too-long"


def test_stored_evaluations_keep_bounded_evidence_lists(client: TestClient) -> None:
    extra = 3 * STORED_EVIDENCE_MAX
    r = client.post(URL, json=_flooded({"observations": extra}))
    assert r.status_code == 200, r.text[:300]
    sent = r.json()["cards"][0]["extension"][DETERMINATION_KEY]
    assert len(sent["labs"]) > extra  # the response lists every result (the contract)
    report = next(
        link["url"] for link in r.json()["cards"][0]["links"] if "/reports/" in link["url"]
    )
    report_id = report.rsplit("/", 1)[1]
    stored = client.app.state.storage.evaluation(report_id)  # type: ignore[attr-defined]
    kept = stored.determination
    assert kept["labs"] == sent["labs"][-STORED_EVIDENCE_MAX:]  # the latest
    assert kept["labsOmitted"] == len(sent["labs"]) - STORED_EVIDENCE_MAX
    assert all(len(c["evidence"]) <= STORED_EVIDENCE_MAX for c in kept["criteria"])
    stored_card = stored.response["cards"][0]["extension"][DETERMINATION_KEY]
    assert stored_card == kept  # the response as stored carries the same bounded copy
    assert len(json.dumps(stored.response)) < len(r.content) / 2
    page = client.get(f"/reports/{report_id}")
    assert page.status_code == 200
    assert f"{kept['labsOmitted']} older results are not kept" in page.text


def test_a_prefetch_key_with_more_resources_than_the_cap_is_not_read(client: TestClient) -> None:
    """50 000 IgG results used to be read in 7-8 s and stored whole; a key over the per-query
    cap (IVIG_CDS_FETCH_MAX_RESOURCES, 5000) is unreadable, as on the fetch path: 412 when the
    key is required."""
    req: dict[str, Any] = json.loads(json.dumps(BASE))
    entries = req["prefetch"]["observations"]["entry"]
    template = entries[0]["resource"]
    for i in range(5001):
        res = dict(template, id=f"igg-flood-{i}")
        entries.append({"resource": res})
    r = client.post(URL, json=req)
    assert r.status_code == 412
    assert "more than 5000 resources" in problem(r.json())
