"""One slow or hung FHIR server costs its own requests, never another tenant's (issue 13, item 1).

The service runs under uvicorn on loopback (as deployed: one process, its thread pools) and is
called from several client threads at once: two tenants whose FHIR servers trickle their answers a
byte at a time, two whose servers never answer, and one healthy tenant. Before the per-server limit
on fetch workers, the hostile tenants' queries held every shared worker and the healthy tenant got
412 "not read within the time budget" for as long as the attack lasted.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
import uvicorn

from cds_service.app import create_app
from tests.conftest import make_settings
from tests.support.fake_fhir import FaultServer, Reply, ehr_body, searchset, seed_routes

BUDGET = 1.0
MARGIN = 1.0  # generous: the machine running the suite may be busy
WORKERS = 16  # the shared pool as it was when one tenant could starve the others
PER_SERVER = 3  # 4 hostile tenants x 3 = 12 workers at most; 4 stay free for everyone else


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def service_url() -> Iterator[str]:
    settings = make_settings(
        demo=True,
        fetch_budget_s=BUDGET,
        fetch_timeout_s=BUDGET,
        fetch_workers=WORKERS,
        fetch_workers_per_server=PER_SERVER,
    )
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", workers=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/cds-services/ivig-order-sign"
    server.should_exit = True
    thread.join(timeout=10)


def _call(session: requests.Session, url: str, fhir_server: str) -> tuple[int, float]:
    t0 = time.monotonic()
    r = session.post(url, json=ehr_body(fhir_server), timeout=30)
    return r.status_code, time.monotonic() - t0


def _attack(
    url: str, fhir_server: str, stop: threading.Event, seen: list[tuple[int, float]]
) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            seen.append(_call(session, url, fhir_server))


def test_a_healthy_tenant_is_served_as_usual_while_four_servers_misbehave(
    service_url: str,
) -> None:
    trickle = Reply(body=searchset([]), trickle=0.2)  # a byte every 0.2 s: never finishes
    hung = Reply(body=searchset([]), delay=60)  # accepts the connection, never answers
    with ExitStack() as stack:
        healthy = stack.enter_context(FaultServer(seed_routes()))
        hostile = [
            stack.enter_context(FaultServer({"*": r})) for r in (trickle, trickle, hung, hung)
        ]
        with requests.Session() as session:
            _call(session, service_url, healthy.base_url)  # warm-up (connections, imports)
            calm = [_call(session, service_url, healthy.base_url) for _ in range(4)]
        assert all(status == 200 for status, _ in calm), calm
        calm_worst = max(t for _, t in calm)

        stop = threading.Event()
        hostile_seen: list[tuple[int, float]] = []
        attackers = [
            threading.Thread(target=_attack, args=(service_url, srv.base_url, stop, hostile_seen))
            for srv in hostile
            for _ in range(3)  # three concurrent calls per hostile tenant, all the time
        ]
        for t in attackers:
            t.start()
        try:
            time.sleep(BUDGET)  # the hostile tenants' queries now hold what they can
            with requests.Session() as session:
                under_attack: list[tuple[int, Any]] = []
                for _ in range(6):
                    under_attack.append(_call(session, service_url, healthy.base_url))
        finally:
            stop.set()
            for t in attackers:
                t.join(timeout=BUDGET + 30)
    assert [s for s, _ in under_attack] == [200] * len(under_attack), under_attack
    worst = max(t for _, t in under_attack)
    # measured: 0.05-0.08 s calm, 0.05-0.35 s under attack (before the limit: 412 after ~1.1 s);
    # 1.14 s once on a 2-core machine running five test suites: the bound leaves room for that,
    # the statuses above are what the attack used to break
    assert worst < max(1.5 * BUDGET, calm_worst + 1.0), (calm, under_attack)
    # the hostile tenants' own answers still come on time (412: nothing could be read)
    assert hostile_seen, "the attack sent no request"
    assert {s for s, _ in hostile_seen} <= {412, 200}, hostile_seen
    assert max(t for _, t in hostile_seen) < BUDGET + MARGIN, sorted(t for _, t in hostile_seen)
