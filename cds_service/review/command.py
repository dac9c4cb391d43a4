"""The `ivig-cds review` command (registered on the main CLI group in cds_service/cli.py)."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from cds_service.review.source import BadLine, SourceError, ndjson_files


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: unreadable input is not a traceback."""
    click.echo(f"ivig-cds: review: {message}", err=True)
    sys.exit(2)


@click.command("review")
@click.argument("source")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for determinations.ndjson, summary.csv, summary.html, reports/.",
)
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Evaluate each order as if signed on this date (default: today, UTC).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: worker processes on this machine; spark: Apache Spark (pip install "
    "'ivig-cds[spark]').",
)
@click.option(
    "--spark-master",
    envvar="IVIG_CDS_SPARK_MASTER",
    default="local[*]",
    show_default=True,
    help="--engine spark: local[N] or a cluster URL.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: every core).",
)
@click.option("--no-reports", is_flag=True, help="Do not write a report page per patient.")
@click.option(
    "--group",
    "group_id",
    default=None,
    help="FHIR server SOURCE: export Group/<id> instead of every Patient.",
)
@click.option(
    "--token",
    envvar="IVIG_CDS_BULK_TOKEN",
    default=None,
    show_envvar=True,
    help="FHIR server SOURCE: bearer token for the export.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def review(
    source: str,
    out: Path,
    as_of: dt.datetime | None,
    engine: str,
    spark_master: str,
    jobs: int | None,
    no_reports: bool,
    group_id: str | None,
    token: str | None,
    quiet: bool,
) -> None:
    """Re-review every patient on immune globulin in a FHIR Bulk Data export (a directory of
    NDJSON, a manifest, or a FHIR server URL to run $export against): the order-sign
    determination of each patient's latest active IG order, and a summary."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cds_service.review import run

    console = Console(stderr=True)
    day = as_of.date() if as_of else dt.datetime.now(dt.UTC).date()
    try:
        if source.startswith(("http://", "https://")):
            from cds_service.review.export import ExportError, export

            try:
                files = export(
                    source,
                    out / "export",
                    token=token,
                    group=group_id,
                    log=(lambda m: None)
                    if quiet
                    else (lambda m: console.print(m, markup=False, highlight=False)),
                )
            except ExportError as exc:
                _fail(str(exc))
        else:
            files = ndjson_files(Path(source))

        def bad_line(bad: BadLine) -> None:
            click.echo(f"ivig-cds: review: skipped bad line {bad}", err=True)

        progress = Progress(
            TextColumn("reviewing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} patients/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        with progress:

            def start(total: int) -> run.Progress:
                task = progress.add_task("review", total=total, rate="-")
                started, done = time.monotonic(), 0  # rate of evaluation, after the load

                def advance(n: int) -> None:
                    nonlocal done
                    done += n
                    rate = done / max(time.monotonic() - started, 1e-6)
                    progress.update(task, advance=n, rate=f"{rate:.1f}")

                return advance

            if engine == "spark":
                try:
                    from cds_service.review import spark
                except ImportError:
                    _fail("--engine spark needs pyspark: pip install 'ivig-cds[spark]'")
                result = spark.review(
                    files,
                    out,
                    as_of=day,
                    master=spark_master,
                    reports=not no_reports,
                    progress=start,
                    on_bad_line=bad_line,
                )
            else:
                result = run.review(
                    files,
                    out,
                    as_of=day,
                    jobs=jobs or run.default_jobs(),
                    reports=not no_reports,
                    progress=start,
                    on_bad_line=bad_line,
                )
    except SourceError as exc:
        _fail(str(exc))
    except OSError as exc:  # e.g. --out not writable
        _fail(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": "))
    assert result.summary is not None
    counts = ", ".join(f"{n} {k}" for k, n in result.summary.outcomes.most_common())
    click.echo(
        f"reviewed {result.reviewed} patients ({result.skipped_done} already done, "
        f"{result.not_on_ig} not on IG, {len(result.bad_lines)} bad lines skipped) "
        f"as of {day.isoformat()}: {counts or 'none'}; see {out / 'summary.html'}",
        err=True,
    )
