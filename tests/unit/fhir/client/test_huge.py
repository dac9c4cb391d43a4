"""Huge answers from fhirServer cost bounded time and memory (issue 13, item 2).

The caps are checked while a page streams in: the bytes of one page (`fetch_max_bytes`, 4 MB),
the bytes of all answers to one request (`fetch_request_max_bytes`), and the resources of one
search (`fetch_max_resources`), counted as each entry ends. The pages here are sent without a
Content-Length (the body ends when the server closes the connection), so nothing is known about
their size before they are read. Before: a 44 MB page answered 412 after 6.5-10.7 s and the
service's RSS went from 93 MB to 1.5 GB; 50 000 small entries, 412 after 3.2-5.4 s and 0.8 GB
(every Observation query answered with the page). Now: 412 in 2.2-2.6 s, at most 197 MB.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.app import create_app
from cds_service.fhir.client import Unreadable, _JsonStream, _Malformed
from tests.conftest import ValidatingClient, make_settings, problem
from tests.support.fake_fhir import (
    PATIENT,
    FaultServer,
    RecordedRequest,
    Reply,
    ehr_body,
    observation,
    searchset,
    seed_routes,
)
from tests.support.jwt import SIGN

URL = "/cds-services/ivig-order-sign"
BUDGET = 3.0  # the default
MARGIN = 1.5
# growth of this process's RSS while the service reads one huge answer (the IgG query's): measured
# under 5 MB; before, 135-191 MB (and 93 MB -> 1.5 GB for the service when every query got it)
RSS_BOUND_MB = 64


def _page(entries: int, pad: int) -> bytes:
    resources = []
    for i in range(entries):
        res = observation(i, PATIENT)
        if pad:
            res["note"] = [{"text": "x" * pad}]
        resources.append(res)
    return json.dumps(searchset(resources)).encode()


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class _PeakRss:
    """Samples this process's RSS every 10 ms while the block runs."""

    def __enter__(self) -> _PeakRss:
        gc.collect()
        self.before = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.before


@pytest.fixture(scope="module")
def huge_pages() -> dict[str, bytes]:
    return {"44MB": _page(50_000, 500), "50000-small": _page(50_000, 0)}


def _igg_query_answers(raw: bytes) -> Any:
    """The IgG query gets `raw` (without a Content-Length); other queries the seed record."""
    seed = seed_routes()["Observation"]

    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        if "2465-3" in (req.param("code") or ""):
            return Reply(raw=raw, sized=False)
        return srv.resolve(seed, req)

    return handle


def _call(client: TestClient, fake: FaultServer) -> tuple[int, str, float, float]:
    t0 = time.monotonic()
    with _PeakRss() as rss:
        r = client.post(URL, json=ehr_body(fake.base_url))
    return r.status_code, r.text, time.monotonic() - t0, rss.growth


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    with ValidatingClient(create_app(make_settings(demo=True))) as c:
        yield c


def test_a_44mb_page_is_cut_at_the_page_cap_as_it_streams(
    default_client: TestClient, huge_pages: dict[str, bytes]
) -> None:
    raw = huge_pages["44MB"]
    assert len(raw) > 40_000_000
    with FaultServer(seed_routes()) as fake:
        fake.set("Observation", _igg_query_answers(raw))
        status, text, elapsed, growth = _call(default_client, fake)
    assert status == 412, text[:300]
    assert "observations" in text
    assert "exceeds 4000000 bytes" in text or "more than 5000 resources" in text
    assert elapsed < BUDGET + MARGIN
    assert growth < RSS_BOUND_MB, f"RSS grew {growth:.0f} MB"


