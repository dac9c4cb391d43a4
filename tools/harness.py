"""Scenario harness: load fixture records into a FHIR R4 server and check the service fetches them.

For each `fhir_fixtures/<scenario>/order-sign-request.json` (with `expected-determination.json`):
the resources of its prefetch are loaded into the FHIR server as one transaction of PUTs with ids
namespaced by run (`<ns>-<id>`, references rewritten), so runs and scenarios never collide; then the
service is called the way an EHR would call it (order-sign with `fhirServer`, no prefetch) and its
determination, with the namespace taken out again, is compared with the expected one.

Used by `ivig-cds harness` and by the integration tests (same loader, same comparison).
"""

from __future__ import annotations

import copy
import json
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import requests

from cds_service.fhir.bundle import resources_of

FHIR_JSON = "application/fhir+json"
REQUEST_FILE = "order-sign-request.json"
EXPECTED_FILE = "expected-determination.json"
DETERMINATION_KEY = "ivig-cds.determination"
SERVICE_ID = "ivig-order-sign"
DEFAULT_FHIR_SERVER = "https://hapi.fhir.org/baseR4"  # the public HAPI FHIR R4 sandbox


class HarnessError(RuntimeError):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    request: dict[str, Any]
    expected: dict[str, Any] | None

    @property
    def patient_id(self) -> str:
        return str(self.request["context"]["patientId"])


def discover(fixtures: Path) -> list[Scenario]:
    """Every `<dir>/order-sign-request.json` under `fixtures`, sorted by directory name."""
    out = []
    for path in sorted(fixtures.glob(f"*/{REQUEST_FILE}")):
        expected_path = path.parent / EXPECTED_FILE
        expected = json.loads(expected_path.read_text("utf-8")) if expected_path.exists() else None
        out.append(Scenario(path.parent.name, json.loads(path.read_text("utf-8")), expected))
    return out


# ------------------------------------------------------------------------------ records


def record_resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The patient's record as the fixture holds it: every resource of every prefetch value
    (not the draft orders, which travel in the context), de-duplicated by type and id."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for value in (request.get("prefetch") or {}).values():
        for res in resources_of(value):
            seen.setdefault((str(res.get("resourceType")), str(res.get("id"))), res)
    return list(seen.values())


# ------------------------------------------------------------------------------ namespacing


def new_namespace() -> str:
    return "h" + secrets.token_hex(3)


