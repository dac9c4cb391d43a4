"""Differential check for behaviour-preserving changes (speed work, refactors): every answer the
service gives to a fixed, seeded corpus of requests, written one canonical line per request, so
two revisions are compared with `cmp` or `python -m bench.differential compare A B`.

The corpus: every fixture request on every service (order-sign and order-select); per fixture,
seeded mutations of its prefetch (an element dropped, or set to a value of another type: what real
records and fuzzers send); and the benchmark's synthetic records at several sizes and seeds. A line
holds the label, the response (or the error's class, status and message) and what is stored of
the evaluation (outcome, determination, report facts), tab-separated, with uuids and report ids
blanked: they differ per call.

    python -m bench.differential record /tmp/before.txt     # on the old revision
    python -m bench.differential record /tmp/after.txt      # on the new one
    python -m bench.differential compare /tmp/before.txt /tmp/after.txt
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import records
from cds_service.app import pipeline_from_settings
from cds_service.core.errors import CdsError
from cds_service.core.settings import Settings
from cds_service.service import Pipeline

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
# values a mutated element takes: absent, null, and each JSON type (a date, a coding, a number)
ODD_VALUES: tuple[Any, ...] = (
    None,
    0,
    "x",
    "2024-01-01",
    {},
    [],
    {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
    1.5,
    True,
)
SIZES = ((10, 8), (60, 8), (200, 8), (1000, 2))  # (resources, seeds) of the synthetic records
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REPORT = re.compile(r"/reports/[A-Za-z0-9_-]{24}")


def _slots(node: Any, depth: int = 0) -> list[tuple[Any, Any]]:
    """Every (container, key) below `node`, six levels deep."""
    found: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        found.append((node, key))
        if isinstance(value, dict | list) and depth < 6:
            found.extend(_slots(value, depth + 1))
    return found


def mutations(request: dict[str, Any], count: int, seed: str) -> Iterator[dict[str, Any]]:
    """`count` copies of `request`, each with one prefetch element dropped or replaced (seeded:
    the same copies on every run and revision)."""
    rng = random.Random(seed)
    for _ in range(count):
        changed = copy.deepcopy(request)
        slots = _slots(changed.get("prefetch") or {})
        if not slots:
            return
        container, key = rng.choice(slots)
        if rng.random() < 0.5:
            del container[key]
        else:
            container[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        yield changed


def corpus(
    services: list[str], per_fixture: int = 100, sizes: tuple[tuple[int, int], ...] = SIZES
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(label, service id, request) of the whole corpus, in a fixed order."""
    for path in sorted(FIXTURES.rglob("*request*.json")):
        request = orjson.loads(path.read_bytes())
        name = str(path.relative_to(ROOT))
        for service in services:
            yield f"{name}:{service}", service, request
        for i, changed in enumerate(mutations(request, per_fixture, name)):
            yield f"{name}:mutation{i}", services[0], changed
    for n, seeds in sizes:
        for seed in range(1, seeds + 1):
            yield f"bench:{n}:{seed}", services[0], records.order_sign_request(n, seed)


def canonical(value: Any) -> str:
    """Sorted-key JSON with the per-call identifiers (uuids, report ids) blanked."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return _REPORT.sub("/reports/R", _UUID.sub("U", text))


def answer_line(pipeline: Pipeline, service: str, request: dict[str, Any]) -> str:
    """What the service answers and stores for one request, or the error it answers with."""
    try:
        answer = pipeline.answer(service, orjson.dumps(request), reports=True)
    except CdsError as exc:
        return f"ERR {type(exc).__name__} {exc.status_code} {exc.message[:300]}"
    line = canonical(answer.response)
    ev = answer.evaluation
    if ev is not None:
        stored = {"o": ev.outcome, "d": ev.determination, "rf": ev.report_facts}
        line += "\t" + canonical(stored)  # JSON text holds no raw tab: the split is exact
    return line


def record(out: Path, per_fixture: int = 100) -> int:
    """Write the corpus's answers to `out`; the number of requests."""
    pipeline = pipeline_from_settings(Settings(demo=True))
    services = [s["id"] for s in pipeline.discovery()["services"]]
    n = 0
    with out.open("w") as fh:
        for label, service, request in corpus(services, per_fixture):
            fh.write(f"{label}\t{answer_line(pipeline, service, request)}\n")
            n += 1
    return n


def compare(before: Path, after: Path, show: int = 5) -> list[str]:
    """Labels whose answers differ (or that only one side has), the first `show` of them."""
    old = dict(line.split("\t", 1) for line in before.read_text().splitlines())
    new = dict(line.split("\t", 1) for line in after.read_text().splitlines())
    differ = [k for k in old.keys() | new.keys() if old.get(k) != new.get(k)]
    return sorted(differ)[:show] if show else sorted(differ)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write this revision's answers")
    rec.add_argument("out", type=Path)
    rec.add_argument("--mutations", type=int, default=100, help="per fixture (default 100)")
    cmp_ = sub.add_parser("compare", help="labels whose answers differ")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        print(f"{record(args.out, args.mutations)} answers written to {args.out}")
        return
    differ = compare(args.before, args.after, show=0)
    if differ:
        print(f"{len(differ)} answers differ, e.g.:", *differ[:10], sep="\n  ")
        sys.exit(1)
    print("identical")


if __name__ == "__main__":
    main()