def test_50000_small_entries_stop_at_the_resource_cap_as_they_stream(
    huge_pages: dict[str, bytes],
) -> None:
    """With the page byte cap out of the way, the resource cap alone stops the reading."""
    raw = huge_pages["50000-small"]
    with (
        ValidatingClient(create_app(make_settings(demo=True, fetch_max_bytes=10**8))) as client,
        FaultServer(seed_routes()) as fake,
    ):
        fake.set("Observation", _igg_query_answers(raw))
        status, text, elapsed, growth = _call(client, fake)
    assert status == 412, text[:300]
    assert "more than 5000 resources" in text
    assert elapsed < BUDGET + MARGIN
    assert growth < RSS_BOUND_MB, f"RSS grew {growth:.0f} MB"


def test_the_answers_to_one_request_share_a_byte_budget() -> None:
    """Pages each under the page cap still stop once the request's answers together pass
    `fetch_request_max_bytes`; the rest of the record is not read."""
    page = _page(400, 200)  # about 190 KB, under the page cap; one fits the budget, two do not
    budget = len(page) * 3 // 2
    config = make_settings(demo=True, fetch_max_bytes=1_000_000, fetch_request_max_bytes=budget)
    with (
        ValidatingClient(create_app(config)) as client,
        FaultServer(seed_routes()) as fake,
    ):
        fake.set("Observation", Reply(raw=page, sized=False))
        status, text, _, _ = _call(client, fake)
    assert status in (200, 412), text[:300]  # 200 when the IgG query was read first
    assert f"exceed {budget} bytes together" in text


# ------------------------------------------------------------------------------ the stream reader

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@given(
    members=st.dictionaries(st.sampled_from(["resourceType", "type", "link", "x y"]), _json_values),
    entries=st.lists(_json_values, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8),
)
@settings(max_examples=150, deadline=None)
def test_the_stream_reader_reads_what_orjson_reads_however_the_bytes_arrive(
    members: dict[str, Any], entries: list[Any], cuts: list[int]
) -> None:
    doc = {**members, "entry": entries}
    raw = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if len(cuts) % 2 else 0)
    got: list[Any] = []
    stream = _JsonStream(got.append)
    at = 0
    for cut in sorted(set(cuts)):
        stream.feed(raw[at:cut])
        at = max(at, cut)
    stream.feed(raw[at:])
    stream.feed(b"", final=True)
    assert got == entries
    assert stream.result() == members


def test_a_number_cut_by_a_chunk_boundary_is_read_whole() -> None:
    """Found by the property above: '-1' | '0' was read as -1, then '0' as malformed."""
    stream = _JsonStream(None)
    stream.feed(b'{"resourceType": -1')
    stream.feed(b'0, "entry": [1')
    stream.feed(b"2]}", final=True)
    assert stream.result() == {"resourceType": -10, "entry": [12]}


@pytest.mark.parametrize(
    "raw",
    [b"[1]", b'{"a":1}x', b'{"a":NaN}', b'{"a":"\\ud800"}', b'{"a":1,}', b'{"a":1', b"\xff{}"],
)
def test_the_stream_reader_refuses_what_orjson_refuses(raw: bytes) -> None:
    with pytest.raises(_Malformed):
        _JsonStream(None).feed(raw, final=True)


def test_the_stream_reader_stops_at_the_nesting_limit() -> None:
    for depth in (100, 5000):
        stream = _JsonStream(None)
        with pytest.raises(Unreadable, match="nested deeper"):
            stream.feed(b'{"entry":[' + b"[" * depth + b"]" * depth + b"]}", final=True)


def test_an_oversized_fhir_answer_is_unreadable_not_held_in_memory(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from tests.support.fake_fhir import FaultServer, Reply, ehr_body, seed_routes

    padding = {"resourceType": "Basic", "id": "pad", "text": {"div": "x" * 3_000_000}}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": padding}]}
    settings = make_settings(demo=True, fetch_max_bytes=1_000_000)
    with (
        ValidatingClient(create_app(settings)) as c,
        FaultServer({**seed_routes(), "Observation": Reply(body=bundle)}) as fake,
    ):
        r = c.post(SIGN, json=ehr_body(fake.base_url))
        assert r.status_code == 412, r.text
        assert "observations" in problem(r.json())
        assert "1000000 bytes" in problem(r.json())
