"""Console script `ivig-cds`: serve the CDS service, or evaluate a hook request file offline."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from cds_service.core.auth import KeySetError
from cds_service.core.errors import CdsError
from cds_service.core.settings import WILDCARD, Settings, get_settings
from cds_service.knowledge import KnowledgeError
from cds_service.review.command import review
from cds_service.storage.migrate import SchemaOutOfDate

if TYPE_CHECKING:
    from cds_service.storage import Storage

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@click.group()
@click.version_option(package_name="ivig-cds")
def main() -> None:
    """ivig-cds: CDS Hooks guidance for immune globulin (IVIG/SCIG) orders."""


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: configuration problems are not tracebacks."""
    click.echo(f"ivig-cds: cannot start: {message}", err=True)
    sys.exit(2)


def _settings() -> Settings:
    """The settings, or one line naming the variable that is wrong."""
    try:
        return get_settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "IVIG_CDS_" + "_".join(str(p) for p in err["loc"]).upper()
        _fail(f"{name}: {err['msg']}")


def _database_error(exc: Exception) -> NoReturn:
    """A database problem at start-up as one line (the driver's first line only)."""
    if isinstance(exc, SchemaOutOfDate):
        _fail(f"database: {exc}")
    if isinstance(exc, ModuleNotFoundError):  # DATABASE_URL names a driver not installed
        _fail(f"database driver {exc.name!r} is not installed (pip install 'ivig-cds[postgres]')")
    _fail(f"database: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")


def _multiprocess_metrics() -> None:
    """Workers share their metrics through files (prometheus-client's multiprocess mode): one
    fresh directory per start, made here unless PROMETHEUS_MULTIPROC_DIR names one."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):  # samples of an earlier run are not this run's
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ivig-cds-metrics-")


@main.command()
@click.option("--host", default=None, help="Interface to bind (default from IVIG_CDS_HOST).")
@click.option("--port", default=None, type=int, help="Port (default from IVIG_CDS_PORT).")
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 64),
    help="Server processes (default IVIG_CDS_WORKERS, else the number of cores).",
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Start the CDS Hooks service: N uvicorn worker processes on one port (run replicas of
    it behind a load balancer; they share everything through the database)."""
    import uvicorn

    from cds_service.app import create_app, prepare_process
    from cds_service.core import logs

    settings = _settings()
    bind = host or settings.host
    if settings.demo and bind not in LOOPBACK:
        # demo turns client authentication off and lets fhirServer be any local server
        raise click.UsageError(f"demo mode serves loopback only; refusing to bind {bind!r}")
    if settings.auth_enabled and not settings.jwt_issuers:
        _fail(
            "client authentication is on and IVIG_CDS_JWT_ISSUERS is empty, so every call "
            "would be rejected (configure the EHR's issuer, or IVIG_CDS_DEMO=true on a laptop)"
        )
    logs.configure(settings.log_format, settings.log_level)
    processes = workers or settings.workers or os.cpu_count() or 1
    # the address bound is the public base URL when IVIG_CDS_PUBLIC_BASE_URL is unset; worker
    # processes read their settings from the environment, so they are told the same address
    settings = settings.model_copy(update={"host": bind, "port": port or settings.port})
    os.environ["IVIG_CDS_HOST"], os.environ["IVIG_CDS_PORT"] = bind, str(settings.port)
    if settings.public_base_url is None and bind in WILDCARD:
        logging.getLogger(__name__).warning(
            "IVIG_CDS_PUBLIC_BASE_URL is unset and %s binds every interface: report links and "
            "the JWT audience use %s; set it to the URL the EHR calls",
            bind,
            settings.base_url,
        )
    try:
        # built here even for N workers: a bad knowledge file or database stops start-up with
        # one line before any worker starts, and the schema is migrated once
        app = create_app(settings)
    except KnowledgeError as exc:  # a bad knowledge file: one line, not a traceback
        _fail(str(exc))
    except KeySetError as exc:  # a JWKS file missing or malformed, a jku that is not https
        _fail(f"IVIG_CDS_JWT_ISSUERS: {exc}")
    except (SQLAlchemyError, SchemaOutOfDate, ModuleNotFoundError, OSError) as exc:
        _database_error(exc)
    common: dict[str, object] = {
        "host": bind,
        "port": settings.port,
        "log_config": None,  # logs.configure: JSON lines, our own access line per request
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if processes > 1:
        app.state.storage.close()
        _multiprocess_metrics()
        uvicorn.run("cds_service.app:worker_app", factory=True, workers=processes, **common)  # type: ignore[arg-type]
        return
    prepare_process()
    uvicorn.run(app, **common)  # type: ignore[arg-type]


@main.group()
def db() -> None:
    """The database: schema migrations and retention."""


@db.command()
def upgrade() -> None:
    """Bring the database schema to this version (safe while other replicas start)."""
    from cds_service.storage import Storage

    try:
        store = Storage(_settings().storage_url, migrate_schema=True)
    except (SQLAlchemyError, ModuleNotFoundError, OSError) as exc:
        _database_error(exc)
    from cds_service.storage import migrate

    click.echo(f"database schema at revision {migrate.current(store.engine)}")
    store.close()


@db.command()
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Purge evaluations older than this (default IVIG_CDS_RETENTION_DAYS).",
)
def purge(days: float | None) -> None:
    """Delete evaluations, their reports and their feedback older than the retention period."""

    settings = _settings()
    days = days or settings.retention_days
    if not days:
        raise click.UsageError("no retention period: pass --days or set IVIG_CDS_RETENTION_DAYS")
    store = _existing_storage(settings)
    try:
        purged = store.purge(days)
    finally:
        store.close()
    click.echo(f"purged {purged} evaluations older than {days:g} days")


