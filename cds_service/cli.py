"""Console script `ivig-cds`: serve the CDS service, or evaluate a hook request file offline."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from cds_service.errors import CdsError
from cds_service.settings import get_settings


@click.group()
@click.version_option(package_name="ivig-cds")
def main() -> None:
    """ivig-cds: CDS Hooks guidance for immune globulin (IVIG/SCIG) orders."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (default from IVIG_CDS_HOST).")
@click.option("--port", default=None, type=int, help="Port (default from IVIG_CDS_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Start the CDS Hooks service (one uvicorn process; scale out with replicas)."""
    import uvicorn

    from cds_service.app import create_app

    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host or settings.host,
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

    engine = engine_from_settings(get_settings())
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
