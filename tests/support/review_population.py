"""The 1 000-patient generated export the review tests check both engines on, made once per test
session, and each engine's `ivig-cds review` of it, run once (tests/unit/review/test_bulk.py and
tests/integration/review/test_spark.py share them: generating and reviewing is most of their time).

Filler-free records (about 30 resources a patient) keep it quick; one bad line is added, and the
local engine loads it in 1 MiB chunks, so the large files are parsed as byte ranges by both
workers. No report pages (their IgG chart costs more than the determination): the small tests
check those.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.review import group
from tools import bulk_export

PATIENTS = 1000
AS_OF = "2025-11-20"  # the scenarios' authoredOn: the date their goldens were made on


@dataclass(frozen=True)
class Population:
    export: Path
    counts: Counter[str]  # expected patients per outcome (not-on-ig included)
    bad_file: Path  # its line 2 is not JSON


@dataclass(frozen=True)
class Reviewed:
    out: Path
    exit_code: int
    output: str

    def lines(self) -> dict[str, str]:
        """determinations.ndjson as written: patient -> the line's text."""
        text = (self.out / "determinations.ndjson").read_text().splitlines()
        by_patient = {json.loads(x)["patient"]: x for x in text}
        assert len(by_patient) == len(text), "a patient written twice"
        return by_patient


_MADE: dict[str, Any] = {}


def population(factory: pytest.TempPathFactory) -> Population:
    if "population" not in _MADE:
        export = factory.mktemp("population") / "export"
        counts = bulk_export.write_export(export, PATIENTS, files_per_type=2)
        bad_file = export / "Observation.001.ndjson"
        rows = bad_file.read_text().splitlines()
        rows.insert(1, "{broken")
        bad_file.write_text("\n".join(rows) + "\n")
        _MADE["population"] = Population(export, counts, bad_file)
    made: Population = _MADE["population"]
    return made


def reviewed(factory: pytest.TempPathFactory, engine: str) -> Reviewed:
    """`ivig-cds review` of the population with `engine` (local: 2 workers; spark: local[2])."""
    if engine not in _MADE:
        pop = population(factory)
        out = factory.mktemp(f"review-{engine}")
        args = ["review", str(pop.export), "--out", str(out), "--as-of", AS_OF]
        args += ["--no-reports", "--quiet", "--engine", engine]
        args += ["--jobs", "2"] if engine == "local" else ["--spark-master", "local[2]"]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(group, "CHUNK_BYTES", 2**20)
            result = CliRunner().invoke(main, args)
        _MADE[engine] = Reviewed(out, result.exit_code, result.output)
    made: Reviewed = _MADE[engine]
    return made


def outcome_counts(lines: dict[str, str]) -> Counter[str]:
    got = Counter(json.loads(x)["determination"]["outcome"] for x in lines.values())
    got["not-on-ig"] = PATIENTS - len(lines)
    return got