def _existing_storage(settings: Settings) -> Storage:
    """The configured database for a command that reads it: a SQLite file that does not exist
    is refused (one line naming the path) instead of being created empty where it was run."""
    from cds_service.storage import Storage

    if settings.database_url is None and not settings.database_path.is_file():
        click.echo(
            f"ivig-cds: no database at {settings.database_path.resolve()} "
            "(set IVIG_CDS_DATABASE_PATH or DATABASE_URL)",
            err=True,
        )
        sys.exit(2)
    try:
        return Storage(settings.storage_url, migrate_schema=settings.db_migrate)
    except (SQLAlchemyError, SchemaOutOfDate, ModuleNotFoundError, OSError) as exc:
        _database_error(exc)


@main.command()
@click.argument(
    "request_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option("--service", "service_id", default="ivig-order-sign", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the determination as JSON.")
@click.option("--cards", is_flag=True, help="Print the whole CDS Hooks response (cards) as JSON.")
def evaluate(request_file: Path, service_id: str, as_json: bool, cards: bool) -> None:
    """Evaluate a CDS Hooks request FILE (- for standard input) offline and print a summary:
    the criteria and the cards; --json for the determination, --cards for the response."""
    from cds_service.app import pipeline_from_settings
    from cds_service.render.cards import DETERMINATION_KEY

    settings = _settings()
    pipeline = pipeline_from_settings(settings)
    body = sys.stdin.buffer.read() if str(request_file) == "-" else request_file.read_bytes()
    try:
        answer = pipeline.answer(service_id, body)
    except CdsError as exc:
        click.echo(f"error {exc.status_code}: {exc.message}", err=True)
        sys.exit(2)
    response = answer.response
    determination = (
        response["cards"][0]["extension"][DETERMINATION_KEY] if response["cards"] else None
    )
    if cards:
        click.echo(json.dumps(response, indent=2))
    elif as_json:
        click.echo(json.dumps(determination, indent=2))
    else:
        facts = answer.evaluation.report_facts if answer.evaluation else None
        _print_summary(response, determination, facts or {}, settings.cards_dir)


