"""`ivig-cds review --engine spark` (pyspark local mode) gives what the local engine gives.

Needs the `spark` extra and Java 17+; skipped without them on a developer's machine, never in CI
(CI=true: .ci/run installs both, so a missing one fails here)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.review import run
from cds_service.review.source import ndjson_files
from tools import bulk_export

if not os.environ.get("CI"):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH", allow_module_level=True)

AS_OF = dt.date(2025, 11, 20)


def test_spark_engine_agrees_with_the_local_engine(tmp_path: Path) -> None:
    export = tmp_path / "export"
    counts = bulk_export.write_export(export, 45, files_per_type=2)
    path = export / "Observation.001.ndjson"
    rows = path.read_text().splitlines()
    rows.insert(1, "{broken")
    path.write_text("\n".join(rows) + "\n")
    local = run.review(ndjson_files(export), tmp_path / "local", as_of=AS_OF, jobs=1)
    result = CliRunner().invoke(
        main,
        [
            "review",
            str(export),
            "--out",
            str(tmp_path / "spark"),
            "--engine",
            "spark",
            "--spark-master",
            "local[2]",
            "--as-of",
            "2025-11-20",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"skipped bad line {path}:2: not JSON" in result.output
    assert [(b.path, b.line) for b in local.bad_lines] == [(str(path), 2)]
    assert f"skipped bad line {local.bad_lines[0]}" in result.output  # the same words

    def lines(out: Path) -> dict[str, str]:
        text = (out / "determinations.ndjson").read_text().splitlines()
        return {json.loads(x)["patient"]: x for x in text}

    spark_lines, local_lines = lines(tmp_path / "spark"), lines(tmp_path / "local")
    assert spark_lines == local_lines  # the same bytes per patient
    assert len(spark_lines) == 45 - counts["not-on-ig"]
    assert sorted((tmp_path / "spark" / "summary.csv").read_text().splitlines()) == sorted(
        (tmp_path / "local" / "summary.csv").read_text().splitlines()
    )
    reports = sorted(p.name for p in (tmp_path / "spark" / "reports").iterdir())
    assert reports == sorted(p.name for p in (tmp_path / "local" / "reports").iterdir())
