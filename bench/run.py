"""`make bench`: order-sign latency of the service as ratios against a floor, 10 to 5 000 resources.

One run starts two uvicorn processes on loopback: the service (`ivig-cds serve`, IVIG_CDS_DEMO=true)
and the floor (bench/floor.py: same stack, parses the body, answers no cards). For each record size
it sends the same pre-serialised order-sign request to both, first sequentially (service and floor
alternate, so drift hits both alike) for the p50/p99 latencies and their ratios, then from 8
concurrent clients (one keep-alive connection each) for requests per second. Peak RSS is the service
process's high-water mark during that size (VmHWM after resetting it; psutil sampling elsewhere).
Then the FHIR-fetch path is measured (bench/fetch.py) against two servers holding the same record:
the local sekmet FHIR server (which answers one request at a time) and a fake FHIR server that
answers concurrently after 20 ms per request (the service's own concurrency).

Writes the table to the terminal, bench/results.json and bench/latency.png.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVICE_PATH = "/cds-services/ivig-order-sign"
CONCURRENCY = 8
VARIANTS = 8
# Time budget per size and phase (seconds) and sample bounds; big records get fewer samples.
SEQ_SECONDS, SEQ_MIN, SEQ_MAX = 6.0, 30, 400
CONC_SECONDS, CONC_MIN, CONC_MAX = 4.0, 40, 800


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------------------
# processes


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_healthy(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n"
                + server.log.read_text(errors="replace")[-3000:]
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} not healthy after {timeout} s")


def start_server(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, timeout: float = 30.0
) -> Server:
    log = log_dir / f"{name}.log"
    port = int(argv[-1])
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, port, proc, log)
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def service_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from cds_service.cli import main; main()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def floor_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.floor", "--port", str(port)]


def bench_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("IVIG_CDS_") and k != "DATABASE_URL"
    }
    # one process: these latency runs compare one uvicorn process with the floor
    env.update(
        IVIG_CDS_DEMO="true",
        IVIG_CDS_LOG_LEVEL="WARNING",
        IVIG_CDS_WORKERS="1",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@contextmanager
def servers(log_dir: Path) -> Iterator[tuple[Server, Server]]:
    # the service records every evaluation (feedback, reports) before answering: a fresh
    # throw-away database, not ./ivig-cds.db
    env = bench_env(IVIG_CDS_DATABASE_PATH=str(log_dir / "bench-evaluations.db"))
    for leftover in log_dir.glob("bench-evaluations.db*"):
        leftover.unlink()
    service = start_server("service", service_argv(free_port()), env, log_dir)
    try:
        floor = start_server("floor", floor_argv(free_port()), env, log_dir)
        try:
            yield service, floor
        finally:
            floor.stop()
    finally:
        service.stop()


# ---------------------------------------------------------------------------------------------
# memory


class PeakRss:
    """High-water RSS of one process: VmHWM (reset per size via clear_refs) plus psutil sampling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil  # type: ignore[import-untyped,unused-ignore]

            self._proc: Any = psutil.Process(pid)
        except ImportError:  # bench extra not installed: /proc only
            self._proc = None

    def _vm(self, key: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _rss(self) -> int:
        if self._proc is not None:
            return int(self._proc.memory_info().rss)
        return self._vm("VmRSS") or 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.sampled = max(self.sampled, self._rss())

    def __enter__(self) -> PeakRss:
        with contextlib.suppress(OSError):  # "5" resets the peak RSS counter (Linux >= 4.0)
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.sampled = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mb(self) -> float:
        hwm = self._vm("VmHWM") or 0
        return round(max(hwm, self.sampled) / 2**20, 1)


# ---------------------------------------------------------------------------------------------
# clients


class Client:
    """One keep-alive HTTP/1.1 connection (a pool of one; one per client thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(
                    "POST", SERVICE_PATH, body=body, headers={"Content-Type": "application/json"}
                )
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def timed(self, body: bytes) -> float:
        t0 = time.perf_counter()
        status, data = self.post(body)
        elapsed = (time.perf_counter() - t0) * 1000.0
        if status != 200:
            raise RuntimeError(f"HTTP {status} from port {self.port}: {data[:500]!r}")
        return elapsed

    def close(self) -> None:
        self.conn.close()


def sequential(
    service: Client, floor: Client, bodies: list[bytes], quick: bool
) -> tuple[list[float], list[float]]:
    """Alternate service and floor requests until the time budget or the sample bounds."""
    svc: list[float] = []
    flo: list[float] = []
    budget = SEQ_SECONDS / (2 if quick else 1)
    gc.collect()
    gc.disable()  # the client's own collector pauses must not count against either server
    try:
        start = time.perf_counter()
        while len(svc) < SEQ_MAX and (len(svc) < SEQ_MIN or time.perf_counter() - start < budget):
            body = bodies[len(svc) % len(bodies)]
            svc.append(service.timed(body))
            flo.append(floor.timed(body))
    finally:
        gc.enable()
    return svc, flo


def concurrent(
    port: int, bodies: list[bytes], per_request_ms: float, quick: bool
) -> tuple[float, list[float]]:
    """rps and latencies with CONCURRENCY clients, each on its own keep-alive connection."""
    budget = CONC_SECONDS / (2 if quick else 1)
    total = int(budget * 1000.0 / max(per_request_ms, 0.1) * 1.5)
    total = max(CONC_MIN, min(CONC_MAX, total))
    clients = [Client(port) for _ in range(CONCURRENCY)]
    for c in clients:  # connect before the clock starts
        c.timed(bodies[0])
    lat: list[list[float]] = [[] for _ in clients]
    counter = iter(range(total))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                lat[i].append(clients[i].timed(bodies[k % len(bodies)]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(CONCURRENCY)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    flat = [x for xs in lat for x in xs]
    return len(flat) / wall, flat


# ---------------------------------------------------------------------------------------------
# one size


@dataclass
class SizeResult:
    resources: int
    service_p50_ms: float
    service_p99_ms: float
    floor_p50_ms: float
    floor_p99_ms: float
    ratio_p50: float
    ratio_p99: float
    rps: float
    rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "resources": self.resources,
            "service_p50_ms": self.service_p50_ms,
            "service_p99_ms": self.service_p99_ms,
            "floor_p50_ms": self.floor_p50_ms,
            "floor_p99_ms": self.floor_p99_ms,
            "ratio_p50": self.ratio_p50,
            "ratio_p99": self.ratio_p99,
            "rps": self.rps,
            "rss_mb": self.rss_mb,
        }


def measure_size(
    n: int, service: Server, floor: Server, quick: bool, log: Callable[[str], None]
) -> SizeResult:
    # VARIANTS different records of this size (other dates, values, ids), sent in turn: the
    # service is not measured on one body it has seen before
    bodies = [
        json.dumps(records.order_sign_request(n, seed), separators=(",", ":")).encode()
        for seed in range(7, 7 + VARIANTS)
    ]
    svc_client, floor_client = Client(service.port), Client(floor.port)
    with PeakRss(service.pid) as rss:
        for _ in range(3):  # warm-up: connections, lazy imports
            svc_client.timed(bodies[-1])
            floor_client.timed(bodies[-1])
        svc, flo = sequential(svc_client, floor_client, bodies, quick)
        log(f"  {n:>5} resources: {len(svc)} sequential pairs")
        s50 = statistics.median(svc)
        rps, conc = concurrent(service.port, bodies, s50, quick)
        floor_rps, floor_conc = concurrent(floor.port, bodies, statistics.median(flo), quick)
        log(f"  {n:>5} resources: {len(conc)} + {len(floor_conc)} concurrent requests")
    svc_client.close()
    floor_client.close()
    f50, f99, s99 = statistics.median(flo), percentile(flo, 99), percentile(svc, 99)
    return SizeResult(
        resources=n,
        service_p50_ms=round(s50, 2),
        service_p99_ms=round(s99, 2),
        floor_p50_ms=round(f50, 2),
        floor_p99_ms=round(f99, 2),
        ratio_p50=round(s50 / f50, 2),
        ratio_p99=round(s99 / f99, 2),
        rps=round(rps, 1),
        rss_mb=rss.peak_mb,
        extra={
            "body_kb": round(len(bodies[0]) / 1024),
            "samples": len(svc),
            "conc_p50_ms": round(statistics.median(conc), 2),
            "conc_p99_ms": round(percentile(conc, 99), 2),
            "floor_rps": round(floor_rps, 1),
            "floor_conc_p50_ms": round(statistics.median(floor_conc), 2),
        },
    )


# ---------------------------------------------------------------------------------------------
# report


def targets(sizes: list[SizeResult], fetch: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    by_n = {s.resources: s for s in sizes}
    out: list[tuple[str, str, bool | None]] = []
    if 200 in by_n:
        s = by_n[200]
        out.append(("200: service p50 <= 3x floor p50", f"{s.ratio_p50:.2f}x", s.ratio_p50 <= 3))
        out.append(("200: service p99 <= 4x floor p99", f"{s.ratio_p99:.2f}x", s.ratio_p99 <= 4))
    if 10 in by_n and 200 in by_n:
        bound = fixed_path_bound(by_n[10], by_n[200])
        out.append(("200: fixed path alone <= 3x floor p50", f"{bound:.2f}x", bound <= 3))
    if 5000 in by_n:
        s = by_n[5000]
        out.append(("5000: service p50 <= 3x floor p50", f"{s.ratio_p50:.2f}x", s.ratio_p50 <= 3))
    if 200 in by_n and 5000 in by_n:
        growth = (by_n[5000].service_p50_ms / 5000) / (by_n[200].service_p50_ms / 200)
        out.append(("per-resource cost 200->5000 <= 1.5", f"{growth:.2f}", growth <= 1.5))
    for label, res in _fetch_results(fetch):
        name = f"fetch p50 <= 1.5x slowest single query ({label})"
        if res.get("available"):
            r = float(res["ratio"])
            out.append((name, f"{r:.2f}x", r <= 1.5))
        else:
            out.append((name, "n/a", None))
    return out


def fixed_path_bound(small: SizeResult, size: SizeResult) -> float:
    """The least ratio the service could reach at `size` with what it costs at `small` (a few
    resources: HTTP stack, thread hop, rules, cards, the stored record) and no per-resource cost
    beyond the floor's own (reading the body): (service p50 at small + the floor's growth from
    small to size) / floor p50 at size. Above a target, that target cannot be met by reading
    resources faster: only by a cheaper fixed path."""
    floor_growth = size.floor_p50_ms - small.floor_p50_ms
    return (small.service_p50_ms + floor_growth) / size.floor_p50_ms


FETCH_LABELS = {
    "sekmet": "sekmet, serves one request at a time",
    "parallel_server_20ms": "parallel fake server, 20 ms per request",
}


def _fetch_results(fetch: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(FETCH_LABELS.get(k, k), v) for k, v in fetch.items() if isinstance(v, dict)]


def fetch_lines(fetch: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for label, res in _fetch_results(fetch):
        if res.get("available"):
            same = res.get("same_cards_as_prefetch")
            lines += [
                f"FHIR fetch, {label} ({res['resources']} resources, {res['queries']} queries): "
                f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms; slowest single query "
                f"p50 {res['slowest_query_ms']:.2f} ms ({res['slowest_query']}); "
                f"ratio {res['ratio']:.2f}",
                f"  (the same queries: one after another {res['sum_of_queries_ms']:.2f} ms, all "
                f"at once without the service {res['all_queries_concurrently_ms']:.2f} ms"
                + ("" if same is None else f"; same cards as with prefetch: {same}")
                + ")",
            ]
        else:
            lines.append(f"FHIR fetch, {label}: not measured: {res.get('reason')}")
            if "slowest_query_ms" in res:
                lines.append(
                    f"  (slowest single query p50 {res['slowest_query_ms']:.2f} ms, "
                    f"{res['slowest_query']})"
                )
    return lines


def table(sizes: list[SizeResult]) -> str:
    head = (
        f"{'resources':>9} {'body KB':>7} | {'svc p50':>8} {'svc p99':>8} | {'floor p50':>9} "
        f"{'floor p99':>9} | {'x p50':>6} {'x p99':>6} | {'rps(8)':>7} {'c8 p50':>7} "
        f"{'floor rps':>9} | {'RSS MB':>6}"
    )
    lines = [head, "-" * len(head)]
    for s in sizes:
        e = s.extra
        lines.append(
            f"{s.resources:>9} {e['body_kb']:>7} | {s.service_p50_ms:>8.2f}"
            f" {s.service_p99_ms:>8.2f} | {s.floor_p50_ms:>9.2f} {s.floor_p99_ms:>9.2f}"
            f" | {s.ratio_p50:>6.2f}"
            f" {s.ratio_p99:>6.2f} | {s.rps:>7.1f} {e['conc_p50_ms']:>7.1f} {e['floor_rps']:>9.1f}"
            f" | {s.rss_mb:>6.1f}"
        )
    return "\n".join(lines)


def chart(sizes: list[SizeResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s.resources for s in sizes]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.plot(xs, [s.service_p50_ms for s in sizes], "o-", color="C0", label="service p50")
    ax.plot(
        xs, [s.service_p99_ms for s in sizes], "o--", color="C0", alpha=0.6, label="service p99"
    )
    ax.plot(xs, [s.floor_p50_ms for s in sizes], "s-", color="C1", label="floor p50")
    ax.plot(xs, [s.floor_p99_ms for s in sizes], "s--", color="C1", alpha=0.6, label="floor p99")
    if len(xs) > 1:
        base = sizes[0]
        ax.plot(
            xs,
            [base.service_p50_ms * x / base.resources for x in xs],
            ":",
            color="grey",
            label=f"linear from {base.resources}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="resources in prefetch",
        ylabel="latency (ms)",
        title="order-sign latency, sequential",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax2.plot(xs, [s.ratio_p50 for s in sizes], "o-", label="service/floor p50")
    ax2.plot(xs, [s.ratio_p99 for s in sizes], "o--", label="service/floor p99")
    ax2.axhline(3, color="C0", lw=0.8, ls=":", label="target p50 (3x, at 200)")
    ax2.axhline(4, color="C1", lw=0.8, ls=":", label="target p99 (4x, at 200)")
    ax2.set(xscale="log", xlabel="resources in prefetch", ylabel="ratio", title="ratio to floor")
    ax2.set_ylim(bottom=0)
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 resources only (< 1 minute)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="record sizes (default 10 200 1000 5000)"
    )
    parser.add_argument("--no-fetch", action="store_true", help="skip the FHIR-fetch measurement")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--fhir-venv", type=Path, default=ROOT / ".venv-fhir", help="sekmet's venv (fetch path)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--chart", type=Path, default=HERE / "latency.png")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([200] if args.quick else list(records.SIZES))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log_dir = HERE / ".logs"
    log_dir.mkdir(exist_ok=True)
    t0 = time.monotonic()
    results: list[SizeResult] = []
    with servers(log_dir) as (service, floor):
        log(
            f"service pid {service.pid} port {service.port}; floor pid {floor.pid} "
            f"port {floor.port}"
        )
        for n in sizes:
            results.append(measure_size(n, service, floor, args.quick, log))
        if args.no_fetch:
            skipped = {"available": False, "reason": "skipped (--no-fetch)"}
            fetch: dict[str, Any] = {k: dict(skipped) for k in FETCH_LABELS}
        else:
            from bench import fetch as fetch_bench

            fetch = fetch_bench.measure(200, args.quick, log, service.port, args.fhir_venv)
    out = {"sizes": [r.public() for r in results], "fetch": fetch}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table(results))
    print()
    for line in fetch_lines(fetch):
        print(line)
    print()
    for name, value, ok in targets(results, fetch):
        verdict = "n/a" if ok is None else ("HOLDS" if ok else "MISSED")
        print(f"  {verdict:<6} {name}: {value}")
    if not args.no_chart and len(results) >= 1:
        try:
            chart(results, args.chart)
            shown = args.chart.relative_to(ROOT) if args.chart.is_relative_to(ROOT) else args.chart
            print(f"\nchart: {shown}")
        except ImportError:
            log("matplotlib not installed (make bench installs it): no chart")
    print(f"results: {args.out}; {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
