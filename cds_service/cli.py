"""Console script `ivig-cds`: serve the CDS service, or evaluate a hook request file offline."""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from cds_service.auth import KeySetError
from cds_service.errors import CdsError
from cds_service.knowledge import KnowledgeError
from cds_service.review.command import review
from cds_service.settings import Settings, get_settings

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


@main.command()
@click.option("--host", default=None, help="Interface to bind (default from IVIG_CDS_HOST).")
@click.option("--port", default=None, type=int, help="Port (default from IVIG_CDS_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Start the CDS Hooks service (one uvicorn process; scale out with replicas)."""
    import uvicorn

    from cds_service.app import create_app

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
    logging.basicConfig(level=settings.log_level)
    try:
        app = create_app(settings)
    except KnowledgeError as exc:  # a bad knowledge file: one line, not a traceback
        _fail(str(exc))
    except KeySetError as exc:  # a JWKS file missing or malformed, a jku that is not https
        _fail(f"IVIG_CDS_JWT_ISSUERS: {exc}")
    except SQLAlchemyError as exc:  # e.g. PostgreSQL unreachable: the driver's first line only
        _fail(f"database: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")
    except ModuleNotFoundError as exc:  # DATABASE_URL names a driver that is not installed
        _fail(f"database driver {exc.name!r} is not installed (pip install 'ivig-cds[postgres]')")
    # Knowledge, templates and the FHIR model classes live as long as the process: move them out
    # of the collector's sight, or every full collection re-scans them (a ~40 ms pause at p99).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=bind,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@main.command()
@click.argument("request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--service", "service_id", default="ivig-order-sign", show_default=True)
@click.option(
    "--cards", is_flag=True, help="Print the whole CDS Hooks response, not only the determination."
)
def evaluate(request_file: Path, service_id: str, cards: bool) -> None:
    """Evaluate a CDS Hooks request FILE offline and print the determination as JSON."""
    from cds_service.app import engine_from_settings
    from cds_service.cards import DETERMINATION_KEY

    engine = engine_from_settings(_settings())
    try:
        response = engine.respond(service_id, request_file.read_bytes())
    except CdsError as exc:
        click.echo(f"error {exc.status_code}: {exc.message}", err=True)
        sys.exit(2)
    if cards:
        out = response
    elif response["cards"]:
        out = response["cards"][0]["extension"][DETERMINATION_KEY]
    else:
        out = None
    click.echo(json.dumps(out, indent=2))


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
    from cds_service.storage import Storage

    store = Storage(_settings().storage_url)
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
