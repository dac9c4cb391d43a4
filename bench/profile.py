"""Profile order-sign in-process with cProfile: `python -m bench.profile 200 [repeats]`.

Runs what the HTTP route runs for the benchmark's record of the given size (no HTTP): the
evaluation with report links, the evaluation record written to a throw-away SQLite database
(as `ivig-cds serve` does before it answers) and the response serialised with orjson. Prints
the mean wall time per request of each step without the profiler, then the top functions by
cumulative and by own time; the evidence for the optimisations described in the README.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench import records
from cds_service.app import pipeline_from_settings
from cds_service.core.settings import Settings
from cds_service.storage import Storage


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else max(3, 20_000 // max(n, 1))
    pipeline = pipeline_from_settings(Settings())
    bodies = [orjson.dumps(records.order_sign_request(n, seed)) for seed in range(7, 11)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Storage(f"sqlite:///{Path(tmp) / 'profile.db'}")

        def one(i: int, record: bool = True) -> bytes:
            answer = pipeline.answer("ivig-order-sign", bodies[i % len(bodies)], reports=True)
            if record and answer.evaluation is not None:
                store.record(answer.evaluation)
            return orjson.dumps(answer.response)

        for i in range(5):  # warm-up
            one(i)
        timings = {}
        for label, record in (("evaluate + respond", False), ("... + evaluation record", True)):
            t0 = time.perf_counter()
            for i in range(repeats):
                one(i, record)
            timings[label] = (time.perf_counter() - t0) * 1000.0 / repeats
        prof = cProfile.Profile()
        prof.enable()
        for i in range(repeats):
            one(i)
        prof.disable()
        store.close()
    print(f"order-sign, {n} resources, {repeats} requests (no HTTP)")
    for label, ms in timings.items():
        print(f"  {label:<26} {ms:6.2f} ms per request")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
