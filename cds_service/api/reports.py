"""The HTML report of one evaluation, linked from its cards.

No JWT: clinicians open it from the card link in a browser. The id is an unguessable 144-bit
capability (secrets.token_urlsafe), never listed; see README "Conformance".
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from cds_service.api import openapi
from cds_service.api.errors import problem
from cds_service.render.report import ReportRenderer, not_found_page
from cds_service.storage import Storage

EXPIRED_HTML = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Report expired</title>"
    "<h1>This report has expired</h1><p>Its evaluation was older than this service's retention "
    "period and has been deleted, with the feedback on its cards.</p></html>"
)

REPORT_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def router(store: Storage, reports: ReportRenderer, cards_dir: Path) -> APIRouter:
    api = APIRouter()
    missing_report = not_found_page(cards_dir)

    def report_html(report_id: str) -> tuple[int, str | None]:
        ev = store.evaluation(report_id)
        if ev is None:
            return (410, EXPIRED_HTML) if store.expired(report_id) else (404, None)
        return 200, reports.render(ev, store.feedback_for(c.uuid for c in ev.cards))

    @api.get(
        "/reports/{report_id}",
        response_class=HTMLResponse,
        summary="The HTML report of one evaluation (linked from its cards)",
        responses=openapi.responses(200, 404, 410, html=True),
    )
    async def report(report_id: str, request: Request) -> Response:
        status, html = await run_in_threadpool(report_html, report_id)
        if html is None:
            accept = request.headers.get("accept", "")
            if "json" in accept and "text/html" not in accept:  # a program asked: FHIR's answer
                return problem(404, "no report with this id")
            # a person follows this link: a page, not the API's JSON problem
            return HTMLResponse(missing_report, status_code=404, headers=REPORT_HEADERS)
        return HTMLResponse(html, status_code=status, headers=REPORT_HEADERS)

    return api
