"""The Bulk Data `$export` client against a local server: 202 + Content-Location, 429 and 202
with Retry-After, a failed job, an expired output URL; and `ivig-cds review URL` end to end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.review.export import ExportClient, ExportError, export, retry_after
from tools import bulk_export

TOKEN = "s3cret-token"


@dataclass
class Plan:
    """What the fake server answers, and what it saw."""

    export_dir: Path
    polls: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # before the 200
    kickoff: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    fail: bool = False
    expired: bool = False
    requires_token: bool = True
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Plan]]:
    export_dir = tmp_path / "source"
    bulk_export.write_export(export_dir, 4, expected_file=False)
    plan = Plan(export_dir)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            plan.seen.append((self.path, dict(self.headers)))
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if "$export" in self.path:
                if plan.kickoff:
                    status, headers = plan.kickoff.pop(0)
                    return self._send(status, b"", headers)
                return self._send(202, b"", {"Content-Location": "/status/job1"})
            if self.path == "/status/job1":
                if plan.polls:
                    status, headers = plan.polls.pop(0)
                    return self._send(status, b"", headers)
                if plan.fail:
                    outcome = {
                        "resourceType": "OperationOutcome",
                        "issue": [
                            {
                                "severity": "error",
                                "code": "exception",
                                "diagnostics": "export job\nfailed: disk full",
                            }
                        ],
                    }
                    return self._send(500, json.dumps(outcome).encode())
                files = sorted(p.name for p in plan.export_dir.glob("*.ndjson"))
                manifest = {
                    "transactionTime": "2026-01-01T00:00:00Z",
                    "request": base + "/fhir/Patient/$export",
                    "requiresAccessToken": plan.requires_token,
                    "output": [
                        {"type": n.split(".")[0], "url": f"{base}/files/{n}"} for n in files
                    ],
                    "error": [],
                }
                return self._send(200, json.dumps(manifest).encode())
            if self.path.startswith("/files/"):
                if plan.expired:
                    return self._send(410)
                return self._send(200, (plan.export_dir / self.path[7:]).read_bytes())
            return self._send(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir", plan
    httpd.shutdown()
    httpd.server_close()


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_kick_off_poll_honours_retry_after_and_downloads(
    tmp_path: Path, server: tuple[str, Plan]
) -> None:
    url, plan = server
    plan.kickoff = [(429, {"Retry-After": "3"})]
    plan.polls = [
        (429, {"Retry-After": "5"}),
        (202, {"Retry-After": "2", "X-Progress": "50% done"}),
        (202, {}),  # no Retry-After: backoff from 1 s
        (202, {}),
    ]
    waits: list[float] = []
    logs: list[str] = []
    client = ExportClient(url, TOKEN, sleep=waits.append, log=logs.append)
    files = export(url, tmp_path / "dl", group="g-1", client=client, log=logs.append)
    assert waits == [3.0, 5.0, 2.0, 4.0, 8.0]  # Retry-After as given, else 1 * 2**attempt
    assert "export in progress: 50% done" in logs
    kick = plan.seen[0]
    assert kick[0].startswith("/fhir/Group/g-1/$export?_type=Patient%2CCondition")
    assert kick[1]["Prefer"] == "respond-async"
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, h in plan.seen)
    got = {f.name.split(".")[0]: f.read_bytes() for f in files}
    for source in plan.export_dir.glob("*.ndjson"):
        assert got[source.name.split(".")[0]] == source.read_bytes()
    assert not any(TOKEN in m for m in logs)
    # a second run reuses the download: nothing is asked again
    asked = len(plan.seen)
    assert export(url, tmp_path / "dl", client=client) == files
    assert len(plan.seen) == asked


def test_token_not_sent_to_outputs_that_do_not_require_it(
    tmp_path: Path, server: tuple[str, Plan]
) -> None:
    url, plan = server
    plan.requires_token = False
    export(url, tmp_path / "dl", client=ExportClient(url, TOKEN, sleep=lambda s: None))
    downloads = [h for path, h in plan.seen if path.startswith("/files/")]
    assert downloads
    assert all("Authorization" not in h for h in downloads)


def test_failed_job_is_one_line_and_restarts_next_time(
    tmp_path: Path, server: tuple[str, Plan]
) -> None:
    url, plan = server
    plan.fail = True
    result = CliRunner().invoke(main, ["review", url, "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "ivig-cds: review: export failed (HTTP 500): export job failed: disk full"
    )
    assert not (tmp_path / "o" / "export" / "status-url").exists()


def test_expired_output_url_is_named(tmp_path: Path, server: tuple[str, Plan]) -> None:
    url, plan = server
    plan.expired = True
    with pytest.raises(ExportError, match=r"output 1 \(\w+\) answered HTTP 410: .*expired"):
        export(url, tmp_path / "dl", client=ExportClient(url, sleep=lambda s: None))
    assert not (tmp_path / "dl" / "status-url").exists()


def test_kick_off_refused_is_named(tmp_path: Path, server: tuple[str, Plan]) -> None:
    url, plan = server
    plan.kickoff = [(401, {})]
    with pytest.raises(ExportError, match="kick-off answered HTTP 401"):
        export(url, tmp_path / "dl", client=ExportClient(url, sleep=lambda s: None))


def test_review_of_a_fhir_server_url(tmp_path: Path, server: tuple[str, Plan]) -> None:
    url, plan = server
    plan.polls = [(202, {"Retry-After": "0"})]
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main,
        ["review", url, "--out", str(out), "--as-of", "2025-11-20", "--jobs", "1", "--quiet"],
        env={"IVIG_CDS_BULK_TOKEN": TOKEN},
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "determinations.ndjson").read_text().splitlines()]
    assert {x["patient"] for x in lines} == {
        "p000000-scn-active-cll",
        "p000001-scn-apds-new-code",
        "p000002-scn-baseline-g-l",
        "p000003-scn-contained-medication",
    }
    assert all(x["determination"]["outcome"] for x in lines)
    assert plan.seen[0][1]["Authorization"] == f"Bearer {TOKEN}"
