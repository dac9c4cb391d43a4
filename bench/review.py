"""`make bench-review`: `ivig-cds review` throughput and peak memory on synthetic Bulk exports.

For each size (patients, each about 140 resources: the scenario records plus filler vital signs)
a fresh export is generated (tools/bulk_export.py), then `ivig-cds review` runs as a subprocess
from an empty output directory: the local engine with 1 worker and with every core, and Spark in
local mode on every core (when pyspark is installed). Timed: the whole command
(loading the export into the grouping, evaluating, reports, summary). Peak memory: the largest sum
of RSS over the command's process tree, sampled every 50 ms (psutil). The expected outcome counts
are checked against the command's determinations.

Writes the table to the terminal, bench/review-results.json and bench/review.png
(`--no-reports`: the runs without report pages, to *-no-reports.json / .png).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from tools import bulk_export

HERE = Path(__file__).resolve().parent
FILLER = 110  # filler vital signs per patient: ~150 resources per record


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_once(
    export: Path, out: Path, engine: str, jobs: int, reports: bool = True
) -> tuple[float, float, float]:
    """(seconds, peak MB, CPU seconds) of one `ivig-cds review` run. CPU time, summed over the
    command and the children it waited for (its workers), says what the run costs whatever else
    the machine is doing; on a busy machine the wall time mostly says how busy it was. (Spark's
    JVM and its Python workers are not waited for: their CPU time is not counted.)"""
    cmd = [
        str(Path(sys.executable).parent / "ivig-cds"),
        "review",
        str(export),
        "--out",
        str(out),
        "--as-of",
        "2025-11-20",
        "--engine",
        engine,
        "--quiet",
    ]
    cmd += ["--jobs", str(jobs)] if engine == "local" else ["--spark-master", f"local[{jobs}]"]
    cmd += [] if reports else ["--no-reports"]
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, tree_rss(ps))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"review failed: {err.strip()}")
    return wall, peak / 2**20, cpu


def check(out: Path, expected: Counter[str], patients: int) -> None:
    got: Counter[str] = Counter()
    with (out / "determinations.ndjson").open() as f:
        for line in f:
            got[json.loads(line)["determination"]["outcome"]] += 1
    got["not-on-ig"] = patients - sum(got.values())
    if got != expected:
        raise SystemExit(f"outcome counts differ: {dict(got)} != {dict(expected)}")


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for run in sorted({(r["engine"], r["jobs"]) for r in rows}):
        mine = [r for r in rows if (r["engine"], r["jobs"]) == run]
        xs = [r["patients"] for r in mine]
        label = f"{run[0]}, {run[1]} core(s)"
        a.plot(xs, [r["seconds"] for r in mine], marker="o", label=label)
        b.plot(xs, [r["peak_mb"] for r in mine], marker="o", label=label)
    a.set(
        xlabel="patients",
        ylabel="seconds (whole command)",
        title="time",
        xscale="log",
        yscale="log",
    )
    b.set(xlabel="patients", ylabel="peak RSS, all processes (MB)", title="memory", xscale="log")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--runs",
        default=f"local:1,local:{cores},spark:{cores}",
        help="engine:cores, comma-separated (spark runs only when pyspark is installed)",
    )
    parser.add_argument(
        "--no-reports",
        action="store_true",
        help="review --no-reports: the load and the determinations without the report pages "
        "(their IgG chart is most of the time per patient); results go to *-no-reports.*",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [(e, int(j)) for e, j in (r.split(":") for r in args.runs.split(","))]
    if importlib.util.find_spec("pyspark") is None:
        runs = [r for r in runs if r[0] != "spark"]
    rows: list[dict[str, Any]] = []
    print(
        f"{'patients':>9}{'resources':>11}{'engine':>8}{'cores':>7}{'seconds':>9}{'patients/s':>12}"
        f"{'peak MB':>9}{'CPU s':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="ivig-review-bench-") as tmp:
        for size in sizes:
            export = Path(tmp) / f"export-{size}"
            expected = bulk_export.write_export(export, size, filler=FILLER, expected_file=False)
            resources = sum(1 for p in export.glob("*.ndjson") for _ in p.open())
            for engine, jobs in runs:
                out = Path(tmp) / f"out-{size}-{engine}-{jobs}"
                seconds, peak, cpu = run_once(export, out, engine, jobs, not args.no_reports)
                check(out, expected, size)
                row = {
                    "patients": size,
                    "resources": resources,
                    "engine": engine,
                    "jobs": jobs,
                    "reports": not args.no_reports,
                    "seconds": round(seconds, 2),
                    "patients_per_s": round(size / seconds, 1),
                    "peak_mb": round(peak, 1),
                    "cpu_s": round(cpu, 1) if engine == "local" else None,
                }
                rows.append(row)
                print(
                    f"{size:>9}{resources:>11}{engine:>8}{jobs:>7}{seconds:>9.1f}"
                    f"{row['patients_per_s']:>12}{row['peak_mb']:>9}{row['cpu_s'] or '-':>8}",
                    flush=True,
                )
    suffix = "-no-reports" if args.no_reports else ""
    results, png = HERE / f"review-results{suffix}.json", HERE / f"review{suffix}.png"
    results.write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    chart(rows, png)
    print(f"wrote {results} and {png}")


if __name__ == "__main__":
    main()
