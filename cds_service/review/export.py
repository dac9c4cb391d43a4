"""FHIR Bulk Data `$export` client (Bulk Data Access IG 2.0): kick-off, poll, download.

Kick-off `GET [base]/Patient/$export` (or `Group/[id]/$export`) with `Prefer: respond-async`;
poll the `Content-Location` status URL, waiting as long as `Retry-After` says (on 202 and 429),
else with exponential backoff; download each output as NDJSON. A failed job, an expired output
URL or a wait past the limit is an ExportError with one line to show. The status URL is kept
beside the downloads, so an interrupted run polls the same job instead of starting a new one.
The bearer token is sent to the FHIR server, and to output URLs only when the manifest says
`requiresAccessToken`; it is never logged.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import urllib3

# what the review reads: the service's prefetch resource types (and Coverage for CRD)
EXPORT_TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "MedicationDispense",
    "Medication",
    "Immunization",
    "Encounter",
    "Coverage",
)
STATUS_FILE = "status-url"
COMPLETE_FILE = "manifest.json"
MAX_RETRY_AFTER = 3600.0  # a server asking for more than an hour is waited for an hour at a time
CHUNK = 1 << 16


class ExportError(Exception):
    """The export cannot be obtained; the message is one line for the user. `restart`: the job
    is gone (failed, expired), so a new run must kick off a new export rather than poll it."""

    def __init__(self, message: str, *, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


def _diagnostics(body: bytes) -> str:
    """The OperationOutcome's first diagnostics (or the body's start), on one line."""
    try:
        doc = json.loads(body)
        issue = doc["issue"][0]
        text = str(issue.get("diagnostics") or issue.get("details", {}).get("text") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


class ExportClient:
    def __init__(
        self,
        base: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        max_wait: float = 6 * 3600.0,
        backoff: tuple[float, float] = (1.0, 120.0),
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.base = base.rstrip("/") + "/"
        self.token = token
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10.0, read=timeout), retries=False
        )
        self.max_wait = max_wait
        self.backoff = backoff
        self.sleep = sleep
        self.log = log

    def _headers(self, accept: str, auth: bool = True) -> dict[str, str]:
        headers = {"Accept": accept}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get(self, url: str, headers: dict[str, str], stream: bool = False) -> Any:
        try:
            return self.http.request("GET", url, headers=headers, preload_content=not stream)
        except urllib3.exceptions.HTTPError as exc:
            raise ExportError(f"cannot reach {url.split('?')[0]}: {type(exc).__name__}") from exc

    def kick_off(self, group: str | None, types: Iterable[str]) -> str:
        """Start the export; the status URL."""
        path = f"Group/{group}/$export" if group else "Patient/$export"
        url = urljoin(self.base, path) + "?" + urlencode({"_type": ",".join(types)})
        headers = {**self._headers("application/fhir+json"), "Prefer": "respond-async"}
        waited = 0.0
        while True:
            r = self._get(url, headers)
            if r.status == 202:
                location = r.headers.get("Content-Location")
                if not location:
                    raise ExportError("kick-off answered 202 without a Content-Location")
                return urljoin(url, str(location))
            if r.status in (429, 503):
                waited += self._wait(r, waited, 0)
                continue
            raise ExportError(f"kick-off answered HTTP {r.status}: {_diagnostics(r.data)}")

    def _wait(self, r: Any, waited: float, attempt: int) -> float:
        low, high = self.backoff
        delay = retry_after(r.headers.get("Retry-After"))
        if delay is None:
            delay = min(low * 2**attempt, high)
        if waited + delay > self.max_wait:
            raise ExportError(f"export not complete after {waited:.0f} s; giving up")
        self.sleep(delay)
        return delay

    def poll(self, status_url: str) -> dict[str, Any]:
        """Wait for the job; its completion manifest."""
        waited, attempt = 0.0, 0
        while True:
            r = self._get(status_url, self._headers("application/json"))
            if r.status == 200:
                try:
                    manifest = json.loads(r.data)
                    if not isinstance(manifest.get("output"), list):
                        raise ValueError("no output array")
                except (ValueError, AttributeError) as exc:
                    raise ExportError(f"the completion manifest is not valid ({exc})") from exc
                return dict(manifest)
            if r.status in (202, 429, 503):
                progress = r.headers.get("X-Progress")
                if progress:
                    self.log(f"export in progress: {' '.join(progress.split())[:80]}")
                waited += self._wait(r, waited, attempt)
                attempt += 1
                continue
            raise ExportError(
                f"export failed (HTTP {r.status}): {_diagnostics(r.data)}", restart=True
            )

    def download(self, manifest: dict[str, Any], dest: Path) -> list[Path]:
        """Every output into `dest` (a `.part` file renamed when complete)."""
        auth = bool(manifest.get("requiresAccessToken"))
        files: list[Path] = []
        for i, output in enumerate(manifest["output"]):
            rtype = "".join(ch for ch in str(output.get("type", "")) if ch.isalnum()) or "x"
            target = dest / f"{rtype}.{i:04d}.ndjson"
            files.append(target)
            if target.exists():
                continue  # finished by an earlier, interrupted run
            url = urljoin(self.base, str(output["url"]))
            for attempt in range(6):
                r = self._get(url, self._headers("application/fhir+ndjson", auth), stream=True)
                if r.status in (429, 503) and attempt < 5:
                    r.release_conn()
                    self._wait(r, 0.0, attempt)
                    continue
                break
            if r.status in (403, 404, 410):
                r.release_conn()
                raise ExportError(
                    f"output {i + 1} ({rtype}) answered HTTP {r.status}: the export's files "
                    "have expired or are gone; run the command again for a new export",
                    restart=True,
                )
            if r.status != 200:
                r.release_conn()
                raise ExportError(f"output {i + 1} ({rtype}) answered HTTP {r.status}")
            part = target.with_suffix(".part")
            with part.open("wb") as sink:
                for chunk in r.stream(CHUNK):
                    sink.write(chunk)
            r.release_conn()
            part.rename(target)
        return files


def export(
    base: str,
    dest: Path,
    *,
    token: str | None = None,
    group: str | None = None,
    types: Iterable[str] = EXPORT_TYPES,
    log: Callable[[str], None] = lambda _m: None,
    client: ExportClient | None = None,
) -> list[Path]:
    """Run (or resume) a Bulk export of `base` into `dest`; the NDJSON files."""
    dest.mkdir(parents=True, exist_ok=True)
    done = dest / COMPLETE_FILE
    if done.exists():
        names = json.loads(done.read_text(encoding="utf-8"))["output"]
        files = [dest / o["url"] for o in names]
        if all(f.exists() for f in files):
            log(f"using the export already downloaded in {dest}")
            return files
    client = client or ExportClient(base, token, log=log)
    status_file = dest / STATUS_FILE
    if status_file.exists():
        status_url = status_file.read_text(encoding="utf-8").strip()
        log("polling the export started by an earlier run")
    else:
        status_url = client.kick_off(group, types)
        status_file.write_text(status_url, encoding="utf-8")
        log("export started")
    try:
        manifest = client.poll(status_url)
        files = client.download(manifest, dest)
    except ExportError as exc:
        if exc.restart:  # the job is gone: the next run kicks off a new export
            status_file.unlink(missing_ok=True)
            for part in dest.glob("*.ndjson"):
                part.unlink()
        raise
    local = {
        "transactionTime": manifest.get("transactionTime"),
        "request": manifest.get("request"),
        "requiresAccessToken": False,
        "output": [{"type": f.name.split(".")[0], "url": f.name} for f in files],
        "error": [],
    }
    done.write_text(json.dumps(local, indent=2), encoding="utf-8")
    return files
