"""The one fake FHIR server of the project: tests, the benchmark and the harness tests all use it.

It lives in ``tools/`` (not ``tests/``) because the benchmark imports it too and must not depend on
the test suite; ``tests/support/fake_fhir.py`` re-exports it with the seed record's routes.

The server is stdlib ``http.server`` in a daemon thread, one thread per connection.  Routes are
keyed by the request path *relative to the FHIR base* (``/fhir``), matched in this order: exact
path+query (``"Observation?patient=p1"``), path only (``"Observation"``), ``"*"``.  Unmatched
requests get 404 + OperationOutcome.  A route value is one of:

* a ``dict`` -- served as JSON with 200 (e.g. a searchset Bundle),
* a :class:`Reply` -- status/body/raw bytes/headers/delay/trickle, with or without a
  Content-Length (``sized=False``: the body ends when the connection closes),
* a callable ``(request, server) -> Reply`` -- for dynamic behaviour (paging, sequences).

Searching a record (one implementation for every fake): :func:`matches` (the search parameters
the service's templates use), :func:`search`, :func:`prefetch` (an EHR's prefetch from memory),
:func:`record_search` (a paged, cached search route with a per-request latency) and
:func:`record_routes` (searches and reads of a whole record).

Factories for common faults: :func:`error`, :func:`malformed_json`, :func:`delayed`,
:func:`paging_loop`, :func:`huge_searchset`, :func:`sequence`, :func:`searchset`.

Every request is recorded (method, path, query, headers, body) in ``server.requests`` so tests
can assert e.g. that the Authorization header was sent::

    with FaultServer({"Observation": error(503, retry_after=2)}) as fake:
        ...call the service with fhirServer=fake.base_url...
        assert fake.requests[0].headers["authorization"] == "Bearer t0k3n"
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

if TYPE_CHECKING:
    from cds_service.fhir.query import PrefetchKey

__all__ = [
    "FaultServer",
    "RecordedRequest",
    "Reply",
    "Route",
    "delayed",
    "error",
    "huge_searchset",
    "malformed_json",
    "matches",
    "observation",
    "operation_outcome",
    "paging_loop",
    "prefetch",
    "record_routes",
    "record_search",
    "search",
    "searchset",
    "sequence",
]

FHIR_JSON = "application/fhir+json"
BASE_PATH = "/fhir"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # relative to the FHIR base, without query, e.g. "Observation" or "" (base)
    query: str  # raw query string
    headers: dict[str, str]  # lower-cased names
    body: bytes
    target: str  # raw request target as received, e.g. "/fhir/Observation?patient=p1"

    @property
    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    @property
    def relative(self) -> str:
        """Path + query relative to the base (the key format of routes)."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class Reply:
    status: int = 200
    body: object = None  # JSON-serialised when raw is None
    raw: bytes | None = None  # sent verbatim (e.g. malformed JSON)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (interrupted by server stop)
    content_type: str = FHIR_JSON
    trickle: float = 0.0  # seconds between body bytes: a server that trickles its answer
    sized: bool = True  # False: no Content-Length, the body ends when the connection closes

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


Handler = Callable[[RecordedRequest, "FaultServer"], Reply]
Route = Reply | Handler | Mapping[str, Any]


# --------------------------------------------------------------------------- factories


