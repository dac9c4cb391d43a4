"""`ivig-cds review --engine spark` (pyspark local mode) gives what the local engine gives.

Needs the `spark` extra and Java 17+; skipped without them on a developer's machine, never in CI
(CI=true: .ci/run installs both, so a missing one fails here)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support import review_population

if not os.environ.get("CI"):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH", allow_module_level=True)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> review_population.Population:
    return review_population.population(tmp_path_factory)


@pytest.fixture(scope="module")
def local_review(tmp_path_factory: pytest.TempPathFactory) -> review_population.Reviewed:
    return review_population.reviewed(tmp_path_factory, "local")


@pytest.fixture(scope="module")
def spark_review(tmp_path_factory: pytest.TempPathFactory) -> review_population.Reviewed:
    return review_population.reviewed(tmp_path_factory, "spark")


def test_spark_engine_gives_expected_counts(
    population: review_population.Population, spark_review: review_population.Reviewed
) -> None:
    """1 000 generated patients on Spark local[2]: the outcomes their scenarios expect."""
    assert spark_review.exit_code == 0, spark_review.output
    assert review_population.outcome_counts(spark_review.lines()) == population.counts
    assert f"skipped bad line {population.bad_file}:2: not JSON" in spark_review.output
    assert "1 bad lines skipped" in spark_review.output


def test_spark_engine_agrees_with_the_local_engine(
    local_review: review_population.Reviewed, spark_review: review_population.Reviewed
) -> None:
    """The same determinations.ndjson line per patient, byte for byte; the same summary.csv
    (its rows in the order each engine finished them); the bad line in the same words."""
    assert local_review.exit_code == 0, local_review.output
    assert spark_review.exit_code == 0, spark_review.output
    spark_lines, local_lines = spark_review.lines(), local_review.lines()
    assert len(local_lines) > 900
    assert sorted(spark_lines.values()) == sorted(local_lines.values())
    assert spark_lines == local_lines
    local_csv = (local_review.out / "summary.csv").read_text().splitlines()
    spark_csv = (spark_review.out / "summary.csv").read_text().splitlines()
    assert spark_csv[0] == local_csv[0]  # the header
    assert sorted(spark_csv[1:]) == sorted(local_csv[1:])
    bad = [x for x in local_review.output.splitlines() if "skipped bad line" in x]
    assert len(bad) == 1
    assert bad[0] in spark_review.output.splitlines()