def _walk_references(node: Any, rename: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in rename:
            node["reference"] = rename[ref]
        for value in node.values():
            _walk_references(value, rename)
    elif isinstance(node, list):
        for item in node:
            _walk_references(item, rename)


def namespace_request(request: dict[str, Any], ns: str) -> dict[str, Any]:
    """A copy of the request whose patient and record resources carry ids `<ns>-<id>`, with
    every reference to them rewritten (draft orders included); contained ids are untouched."""
    req = copy.deepcopy(request)
    pid = str(req["context"]["patientId"])
    rename = {f"Patient/{pid}": f"Patient/{ns}-{pid}"}
    for res in record_resources(req):
        rename[f"{res['resourceType']}/{res['id']}"] = f"{res['resourceType']}/{ns}-{res['id']}"
    for value in (req.get("prefetch") or {}).values():
        for res in resources_of(value):
            if not str(res.get("id", "")).startswith(f"{ns}-"):
                res["id"] = f"{ns}-{res['id']}"
    for value in (req.get("prefetch") or {}).values():
        if isinstance(value, dict):
            for entry in value.get("entry") or []:
                if isinstance(entry, dict) and "fullUrl" in entry:
                    res = entry.get("resource") or {}
                    entry["fullUrl"] = f"{res.get('resourceType')}/{res.get('id')}"
    _walk_references(req.get("prefetch"), rename)
    _walk_references(req["context"].get("draftOrders"), rename)
    req["context"]["patientId"] = f"{ns}-{pid}"
    if isinstance(req["context"].get("encounterId"), str):
        req["context"]["encounterId"] = f"{ns}-{req['context']['encounterId']}"
    return req


def strip_namespace(value: Any, ns: str) -> Any:
    """Take the run's namespace out of every string (references, reasons) of a determination."""
    text = json.dumps(value).replace(f"/{ns}-", "/").replace(f"{ns}-", "")
    return json.loads(text)


def transaction(resources: Iterable[dict[str, Any]], method: str = "PUT") -> dict[str, Any]:
    """A transaction Bundle; PUT keeps the ids (POST would let the server assign them)."""
    entries = []
    for res in resources:
        url = f"{res['resourceType']}/{res['id']}"
        entry: dict[str, Any] = {"fullUrl": url, "request": {"method": method, "url": url}}
        if method != "DELETE":
            entry["resource"] = res
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def ehr_request(
    request: dict[str, Any], fhir_server: str, keep: Iterable[str] = ()
) -> dict[str, Any]:
    """The request as an EHR that prefetched only `keep` (default none) would send it."""
    req = copy.deepcopy(request)
    kept = {k: v for k, v in (req.get("prefetch") or {}).items() if k in set(keep)}
    req.pop("prefetch", None)
    if kept:
        req["prefetch"] = kept
    req["fhirServer"] = fhir_server
    return req


def determination_of(response: dict[str, Any]) -> dict[str, Any] | None:
    cards = response.get("cards") or []
    if not cards:
        return None
    det = (cards[0].get("extension") or {}).get(DETERMINATION_KEY)
    return det if isinstance(det, dict) else None


# ------------------------------------------------------------------------------ FHIR server I/O


class FhirLoader:
    """Loads and deletes scenario records on a FHIR R4 server with transaction Bundles."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def post_bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        resp = self.session.post(self.base_url, data=json.dumps(bundle), timeout=self.timeout)
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text[:500]
        if resp.status_code >= 400:
            raise HarnessError(f"transaction -> HTTP {resp.status_code}: {_outcome(body)}")
        if not isinstance(body, dict):
            raise HarnessError("transaction answered with a non-object body")
        failed = [
            f"{e.get('response', {}).get('status')}"
            for e in body.get("entry") or []
            if not str(e.get("response", {}).get("status", "")).startswith("2")
        ]
        if failed:
            raise HarnessError(f"transaction entries failed: {', '.join(failed)}")
        return body

    def load(self, resources: list[dict[str, Any]]) -> None:
        self.post_bundle(transaction(resources, "PUT"))

    def delete(self, resources: list[dict[str, Any]]) -> None:
        # dependents first (Patient last), so servers with referential integrity accept it
        ordered = sorted(resources, key=lambda r: r.get("resourceType") == "Patient")
        self.post_bundle(transaction(ordered, "DELETE"))

    def close(self) -> None:
        self.session.close()


def _outcome(body: Any) -> str:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(
            str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
            for i in body.get("issue") or []
            if isinstance(i, dict)
        )[:500]
    return str(body)[:500]


# ------------------------------------------------------------------------------ a run


@dataclass
class Result:
    scenario: str
    passed: bool
    detail: str
    seconds: float


def diff_summary(got: dict[str, Any] | None, expected: dict[str, Any]) -> str:
    """A short description of how a determination differs from the expected one."""
    if got is None:
        return "no determination in the response"
    diffs = [k for k in expected if got.get(k) != expected[k]]
    crit_got = {c["id"]: c["status"] for c in got.get("criteria", [])}
    crit_exp = {c["id"]: c["status"] for c in expected.get("criteria", [])}
    changed = [
        f"{cid} {crit_exp[cid]}->{crit_got.get(cid)}"
        for cid in crit_exp
        if crit_got.get(cid) != crit_exp[cid]
    ]
    parts = [f"fields differ: {', '.join(diffs)}"] if diffs else []
    if changed:
        parts.append("; ".join(changed))
    if "unavailable" in got:
        parts.append(f"unavailable: {', '.join(sorted(got['unavailable']))}")
    return " | ".join(parts) or "equal"


def run_scenario(
    scenario: Scenario,
    loader: FhirLoader,
    service_url: str,
    ns: str,
    http: requests.Session,
    cleanup: bool = False,
    fhir_authorization: dict[str, Any] | None = None,
) -> Result:
    t0 = time.monotonic()
    try:
        req = namespace_request(scenario.request, ns)
        resources = record_resources(req)
        loader.load(resources)
        try:
            body = ehr_request(req, loader.base_url)
            if fhir_authorization:
                body["fhirAuthorization"] = fhir_authorization
            resp = http.post(
                f"{service_url.rstrip('/')}/cds-services/{SERVICE_ID}", json=body, timeout=60
            )
            if resp.status_code != 200:
                return Result(
                    scenario.name,
                    False,
                    f"HTTP {resp.status_code}: {resp.text[:300]}",
                    time.monotonic() - t0,
                )
            got = determination_of(resp.json())
            got = strip_namespace(got, ns) if got is not None else None
            ok = got == scenario.expected  # None == None: no IG order, no cards expected
            if ok:
                detail = "equal"
            elif scenario.expected is None:
                detail = "a determination where none was expected"
            else:
                detail = diff_summary(got, scenario.expected)
            return Result(scenario.name, ok, detail, time.monotonic() - t0)
        finally:
            if cleanup:
                loader.delete(resources)
    except (HarnessError, requests.RequestException, ValueError) as exc:
        return Result(
            scenario.name, False, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - t0
        )


def iter_run(
    scenarios: list[Scenario],
    fhir_server: str,
    service_url: str,
    cleanup: bool = False,
    ns: str | None = None,
) -> Iterator[Result]:
    ns = ns or new_namespace()
    loader = FhirLoader(fhir_server)
    http = requests.Session()
    try:
        for scenario in scenarios:
            yield run_scenario(scenario, loader, service_url, ns, http, cleanup)
    finally:
        loader.close()
        http.close()


# ------------------------------------------------------------------------------ CLI support


@contextmanager
def service_in_thread(fhir_server: str) -> Iterator[str]:
    """This service on a free loopback port (uvicorn in a thread), allowed to query only
    `fhir_server`; yields its base URL."""
    import uvicorn

    from cds_service.app import create_app
    from cds_service.core.settings import Settings
    from tools.local_fhir import free_port

    port = free_port()
    # a loopback-only helper for the harness: it may query only `fhir_server`, and client JWT
    # authentication (where this version has it) is off, as the harness is the only client
    settings = Settings(fhir_allowlist=[fhir_server.rstrip("/")], jwt_required=False)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="ivig-cds-harness", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise HarnessError("the in-process service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def local_fhir_server(venv: Path) -> Iterator[str]:
    """A local sekmet FHIR R4 server (installed into `venv` on first use); yields its base URL."""
    from tools.local_fhir import FhirServer, ensure_installed

    with FhirServer(ensure_installed(venv), validation="strict") as srv:
        yield srv.base_url


def write_json(path: Path, fhir_server: str, results: list[Result]) -> None:
    """The results as JSON, for CI and dashboards."""
    doc = {
        "fhirServer": fhir_server,
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "scenarios": [
            {
                "scenario": r.scenario,
                "passed": r.passed,
                "seconds": round(r.seconds, 3),
                "detail": r.detail,
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def write_junit(path: Path, fhir_server: str, results: list[Result]) -> None:
    """The results as JUnit XML (one testcase per scenario), which CI systems display."""
    from xml.etree import ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="ivig-cds harness",
        tests=str(len(results)),
        failures=str(sum(not r.passed for r in results)),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    ET.SubElement(
        ET.SubElement(suite, "properties"), "property", name="fhirServer", value=fhir_server
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname="harness", name=r.scenario, time=f"{r.seconds:.3f}"
        )
        if not r.passed:
            ET.SubElement(case, "failure", message=r.detail[:200]).text = r.detail
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def check_fhir_server(base: str, timeout: float = 5.0) -> str | None:
    """Why `base` is not a usable FHIR server (GET /metadata must answer a
    CapabilityStatement), or None; checked before anything is loaded or started."""
    try:
        resp = requests.get(
            f"{base.rstrip('/')}/metadata",
            headers={"Accept": "application/fhir+json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        return f"unreachable ({type(exc).__name__})"
    if resp.status_code != 200:
        return f"GET /metadata answered HTTP {resp.status_code}"
    try:
        kind = resp.json().get("resourceType")
    except ValueError:
        kind = None
    if kind != "CapabilityStatement":
        return "GET /metadata did not answer a CapabilityStatement"
    return None


def run_cli(
    fhir_server: str | None,
    service_url: str | None,
    fixtures: Path,
    cleanup: bool,
    only: tuple[str, ...],
    local_fhir: Path | None,
    json_out: Path | None = None,
    junit_out: Path | None = None,
) -> int:
    """`ivig-cds harness`: returns the exit status (0 all passed, 1 a failure, 2 no run)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    console = Console()
    scenarios = [s for s in discover(fixtures) if not only or s.name in only]
    if not scenarios:
        console.print(f"[red]no scenarios under {fixtures}[/red]")
        return 2
    with ExitStack() as stack:
        try:
            if local_fhir is not None:
                console.print(f"starting a local FHIR R4 server (sekmet, venv {local_fhir}) ...")
                fhir_server = stack.enter_context(local_fhir_server(local_fhir))
            assert fhir_server is not None
            problem = check_fhir_server(fhir_server)
            if problem is not None:
                click.echo(f"harness: FHIR server {fhir_server}: {problem}", err=True)
                return 2
            if service_url is None:
                service_url = stack.enter_context(service_in_thread(fhir_server))
        except (HarnessError, RuntimeError, OSError) as exc:
            console.print(f"[red]could not start: {exc}[/red]")
            return 2
        ns = new_namespace()
        console.print(
            f"FHIR server {fhir_server}\nservice     {service_url}\n"
            f"namespace   {ns} ({len(scenarios)} scenarios)"
        )
        results: list[Result] = []
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("scenarios", total=len(scenarios))
            for scenario, result in zip(
                scenarios,
                iter_run(scenarios, fhir_server, service_url, cleanup, ns),
                strict=True,
            ):
                progress.update(task, advance=1, description=scenario.name)
                results.append(result)
    table = Table(title=f"ivig-cds harness: {fhir_server}")
    table.add_column("scenario")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("detail", overflow="fold")
    for r in results:
        mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(r.scenario, mark, f"{r.seconds:.2f}", "" if r.passed else r.detail)
    console.print(table)
    failed = sum(not r.passed for r in results)
    if json_out is not None:
        write_json(json_out, fhir_server, results)
    if junit_out is not None:
        write_junit(junit_out, fhir_server, results)
    console.print(
        f"{len(results) - failed} passed, {failed} failed" + (" (cleaned up)" if cleanup else "")
    )
    return 1 if failed else 0


@click.command()
@click.option(
    "--fhir-server",
    default=None,
    help="FHIR R4 base URL to load the scenarios into [default: the public HAPI R4 sandbox].",
)
@click.option(
    "--service-url",
    default=None,
    help="A running ivig-cds whose allowlist admits --fhir-server "
    "[default: start one in-process on a free loopback port].",
)
@click.option("--cleanup", is_flag=True, help="Delete the loaded resources afterwards.")
@click.option(
    "--fixtures",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("fhir_fixtures"),
    show_default=True,
)
@click.option("--scenario", "only", multiple=True, help="Run only these scenarios (repeatable).")
@click.option(
    "--local-fhir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Start a local sekmet FHIR R4 server from this venv (installed on first use) and use it.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file.",
)
@click.option(
    "--junit",
    "junit_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results as JUnit XML to this file.",
)
def main(
    fhir_server: str | None,
    service_url: str | None,
    cleanup: bool,
    fixtures: Path,
    only: tuple[str, ...],
    local_fhir: Path | None,
    json_out: Path | None,
    junit_out: Path | None,
) -> None:
    """Load the scenario fixtures into a FHIR server and check the service's determinations."""
    if fhir_server is None and local_fhir is None:
        fhir_server = DEFAULT_FHIR_SERVER
    sys.exit(
        run_cli(fhir_server, service_url, fixtures, cleanup, only, local_fhir, json_out, junit_out)
    )


if __name__ == "__main__":
    main()
