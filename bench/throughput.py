"""Throughput at 1 and N worker processes (`make bench-throughput`).

For each worker count the real service is started (`ivig-cds serve --workers W`, demo mode, a
throw-away SQLite database), then 32 clients, each on its own keep-alive connection, send
order-sign requests with full prefetch of a 200-resource record (8 different records, in turn)
for a fixed time, while another process asks for discovery every 50 ms. Reported: requests per
second, order-sign p50/p99, and discovery p50 idle (before the load) and under load. Targets
(issue 14): discovery p50 under load within 3x idle; throughput rising with workers up to the
machine's cores. The 32 client threads run on the same machine and take CPU from the service.

Output: a table, and bench/throughput.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import records
from bench.run import HERE, Client, bench_env, free_port, percentile, service_argv, start_server

CLIENTS = 32
RESOURCES = 200
VARIANTS = 8
PROBE_EVERY_S = 0.05


def _discovery_ms(conn: http.client.HTTPConnection) -> float:
    t0 = time.perf_counter()
    conn.request("GET", "/cds-services")
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"discovery answered HTTP {resp.status}")
    return (time.perf_counter() - t0) * 1000.0


def probe(port: int, seconds: float) -> None:
    """(--probe) Discovery every 50 ms for `seconds`, after 1 s of load; latencies on stdout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    _discovery_ms(conn)
    time.sleep(1.0)  # let the load build up first
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(_discovery_ms(conn))
        time.sleep(PROBE_EVERY_S)
    print(json.dumps(out))


def run(workers: int, bodies: list[bytes], seconds: float, log_dir: Path) -> dict[str, Any]:
    db = log_dir / f"throughput-{workers}.db"
    for leftover in log_dir.glob(db.name + "*"):
        leftover.unlink()
    env = bench_env(IVIG_CDS_DATABASE_PATH=str(db), IVIG_CDS_WORKERS=str(workers))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # N workers each load the knowledge after the parent checked it: allow for a busy machine
    server = start_server(
        f"service-{workers}w", service_argv(free_port()), env, log_dir, timeout=180
    )
    try:
        probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        _discovery_ms(probe)
        clients = [Client(server.port) for _ in range(CLIENTS)]
        for c in clients:  # connect (and warm every worker) before the clock starts
            c.timed(bodies[0])
        idle = [_discovery_ms(probe) for _ in range(100)]
        stop = threading.Event()
        lat: list[list[float]] = [[] for _ in clients]
        under_load: list[float] = []
        errors: list[BaseException] = []

        def work(i: int) -> None:
            k = i
            try:
                while not stop.is_set():
                    lat[i].append(clients[i].timed(bodies[k % len(bodies)]))
                    k += 1
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(CLIENTS)]
        # the discovery probe is its own process: in this one it would wait for the 32
        # clients' threads (their GIL), and measure that instead of the service
        prober = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.throughput",
                "--probe",
                str(server.port),
                "--seconds",
                str(seconds - 1.5),
            ],
            cwd=HERE.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        under_load.extend(json.loads(prober.communicate(timeout=60)[0]))
        wall = time.perf_counter() - t0
        for c in clients:
            c.close()
        probe.close()
        if errors:
            raise errors[0]
    finally:
        server.stop()
    flat = [x for xs in lat for x in xs]
    return {
        "workers": workers,
        "clients": CLIENTS,
        "resources": RESOURCES,
        "requests": len(flat),
        "rps": round(len(flat) / wall, 1),
        "p50_ms": round(percentile(flat, 50), 1),
        "p99_ms": round(percentile(flat, 99), 1),
        "discovery_idle_p50_ms": round(statistics.median(idle), 2),
        "discovery_load_p50_ms": round(statistics.median(under_load), 2),
        "discovery_load_samples": len(under_load),
    }


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=sorted({1, cores}))
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per worker count")
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe, args.seconds)
        return
    log_dir = HERE / ".logs"
    log_dir.mkdir(exist_ok=True)
    bodies = [
        json.dumps(records.order_sign_request(RESOURCES, seed), separators=(",", ":")).encode()
        for seed in range(VARIANTS)
    ]
    results = [run(w, bodies, args.seconds, log_dir) for w in args.workers]
    print(f"{CLIENTS} clients, {RESOURCES} resources, {args.seconds:g} s each, {cores} cores")
    print(
        f"{'workers':>7} {'rps':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'disc idle p50':>14} {'disc load p50':>14} {'ratio':>6}"
    )
    for r in results:
        ratio = r["discovery_load_p50_ms"] / max(r["discovery_idle_p50_ms"], 0.01)
        r["discovery_ratio"] = round(ratio, 2)
        print(
            f"{r['workers']:>7} {r['rps']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} "
            f"{r['discovery_idle_p50_ms']:>14} {r['discovery_load_p50_ms']:>14} {ratio:>6.2f}"
        )
    base = results[0]["rps"]
    for r in results[1:]:
        print(
            f"throughput {r['workers']} vs {results[0]['workers']} workers: {r['rps'] / base:.2f}x"
        )
    for r in results:
        held = "holds" if r["discovery_ratio"] <= 3 else "MISSED"
        print(f"discovery under load within 3x idle at {r['workers']} workers: {held}")
    out = HERE / "throughput.json"
    out.write_text(json.dumps({"cores": cores, "results": results}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