def operation_outcome(
    text: str, code: str = "exception", severity: str = "error"
) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def error(status: int, retry_after: int | str | None = None, text: str | None = None) -> Reply:
    """An error status (500/401/403/429/503/...) with an OperationOutcome body."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="fhir"')
    return Reply(status, operation_outcome(text or f"simulated HTTP {status}"), headers=headers)


def malformed_json(status: int = 200) -> Reply:
    """A truncated JSON document with a FHIR JSON content type."""
    return Reply(status, raw=b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resou')


def delayed(seconds: float, reply: Reply | Mapping[str, Any] | None = None) -> Reply:
    """Answer ``reply`` (default: an empty searchset) after ``seconds``."""
    if reply is None:
        return Reply(body=searchset([]), delay=seconds)
    if isinstance(reply, Reply):
        return Reply(
            reply.status, reply.body, reply.raw, dict(reply.headers), seconds, reply.content_type
        )
    return Reply(body=dict(reply), delay=seconds)


def searchset(
    resources: Sequence[Mapping[str, Any]],
    total: int | None = None,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A searchset Bundle of ``resources`` (``total`` defaults to len(resources))."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources) if total is None else total,
        "entry": [
            {
                "fullUrl": f"urn:fake:{r.get('resourceType')}/{r.get('id')}",
                "resource": dict(r),
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
    if links:
        bundle["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    return bundle


def paging_loop(resources: Sequence[Mapping[str, Any]] | None = None) -> Handler:
    """A searchset whose link[next] is the URL that was just requested (an endless loop)."""

    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        # the asked patient's own result, so the loop (not a foreign patient) is the fault
        page = (
            list(resources)
            if resources is not None
            else [observation(0, req.param("patient") or "loop")]
        )
        own_url = srv.url_for(req.relative)
        return Reply(body=searchset(page, total=10**6, links={"self": own_url, "next": own_url}))

    return handle


def huge_searchset(
    total: int = 10_000,
    page_size: int | None = None,
    resource_type: str = "Observation",
    patient: str = "seed-1",
) -> Handler:
    """``total`` generated resources: one single page (page_size=None) or paged.

    Paged mode answers ``_count``/``_offset`` style pages (like sekmet) with an opaque-looking
    link[next]; clients should follow it verbatim.  ``_count`` in the request is ignored in
    favour of ``page_size`` so the page size is under the test's control.
    """
    cache: dict[int, dict[str, Any]] = {}

    def make(i: int) -> dict[str, Any]:
        if i not in cache:
            res = observation(i, patient)
            res["resourceType"] = resource_type
            cache[i] = res
        return cache[i]

    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        if page_size is None:
            return Reply(body=searchset([make(i) for i in range(total)], total=total))
        start, end, links = _page(req, srv, total, page_size)
        return Reply(body=searchset([make(i) for i in range(start, end)], total=total, links=links))

    return handle


def sequence(replies: Iterable[Route], then: Route | None = None) -> Handler:
    """Successive replies per call (e.g. ``[error(503, retry_after=1), bundle]``); afterwards
    ``then`` (default: repeat the last one)."""
    items = list(replies)
    if not items:
        raise ValueError("sequence() needs at least one reply")
    it = iter(items)
    last: list[Route] = [items[-1] if then is None else then]
    lock = threading.Lock()

    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        with lock:
            route = next(it, None)
        return srv.resolve(route if route is not None else last[0], req)

    return handle


def observation(i: int, patient: str) -> dict[str, Any]:
    """The i-th generated IgG Observation of `patient` (a plausible value, distinct id)."""
    return {
        "resourceType": "Observation",
        "id": f"obs-{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2465-3"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2024-01-01",
        "valueQuantity": {"value": 900 + i % 100, "unit": "mg/dL"},
    }


# --------------------------------------------------------------------------- searching a record


def _patient_reference(resource: Mapping[str, Any]) -> str | None:
    """The patient a resource belongs to, as FHIR's `patient` search parameter reads it:
    `subject`, `patient`, or (Coverage) `beneficiary`, without a version."""
    for key in ("subject", "patient", "beneficiary"):
        ref = resource.get(key)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return str(ref["reference"]).split("/_history/", 1)[0]
    return None


def _has_code(resource: Mapping[str, Any], tokens: str) -> bool:
    """FHIR token OR-list: `system|code` matches both, a bare `code` any system."""
    codings = (resource.get("code") or {}).get("coding") or []
    have = {(c.get("system"), c.get("code")) for c in codings if isinstance(c, Mapping)}
    for token in tokens.split(","):
        system, bar, code = token.rpartition("|")
        if bar and (system or None, code) in have:
            return True
        if not bar and any(c == code for _, c in have):
            return True
    return False


def matches(resource: Mapping[str, Any], params: Iterable[tuple[str, str]]) -> bool:
    """The search parameters the service's templates use: `patient` (id or `Patient/<id>`; only
    a relative reference to it matches, like the service's own check), `code` (token OR-list)
    and `status`. Other parameters (`_count`, paging) do not filter."""
    for name, value in params:
        if name == "patient":
            if _patient_reference(resource) != f"Patient/{value.removeprefix('Patient/')}":
                return False
        elif name == "code":
            if not _has_code(resource, value):
                return False
        elif name == "status" and resource.get("status") not in value.split(","):
            return False
    return True


def search(resources: Iterable[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """The resources a FHIR server would answer `<Type>?<params>` with, in the given order."""
    rtype, _, params = query.partition("?")
    pairs = parse_qsl(params, keep_blank_values=True)
    return [r for r in resources if r.get("resourceType") == rtype and matches(r, pairs)]


def prefetch(
    resources: Iterable[dict[str, Any]], keys: Iterable[PrefetchKey], patient_id: str
) -> dict[str, Any]:
    """Answer each prefetch template from the given resources, as an EHR would from memory:
    a read gives the resource (or None), a search one unpaged searchset."""
    pool = list(resources)
    out: dict[str, Any] = {}
    for spec in keys:
        if spec.is_read:
            out[spec.key] = next(
                (
                    r
                    for r in pool
                    if r.get("resourceType") == spec.resource_type and r.get("id") == patient_id
                ),
                None,
            )
        else:
            out[spec.key] = searchset(
                search(pool, spec.query.replace("{{context.patientId}}", patient_id))
            )
    return out


def _page(
    req: RecordedRequest, srv: FaultServer, total: int, page_size: int
) -> tuple[int, int, dict[str, str]]:
    """(start, end, links) of the page asked by `_getpagesoffset`, paged like sekmet: an
    opaque-looking link[next] that clients must follow verbatim."""
    start = int(req.param("_getpagesoffset") or 0)
    end = min(total, start + page_size)
    links = {"self": srv.url_for(req.relative)}
    if end < total:
        keep = [(k, v) for k, v in req.params if k not in ("_getpagesoffset", "_count")]
        nxt = [*keep, ("_getpagesoffset", str(end)), ("_count", str(page_size))]
        links["next"] = srv.url_for(f"{req.path}?{urlencode(nxt)}")
    return start, end, links


def record_search(
    resources: Iterable[dict[str, Any]], latency_s: float = 0.0, page_size: int = 100
) -> Handler:
    """A search route over `resources`: `<Type>?patient=..&code=..&status=..`, `_count` pages
    (default `page_size`) with next links, every answer after `latency_s`. Each page is
    serialised once and cached, so the fake's own work stays far below the latency it
    simulates; the parsed page stays on the reply (`body`) for tests that alter it."""
    pool = list(resources)
    cache: dict[str, tuple[dict[str, Any], bytes]] = {}
    lock = threading.Lock()

    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        with lock:
            hit = cache.get(req.relative)
        if hit is None:
            rows = search(pool, f"{req.path}?{req.query}")
            count = int(req.param("_count") or page_size)
            start, end, links = _page(req, srv, len(rows), count)
            page = searchset(rows[start:end], total=len(rows), links=links)
            hit = (page, json.dumps(page).encode())
            with lock:
                cache[req.relative] = hit
        return Reply(body=hit[0], raw=hit[1], delay=latency_s)

    return handle


def record_routes(resources: Iterable[dict[str, Any]], latency_s: float = 0.0) -> dict[str, Route]:
    """A whole record served like a FHIR server: every search (an empty searchset for a type
    the record lacks), reads (`Patient/{id}` and the like) and 404 for the rest, each answer
    after `latency_s` (a hospital server's round trip, however many requests run at once)."""
    pool = list(resources)
    searching = record_search(pool, latency_s)
    reads = {f"{r['resourceType']}/{r['id']}": json.dumps(r).encode() for r in pool}

    def handle(req: RecordedRequest, srv: FaultServer) -> Reply:
        if "/" not in req.path:
            return searching(req, srv)
        if req.path in reads:
            return Reply(raw=reads[req.path], delay=latency_s)
        return Reply(404, operation_outcome(f"{req.path} not found", "not-found"), delay=latency_s)

    return {"*": handle}


# --------------------------------------------------------------------------- server


class FaultServer:
    """Fake FHIR server on a free loopback port; ``base_url`` ends with ``/fhir``."""

    def __init__(self, routes: Mapping[str, Route] | None = None, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[RecordedRequest] = []
        self.hung_up = 0  # clients that closed a trickling answer before its end
        self.host = host
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FaultServer not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}{BASE_PATH}"

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("FaultServer already started")
        self._stopping.clear()
        httpd = _Server((self.host, 0), _make_handler(self))
        httpd.daemon_threads = True  # a delayed handler must not block shutdown
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.02},  # default 0.5 s would make every stop() slow
            name="FaultServer",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a delay
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration / inspection ----------------------------------------------------

    def set(self, key: str, route: Route) -> None:
        with self._lock:
            self.routes[key] = route

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path.strip("/")]

    def url_for(self, relative: str) -> str:
        return f"{self.base_url}/{relative.lstrip('/')}" if relative else self.base_url

    def resolve(self, route: Route, req: RecordedRequest) -> Reply:
        if isinstance(route, Reply):
            return route
        if isinstance(route, Mapping):
            return Reply(body=dict(route))
        return route(req, self)

    # -- request handling --------------------------------------------------------------

    def _route_for(self, req: RecordedRequest) -> Route | None:
        with self._lock:
            for key in (req.relative, req.path, "*"):
                if key in self.routes:
                    return self.routes[key]
        return None

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        parts = urlsplit(target)
        path = parts.path
        if path == BASE_PATH or path.startswith(BASE_PATH + "/"):
            rel = path[len(BASE_PATH) :].strip("/")
        else:
            rel = path.strip("/")
        req = RecordedRequest(
            method=method,
            path=rel,
            query=parts.query,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            target=target,
        )
        with self._lock:
            self.requests.append(req)
        route = self._route_for(req)
        if route is None:
            return Reply(404, operation_outcome(f"no fake route for {req.relative!r}", "not-found"))
        reply = self.resolve(route, req)
        if reply.delay > 0 and self._stopping.wait(reply.delay):
            raise _Abort
        return reply


class _Server(ThreadingHTTPServer):
    # the default listen backlog (5) drops SYNs when a client opens ~10 connections at once,
    # which then wait a full second for the retransmit: make room for concurrent clients
    request_queue_size = 128


class _Abort(Exception):
    """Server is stopping while a delayed reply waits: drop the connection."""


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms stalls

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                reply = server._handle(self.command, self.path, dict(self.headers.items()), body)
            except _Abort:
                self.close_connection = True
                return
            except Exception as e:  # a broken test handler -> 500 rather than a hung client
                reply = Reply(500, operation_outcome(f"fake server handler crashed: {e!r}"))
            payload = reply.payload()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                if reply.sized:
                    self.send_header("Content-Length", str(len(payload)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD" and reply.trickle > 0:
                    self._trickle(payload, reply.trickle)
                elif self.command != "HEAD":
                    self.wfile.write(payload)

        def _trickle(self, payload: bytes, pause: float) -> None:
            """One byte at a time; counts the clients that hang up before the end."""
            try:
                for i in range(len(payload)):
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
                    if server._stopping.wait(pause):
                        return
            except (BrokenPipeError, ConnectionResetError):
                with server._lock:
                    server.hung_up += 1
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return _Handler