def _print_summary(
    response: Mapping[str, Any], det: dict[str, Any] | None, facts: dict[str, Any], cards_dir: Path
) -> None:
    """The determination as a person reads it: headline, criteria table, dose, card summaries
    (wording from cards/report.yaml, the report's vocabulary)."""
    import yaml
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from cds_service.render.report import fmt_num

    with (cards_dir / "report.yaml").open(encoding="utf-8") as fh:
        say: dict[str, Any] = yaml.safe_load(fh)
    cli = say["cli"]
    console = Console(highlight=False)
    if det is None:
        console.print(cli["no-guidance"])
        return
    product = facts.get("product") or cli["product-unknown"]
    console.print(
        "[bold]"
        + escape(
            cli["headline"].format(
                product=product,
                outcome=say["outcome"].get(det["outcome"], det["outcome"]),
                request_type=say["request-type"].get(det["requestType"], det["requestType"]),
                policy=det["policy"],
            )
        )
        + "[/bold]"
    )
    table = Table(title=cli["criteria"], show_lines=False, expand=True)
    table.add_column(cli["criterion"], ratio=1)
    table.add_column(cli["status"], ratio=1)
    table.add_column(cli["finding"], ratio=3)
    colour = {"met": "green", "not-met": "red", "insufficient": "yellow"}
    for c in det["criteria"]:
        status = say["status"].get(c["status"], c["status"])
        table.add_row(
            escape(say["criteria"].get(c["id"], c["id"])),
            f"[{colour.get(c['status'], 'dim')}]{escape(status)}[/]",
            escape(c["reason"]),
        )
    console.print(table)
    dose, words = det["dose"], say["dose"]
    ordered = (
        words["grams"].format(
            grams=fmt_num(dose["gramsPerDose"]), days=fmt_num(dose["intervalDays"])
        )
        if dose["gramsPerDose"] is not None and dose["intervalDays"] is not None
        else words["grams-unknown"]
    )
    weight = (
        words["weight"].format(kg=fmt_num(dose["weightKg"]))
        if dose["weightKg"] is not None
        else words["weight-missing"]
    )
    mgkg = (
        words["mgkg"].format(value=fmt_num(dose["mgPerKgPer4Weeks"]))
        if dose["mgPerKgPer4Weeks"] is not None
        else words["mgkg-missing"]
    )
    console.print(escape(cli["dose"].format(ordered=ordered, weight=weight, mgkg=mgkg)))
    console.print()
    console.print(f"[bold]{escape(cli['cards'].format(count=len(response['cards'])))}[/bold]")
    for card in response["cards"]:
        console.print(escape(f"  [{card['indicator']}] {card['summary']}"), soft_wrap=True)
    console.print(f"[dim]{escape(cli['hint'])}[/dim]")


@main.command()
@click.option(
    "--since",
    "since",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Count feedback received on or after this date (UTC), e.g. 2026-01-01.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def feedback(since: dt.datetime, as_json: bool) -> None:
    """Summarise clinicians' feedback: override rate per card type since DATE."""
    store = _existing_storage(_settings())
    try:
        rates = store.override_rates(since.replace(tzinfo=dt.UTC))
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "cardType": r.card_type,
                        "feedback": r.total,
                        "overridden": r.overridden,
                        "accepted": r.accepted,
                        "overrideRate": round(r.rate, 3),
                    }
                    for r in rates
                ],
                indent=2,
            )
        )
        return
    click.echo(f"Feedback since {since.date().isoformat()} (UTC)")
    click.echo(
        f"{'card type':<28}{'feedback':>9}{'overridden':>12}{'accepted':>10}{'override rate':>15}"
    )
    for r in rates:
        click.echo(
            f"{r.card_type:<28}{r.total:>9}{r.overridden:>12}{r.accepted:>10}{r.rate:>14.0%} "
        )
    if not rates:
        click.echo("(no feedback)")


main.add_command(review)

if __name__ == "__main__":
    main()
