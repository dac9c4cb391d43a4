"""Profile order-sign in-process with cProfile: `python -m bench.profile 200 [repeats]`.

Evaluates the benchmark's record of the given size (no HTTP) and prints the top functions by
cumulative and by own time; the evidence for the optimisations described in the README.
"""

from __future__ import annotations

import cProfile
import pstats
import sys

import orjson

from bench import records
from cds_service.app import create_app
from cds_service.settings import Settings


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else max(3, 20_000 // max(n, 1))
    engine = create_app(Settings()).state.engine
    bodies = [orjson.dumps(records.order_sign_request(n, seed)) for seed in range(7, 11)]
    engine.respond("ivig-order-sign", bodies[0])  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    for i in range(repeats):
        engine.respond("ivig-order-sign", bodies[i % len(bodies)])
    prof.disable()
    stats = pstats.Stats(prof, stream=sys.stdout)
    print(f"order-sign, {n} resources, {repeats} requests")
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
