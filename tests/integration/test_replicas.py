"""Two replicas, as behind a hospital's load balancer: two `ivig-cds serve` processes started at
the same moment on one empty PostgreSQL database. Both come up (one migrates, the other waits
for the lock), a token replayed on the other replica is refused, a report made on one opens on
the other, feedback given on both is all there, and the two-worker replica's metrics add up
across its processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, database_url, problem
from tests.support.jwt import BASE, ISS, SIGN, bearer, jwks, token

FEEDBACK = SIGN + "/feedback"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Replica:
    def __init__(self, name: str, env: dict[str, str], workers: int, logs: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = logs / f"{name}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Replica]]:
    tmp = tmp_path_factory.mktemp("replicas")
    url = database_url("postgresql", tmp)  # empty: no tables yet
    jwks_file = tmp / "jwks.json"
    jwks_file.write_text(json.dumps(jwks()))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("IVIG_CDS_") and k not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env |= {
        "IVIG_CDS_DATABASE_URL": url,
        "IVIG_CDS_JWT_ISSUERS": json.dumps({ISS: str(jwks_file)}),
        "IVIG_CDS_PUBLIC_BASE_URL": BASE,  # both behind one load balancer
        "IVIG_CDS_LOG_FORMAT": "json",
    }
    a = Replica("a", env, 2, tmp)
    b = Replica("b", env, 1, tmp)  # started together: both migrate the empty database at once
    try:
        deadline = time.monotonic() + 120
        while not (a.ready() and b.ready()):
            assert time.monotonic() < deadline, "replicas did not become ready"
            time.sleep(0.3)
        yield a, b
    finally:
        a.stop()
        b.stop()


def _post(r: Replica, path: str, body: dict[str, Any], tok: str) -> httpx.Response:
    return httpx.post(r.url + path, json=body, headers=bearer(tok), timeout=60)


def _comment(card: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"userComment": text},
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
    }


def test_two_replicas_share_tokens_reports_and_feedback(
    replicas: tuple[Replica, Replica], seed_request: dict[str, Any]
) -> None:
    a, b = replicas
    tok = token()
    first = _post(a, SIGN, seed_request, tok)
    assert first.status_code == 200, first.text
    replayed = _post(b, SIGN, seed_request, tok)
    assert replayed.status_code == 401
    assert "replay" in problem(replayed.json())

    cards = first.json()["cards"]
    link = next(x["url"] for x in cards[0]["links"] if "/reports/" in x["url"])
    report = "/reports/" + link.rsplit("/reports/", 1)[1]
    assert httpx.get(b.url + report, timeout=30).status_code == 200  # made on a, opened on b

    assert (
        _post(
            a, FEEDBACK, {"feedback": [_comment(cards[0], "given-on-a")]}, token(FEEDBACK)
        ).status_code
        == 200
    )
    assert (
        _post(
            b, FEEDBACK, {"feedback": [_comment(cards[1], "given-on-b")]}, token(FEEDBACK)
        ).status_code
        == 200
    )
    for r in (a, b):
        html = httpx.get(r.url + report, timeout=30).text
        assert "given-on-a" in html
        assert "given-on-b" in html


def test_metrics_add_up_across_worker_processes(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    for _ in range(12):  # a new connection each: the kernel spreads them over a's two workers
        assert httpx.get(a.url + "/healthz", timeout=10).status_code == 200
    text = httpx.get(a.url + "/metrics", timeout=10).text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('ivig_cds_requests_total{endpoint="healthz",service="",status="200"}')
    )
    assert float(line.split()[-1]) == 12


def test_replica_logs_are_json_lines_without_tokens(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    for r in (a, b):
        lines = [x for x in r.log.read_text().splitlines() if x.strip()]
        assert lines
        entries = [json.loads(x) for x in lines]  # every line one JSON object
        assert all("timestamp" in e and "level" in e for e in entries)
        access = [e for e in entries if e["event"] == "access"]
        assert access
        assert all(e["request_id"] for e in access)
        assert "eyJ" not in r.log.read_text()  # no JWT (header.payload.signature) was logged
