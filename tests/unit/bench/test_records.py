"""The benchmark's synthetic records are valid input: every size evaluates without error.

Not a timing test; the benchmark itself runs from `make bench`.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bench import records

DETERMINATION_KEY = "ivig-cds.determination"


@pytest.mark.parametrize("n", [10, 200])
def test_generated_records_evaluate(client: TestClient, n: int) -> None:
    request = records.order_sign_request(n)
    assert records.count_resources(request) == n
    assert request == records.order_sign_request(n)  # deterministic
    resp = client.post("/cds-services/ivig-order-sign", json=request)
    assert resp.status_code == 200, resp.text
    det = resp.json()["cards"][0]["extension"][DETERMINATION_KEY]
    assert det["requestType"] == "continuation"  # the IVIG history is read
    assert det["outcome"] in {
        "insufficient-documentation",
        "does-not-meet-criteria",
        "meets-criteria",
    }
    statuses = {c["id"]: c["status"] for c in det["criteria"]}
    assert statuses["diagnosis"] == "met"
    assert statuses["dose"] == "met"  # a recent weight is found among the labs
    assert det["labs"]  # the IgG timeline
