"""Fetch prefetch keys the EHR did not send from its FHIR server (CDS Hooks 2.0 `fhirServer`).

One pooled HTTP client (urllib3 `PoolManager`) shared by all requests; the queries of one request
run concurrently on a shared thread pool under one overall time budget, at most
`workers_per_server` of them at a time per FHIR server (`_TenantPool`), so a slow or hung server
queues its own queries instead of holding every worker. Each query:

- is the discovery template with its CDS Hooks tokens filled in (`{{context.patientId}}` ...), sent
  with the request's `fhirAuthorization` bearer token (and `_count` added to searches);
- is only sent to a `fhirServer` on the allowlist (`IVIG_CDS_FHIR_ALLOWLIST`; loopback in demo);
  a server off the list is never contacted and its keys are unreadable (412 when required);
- is split into several concurrent queries when its code OR-list would make the URL longer than
  `fetch_max_url` (the union of their results is the same result);
- retries 429/503 with backoff (urllib3 `Retry`, honouring Retry-After) only while the budget lasts;
- follows `link[next]` verbatim (never rebuilt), only on the same origin, with page and resource
  caps and loop detection; never follows redirects (the token must not travel);
- reads the answer as it streams in (`_JsonStream`), within a byte cap per page, a byte budget for
  all answers of the request and the resource cap per search, each checked as the bytes or
  entries arrive: a huge answer is dropped at the cap, never downloaded whole or held in memory;
- checks the answer: a searchset Bundle (or the resource read), entries of the asked type and this
  patient (others dropped), OperationOutcome entries reported (errors make the key unreadable).

A key that cannot be read gets a plain-language reason; the caller decides 412 vs partial.
Logs carry key names, resource types, counts, status codes and timings: never URLs (they hold the
patient id), resource ids, names or tokens.
"""

from __future__ import annotations

import codecs
import ipaddress
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry

from cds_service import __version__
from cds_service.fhir.bundle import for_patient, refers_to_patient
from cds_service.fhir.query import PrefetchKey
from cds_service.protocol import MAX_JSON_DEPTH, ParsedRequest, too_deep

log = logging.getLogger(__name__)
# urllib3 logs request URLs (which carry the patient id) at DEBUG and on retries: keep it quiet
logging.getLogger("urllib3").setLevel(logging.ERROR)

FHIR_JSON = "application/fhir+json"
# Resource types a search may legitimately carry besides the one asked for (_include'd).
_INCLUDABLE = frozenset({"Medication"})
_TOKEN = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9.]*)\s*\}\}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Unreadable(Exception):
    """A key could not be read; the message is the reason given to the EHR (no token, no PHI)."""


class _OutOfBudget(Exception):
    pass


@dataclass(frozen=True)
class FetchLimits:
    budget_s: float = 3.0
    timeout_s: float = 2.0
    max_pages: int = 20
    max_resources: int = 5000
    page_size: int = 200
    workers: int = 96  # threads shared by all requests
    workers_per_server: int = 16  # of those, at most this many on one fhirServer at a time
    max_url: int = 2048  # longer code lists are split over several queries
    max_bytes: int = 4_000_000  # largest answer read (decoded), per page
    request_max_bytes: int = 32_000_000  # all answers read for one request, together


# ------------------------------------------------------------------------------ allowlist


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str


def _origin(url: str) -> _Origin | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    # dot segments ("..", "%2e%2e") would climb out of an allowed base path once the client
    # (urllib3 removes them) or the server normalises the path: never allowed
    # (also when the slash itself is encoded, %2F, or a backslash, as some servers decode them)
    if any(seg in (".", "..") for seg in unquote(parts.path).replace("\\", "/").split("/")):
        return None
    return _Origin(
        scheme,
        parts.hostname.lower(),
        port or _DEFAULT_PORTS[scheme],
        parts.path.rstrip("/"),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Allowlist:
    """FHIR base URLs the service may call: same scheme, host and port, and the same path or a
    path below it. `loopback=True` (demo) also allows any http(s) server on this machine."""

    def __init__(self, bases: list[str], loopback: bool = False) -> None:
        self.loopback = loopback
        self.bases: list[_Origin] = []
        for base in bases:
            origin = _origin(base)
            if origin is None:
                raise ValueError(f"fhir_allowlist entry is not an http(s) base URL: {base!r}")
            self.bases.append(origin)

    def allows(self, url: str) -> bool:
        o = _origin(url)
        if o is None:
            return False
        if self.loopback and _is_loopback(o.host):
            return True
        return any(
            (o.scheme, o.host, o.port) == (b.scheme, b.host, b.port)
            and (o.path == b.path or o.path.startswith(b.path + "/"))
            for b in self.bases
        )


def same_origin(a: str, b: str) -> bool:
    oa, ob = _origin(a), _origin(b)
    return (
        oa is not None
        and ob is not None
        and (oa.scheme, oa.host, oa.port)
        == (
            ob.scheme,
            ob.host,
            ob.port,
        )
    )


# ------------------------------------------------------------------------------ templates


def token_values(parsed: ParsedRequest) -> dict[str, str]:
    """CDS Hooks 2.0 prefetch tokens available for this request."""
    values = {
        f"context.{k}": str(v)
        for k, v in parsed.request.context.items()
        if isinstance(v, str | int) and not isinstance(v, bool)
    }
    rtype, _, rid = parsed.context.userId.partition("/")
    if rid and rtype in ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"):
        values[f"user{rtype}Id"] = rid
    return values


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill `{{token}}`s (URL-encoded); a token without a value makes the query unreadable."""

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise Unreadable(f"the query needs {{{{{name}}}}}, which the request does not carry")
        return quote(values[name], safe="")

    return _TOKEN.sub(fill, template)


# ------------------------------------------------------------------------------ JSON stream

_WS = re.compile(r"[ \t\n\r]*")
_SCANNER = json.JSONDecoder()  # finds where one JSON value ends (C scanner; orjson reads it)


class _Malformed(Exception):
    """The answer is not one JSON object (the message says how, when it is valid JSON)."""


class _Incomplete(Exception):
    """The text ends inside the value being read: read it again when more has arrived."""


def _ws_end(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]  # always matches (`*`)


class _JsonStream:
    """One JSON object read as its bytes arrive: its members one by one, and the items of its
    `entry` array (a Bundle's entries) each handed to `on_entry` as soon as it is complete. So
    the caps on resources are checked while a page streams in, and only the unfinished tail of
    the text is held, never a whole page of text beside its parsed entries.

    The standard library's C scanner finds where a value ends; orjson parses it (the same
    parser, with the same strictness, as every other JSON this service reads). A value not yet
    complete is retried once the text after it has doubled, so reading stays linear."""

    def __init__(self, on_entry: Callable[[Any], None] | None) -> None:
        self.members: dict[str, Any] = {}
        self._on_entry = on_entry
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._pos = 0
        self._pending: list[str] = []
        self._pending_len = 0
        self._retry_at = 0
        self._state = "start"  # start -> member <-> entries -> done
        self._after_item = False  # a comma is expected before the next member or entry
        self._entries: list[Any] | None = None  # entries kept when no on_entry is given

    def feed(self, data: bytes, final: bool = False) -> None:
        try:
            chunk = self._utf8.decode(data, final)
        except UnicodeDecodeError:
            raise _Malformed from None
        if chunk:
            self._pending.append(chunk)
            self._pending_len += len(chunk)
        if not final and len(self._text) - self._pos + self._pending_len < self._retry_at:
            return
        self._text = self._text[self._pos :] + "".join(self._pending)
        self._pos, self._pending, self._pending_len = 0, [], 0
        self._run(final)
        if final and self._state != "done":
            raise _Malformed

    def result(self) -> dict[str, Any]:
        if self._entries is not None:
            self.members["entry"] = self._entries
        return self.members

    def _value(self, start: int, depth_left: int) -> tuple[Any, int]:
        """The JSON value at `start` and where it ends; _Incomplete when the text stops first."""
        try:
            _, end = _SCANNER.raw_decode(self._text, start)
        except RecursionError:
            raise Unreadable(
                f"fhirServer sent JSON nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        except json.JSONDecodeError:
            raise _Incomplete from None  # or malformed: told apart when the text has ended
        if end >= len(self._text):
            # a number cut by a chunk boundary ("-1" of "-10") scans as complete: a value is
            # only taken once something follows it (a document never ends with a value)
            raise _Incomplete
        try:
            value = orjson.loads(self._text[start:end])
        except orjson.JSONDecodeError:  # e.g. NaN, a lone surrogate: valid to the C scanner only
            raise _Malformed from None
        if too_deep(value, depth_left):
            raise Unreadable(f"fhirServer sent JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return value, end

    def _run(self, final: bool) -> None:
        text = self._text
        while True:
            pos = self._pos = _ws_end(text, self._pos)
            if pos >= len(text):
                self._retry_at = 0
                return
            if self._state == "done":
                raise _Malformed  # text after the object
            try:
                if self._state == "start":
                    if text[pos] != "{":
                        raise _Malformed("JSON that is not a FHIR resource")
                    self._pos, self._state = pos + 1, "member"
                elif self._state == "member":
                    self._member(text, pos)
                else:
                    self._entry(text, pos)
            except (_Incomplete, json.JSONDecodeError):
                if final:
                    raise _Malformed from None
                self._pos = pos  # this member or entry again once more text has come
                self._retry_at = max(2 * (len(text) - pos), 65536)
                return

    def _after_comma(self, text: str, pos: int) -> int:
        """Where the next item starts: after the comma that must follow a previous item."""
        if not self._after_item:
            return pos
        if text[pos] != ",":
            raise _Malformed
        return _ws_end(text, pos + 1)

    def _member(self, text: str, pos: int) -> None:
        """One member of the top-level object (or its end); `entry` opens the entries state."""
        if text[pos] == "}":
            self._pos, self._state = pos + 1, "done"
            return
        pos = self._after_comma(text, pos)
        key, pos = _SCANNER.raw_decode(text, pos)
        pos = _ws_end(text, pos)
        if pos >= len(text):
            raise _Incomplete
        if not isinstance(key, str) or text[pos] != ":":
            raise _Malformed
        pos = _ws_end(text, pos + 1)
        if pos >= len(text):
            raise _Incomplete
        if key == "entry" and text[pos] == "[":
            self._pos, self._state, self._after_item = pos + 1, "entries", False
            if self._on_entry is None:
                self._entries = []
            return
        self.members[key], self._pos = self._value(pos, MAX_JSON_DEPTH - 1)
        self._after_item = True

    def _entry(self, text: str, pos: int) -> None:
        """One item of `entry` (kept, or handed to on_entry), or the end of the array."""
        if text[pos] == "]":
            self._pos, self._state, self._after_item = pos + 1, "member", True
            return
        pos = self._after_comma(text, pos)
        item, self._pos = self._value(pos, MAX_JSON_DEPTH - 2)
        self._after_item = True
        if self._entries is not None:
            self._entries.append(item)
        else:
            assert self._on_entry is not None
            self._on_entry(item)


# ------------------------------------------------------------------------------ HTTP


class _Allowance:
    """The bytes all queries of one request may still read (`request_max_bytes`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._left = limit
        self._lock = threading.Lock()

    def spend(self, size: int) -> None:
        with self._lock:
            self._left -= size
            if self._left < 0:
                raise Unreadable(
                    f"fhirServer's answers to this request exceed {self.limit} bytes together, "
                    "too much to read"
                )


class _BudgetRetry(Retry):
    """urllib3 Retry that never sleeps past the request's deadline."""

    deadline: float = float("inf")

    def new(self, **kw: Any) -> _BudgetRetry:
        retry = super().new(**kw)
        retry.deadline = self.deadline
        return retry

    def sleep(self, response: Any = None) -> None:
        wait_s: float | None = None
        if response is not None and self.respect_retry_after_header:
            wait_s = self.get_retry_after(response)
        if wait_s is None:
            wait_s = self.get_backoff_time()
        if time.monotonic() + wait_s >= self.deadline:
            status = getattr(response, "status", None)
            raise _OutOfBudget(
                f"fhirServer is busy (HTTP {status}) and a retry after {wait_s:g} s "
                "would not fit in the time budget"
            )
        time.sleep(wait_s)


def _outcome_summary(body: Any, limit: int = 200) -> str:
    """Issue codes and diagnostics of an OperationOutcome (returned to the EHR, not logged)."""
    parts = []
    for iss in (body.get("issue") or []) if isinstance(body, dict) else []:
        if isinstance(iss, dict):
            details = iss.get("details") if isinstance(iss.get("details"), dict) else {}
            text = (details or {}).get("text") or iss.get("diagnostics") or iss.get("code")
            parts.append(f"{iss.get('severity', '?')}: {text}")
    return ("; ".join(parts) or "no details")[:limit]


def _status_reason(status: int, body: Any) -> str:
    if status in (401, 403):
        return f"fhirServer refused access (HTTP {status})"
    if status in (404, 410):
        return f"fhirServer does not know this query (HTTP {status}: {_outcome_summary(body)})"
    if status in (429, 503):
        return f"fhirServer is overloaded or unavailable (HTTP {status})"
    if status >= 500:
        return f"fhirServer failed (HTTP {status})"
    if 300 <= status < 400:
        return f"fhirServer answered with a redirect (HTTP {status}), which is not followed"
    return f"fhirServer rejected the query (HTTP {status}: {_outcome_summary(body)})"


class _TenantPool:
    """A shared thread pool that runs at most `per_tenant` jobs of one tenant (a fhirServer
    origin) at a time; the others wait in that tenant's queue, holding no thread. A server that
    trickles or never answers thus delays only its own queries (each waits at most until its
    request's deadline, when the caller cancels it), never another tenant's."""

    def __init__(
        self,
        workers: int,
        per_tenant: int,
        executor: type[ThreadPoolExecutor] = ThreadPoolExecutor,
    ) -> None:
        self._executor = executor(max_workers=workers, thread_name_prefix="fhir-fetch")
        self._per_tenant = per_tenant
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[tuple[Future[Any], Callable[[], Any]]]] = {}

    def submit(self, tenant: str, call: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            start = self._running.get(tenant, 0) < self._per_tenant
            if start:
                self._running[tenant] = self._running.get(tenant, 0) + 1
            else:
                self._waiting.setdefault(tenant, deque()).append((fut, call))
        if start:
            self._start(tenant, fut, call)
        return fut

    def _start(self, tenant: str, fut: Future[Any], call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(call())
                    except BaseException as exc:  # handed to the caller through the future
                        fut.set_exception(exc)
            finally:
                self._next(tenant)

        try:
            self._executor.submit(run)
        except RuntimeError:  # shut down: nothing more runs
            fut.cancel()

    def _next(self, tenant: str) -> None:
        """A job of `tenant` ended: start its next queued job that was not cancelled."""
        with self._lock:
            queue = self._waiting.get(tenant)
            while queue and queue[0][0].cancelled():
                queue.popleft()
            item = queue.popleft() if queue else None
            if item is None:
                self._waiting.pop(tenant, None)
                left = self._running.get(tenant, 1) - 1
                if left > 0:
                    self._running[tenant] = left
                else:
                    self._running.pop(tenant, None)
        if item is not None:
            self._start(tenant, *item)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _KeyStats:
    pages: int = 0
    read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


class FhirFetcher:
    """The pipeline's `Fetcher`: (request, absent keys) -> (values by key, unreadable -> why)."""

    # the pool's thread executor (a subclass may run jobs in the submitter's logging context)
    executor: type[ThreadPoolExecutor] = ThreadPoolExecutor

    def __init__(self, allowlist: Allowlist, limits: FetchLimits | None = None) -> None:
        self.allowlist = allowlist
        self.limits = limits or FetchLimits()
        self.headers = {"Accept": FHIR_JSON, "User-Agent": f"ivig-cds/{__version__}"}
        self.pool = urllib3.PoolManager(num_pools=32, maxsize=self.limits.workers, block=False)
        self._pool = _TenantPool(self.limits.workers, self.limits.workers_per_server, self.executor)

    def close(self) -> None:
        self._pool.shutdown()
        self.pool.clear()

    # -- entry point -------------------------------------------------------------------
    def __call__(
        self, parsed: ParsedRequest, specs: list[PrefetchKey]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        server = (parsed.request.fhirServer or "").rstrip("/")
        if not server:
            return {}, {s.key: "not in prefetch and no fhirServer to fetch from" for s in specs}
        if not self.allowlist.allows(server):
            log.warning("fhirServer not on the allowlist; %d keys not fetched", len(specs))
            why = (
                f"fhirServer {server} is not on this service's allowlist of FHIR servers "
                "(IVIG_CDS_FHIR_ALLOWLIST), so it was not queried"
            )
            return {}, {s.key: why for s in specs}
        headers = dict(self.headers)
        auth = parsed.request.fhirAuthorization
        if auth is not None:
            headers["Authorization"] = f"Bearer {auth.access_token}"
        tokens = token_values(parsed)
        budget = self.limits.budget_s
        started = time.monotonic()
        deadline = started + budget
        allowance = _Allowance(self.limits.request_max_bytes)
        values: dict[str, Any] = {}
        unreadable: dict[str, str] = {}
        futures: dict[Future[Any], PrefetchKey] = {}
        origin = _origin(server)
        tenant = f"{origin.scheme}://{origin.host}:{origin.port}" if origin else server
        for spec in specs:
            try:
                relative = render_template(spec.query, tokens)
            except Unreadable as exc:
                unreadable[spec.key] = str(exc)
                continue
            # a search whose code list is too long for one URL runs as several concurrent queries
            urls = [f"{server}/{relative}"] if spec.is_read else self._start_urls(server, relative)
            for url in urls:
                job = self._pool.submit(
                    tenant,
                    partial(
                        self._fetch_key, server, spec, url, headers, tokens, deadline, allowance
                    ),
                )
                futures[job] = spec
        done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for fut in pending:
            fut.cancel()
            unreadable[futures[fut].key] = f"not read within the {budget:g} s time budget"
        parts: dict[str, list[Any]] = {}
        for fut in done:
            key = futures[fut].key
            try:
                parts.setdefault(key, []).append(fut.result())
            except Unreadable as exc:
                unreadable.setdefault(key, str(exc))
            except Exception as exc:  # never a 500 for what a remote server did
                # no traceback: its messages may carry the query URL (the patient id)
                log.error("fetch %s: unexpected %s", key, type(exc).__name__)
                unreadable.setdefault(key, f"could not be read ({type(exc).__name__})")
        for key, results in parts.items():
            if key not in unreadable:
                values[key] = results[0] if len(results) == 1 else _merge(results)
        log.info(
            "fetched %d/%d keys in %.0f ms; unreadable: %s",
            len(values),
            len(specs),
            (time.monotonic() - started) * 1000,
            sorted(unreadable) or "none",
        )
        return values, unreadable

    # -- one key -----------------------------------------------------------------------
    def _get(
        self,
        url: str,
        headers: dict[str, str],
        deadline: float,
        allowance: _Allowance,
        on_entry: Callable[[Any], None] | None = None,
    ) -> tuple[int, Any]:
        """Status and JSON body of one GET; with `on_entry`, a 200 Bundle's entries go to it as
        they arrive instead of into the body."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _OutOfBudget
        per_call = min(self.limits.timeout_s, remaining)
        retry = _BudgetRetry(
            total=3,
            connect=0,
            read=0,
            redirect=0,
            other=0,
            status=3,
            status_forcelist=(429, 503),
            allowed_methods=frozenset({"GET"}),
            backoff_factor=0.1,
            backoff_max=1.0,
            raise_on_redirect=False,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        retry.deadline = deadline
        try:
            resp = self.pool.request(
                "GET",
                url,
                headers=headers,
                timeout=urllib3.Timeout(connect=per_call, read=per_call),
                retries=retry,
                redirect=False,
                preload_content=False,
            )
            body = self._read_body(
                resp, deadline, allowance, on_entry if resp.status == 200 else None
            )
        except MaxRetryError as exc:
            raise Unreadable(self._transport_reason(exc.reason)) from None
        except (ConnectTimeoutError, ReadTimeoutError, NewConnectionError, SSLError) as exc:
            raise Unreadable(self._transport_reason(exc)) from None
        except ProtocolError:
            raise Unreadable("fhirServer closed the connection mid-answer") from None
        except HTTPError as exc:
            raise Unreadable(f"could not talk to fhirServer ({type(exc).__name__})") from None
        return resp.status, body

    def _read_body(
        self,
        resp: Any,
        deadline: float,
        allowance: _Allowance,
        on_entry: Callable[[Any], None] | None,
    ) -> Any:
        """The answer's JSON, parsed as it streams in, within every cap at once: `max_bytes` per
        page and `request_max_bytes` for the whole request (a larger answer is never held in
        memory), the resource caps (checked by `on_entry` as each entry ends), and the request's
        time budget: a server that trickles its answer a byte at a time no longer holds a shared
        worker after the budget. Each read returns what has arrived (`read1`), so the deadline is
        checked between them. Whatever stops the reading drops the connection (never reused)."""
        limit = self.limits.max_bytes
        declared = resp.headers.get("Content-Length", "")
        stream = _JsonStream(on_entry)
        size = 0
        try:
            too_large = f"fhirServer's answer exceeds {limit} bytes, too large to read"
            if declared.isdigit() and int(declared) > limit:
                raise Unreadable(too_large)
            while True:
                if time.monotonic() > deadline:
                    raise _OutOfBudget
                chunk = resp.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise Unreadable(too_large)
                allowance.spend(len(chunk))
                stream.feed(chunk)
            if size:
                stream.feed(b"", final=True)
        except _Malformed as exc:
            resp.close()
            if resp.status >= 400:
                return None  # an error status says enough without its body
            raise Unreadable(
                f"fhirServer sent {str(exc) or 'malformed JSON'} (HTTP {resp.status})"
            ) from None
        except BaseException:
            resp.close()
            raise
        resp.release_conn()
        return stream.result() if size else None

    def _transport_reason(self, exc: BaseException | None) -> str:
        if isinstance(exc, NewConnectionError):  # (a subclass of ConnectTimeoutError)
            return "could not connect to fhirServer"
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return f"fhirServer did not answer within {self.limits.timeout_s:g} s"
        if isinstance(exc, SSLError):
            return "TLS handshake with fhirServer failed"
        return f"could not talk to fhirServer ({type(exc).__name__})"

    def _fetch_key(
        self,
        server: str,
        spec: PrefetchKey,
        url: str,
        headers: dict[str, str],
        tokens: dict[str, str],
        deadline: float,
        allowance: _Allowance,
    ) -> Any:
        t0 = time.monotonic()
        patient = tokens.get("context.patientId", "")
        try:
            if spec.is_read:
                return self._read(spec, url, headers, patient, deadline, allowance)
            return self._search(server, spec, url, headers, patient, deadline, allowance, t0)
        except _OutOfBudget as exc:
            raise Unreadable(
                str(exc) or f"not read within the {self.limits.budget_s:g} s time budget"
            ) from None
        except Unreadable as exc:
            log.warning("fetch %s: unreadable (%s)", spec.key, type(exc).__name__)
            raise

    def _read(
        self,
        spec: PrefetchKey,
        url: str,
        headers: dict[str, str],
        patient: str,
        deadline: float,
        allowance: _Allowance,
    ) -> Any:
        status, body = self._get(url, headers, deadline, allowance)
        if status in (404, 410):
            log.info("fetch %s: HTTP %d, no such %s", spec.key, status, spec.resource_type)
            return None  # the server holds no such resource: "no data", like a null prefetch
        if status != 200:
            raise Unreadable(_status_reason(status, body))
        if not isinstance(body, dict) or body.get("resourceType") != spec.resource_type:
            got = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
            raise Unreadable(f"fhirServer answered a {got} where a {spec.resource_type} was asked")
        if spec.resource_type == "Patient" and body.get("id") != patient:
            raise Unreadable("fhirServer answered a different Patient than the one asked for")
        return body

    def _start_urls(self, server: str, relative: str) -> list[str]:
        """The search as one URL, or, when its OR-list of codes would make the URL longer than
        `max_url`, as several URLs each carrying a share of the codes (the union of their
        results is the same result: `code=a,b` matches exactly what `code=a` or `code=b` does)."""
        path, _, query = relative.partition("?")
        params = [p for p in query.split("&") if p]
        if not any(p.startswith("_count=") for p in params):
            params.append(f"_count={self.limits.page_size}")

        def url(ps: list[str]) -> str:
            return f"{server}/{path}?{'&'.join(ps)}"

        code_at = next((i for i, p in enumerate(params) if p.startswith("code=")), None)
        if code_at is None or _wire_length(url(params)) <= self.limits.max_url:
            return [url(params)]
        codes = params[code_at].removeprefix("code=").split(",")
        others = params[:code_at] + params[code_at + 1 :]
        room = self.limits.max_url - _wire_length(url([*others, "code="]))
        chunks: list[list[str]] = [[]]
        for code in codes:
            if chunks[-1] and _wire_length(",".join([*chunks[-1], code])) > room:
                chunks.append([])
            chunks[-1].append(code)
        return [url([*others, "code=" + ",".join(chunk)]) for chunk in chunks]

    def _search(
        self,
        server: str,
        spec: PrefetchKey,
        url: str,
        headers: dict[str, str],
        patient: str,
        deadline: float,
        allowance: _Allowance,
        t0: float,
    ) -> dict[str, Any]:
        stats = _KeyStats()
        entries: dict[tuple[str, str], dict[str, Any]] = {}
        errors: list[str] = []
        self._pages(
            url, server, spec, headers, patient, deadline, allowance, stats, entries, errors
        )
        stats.kept = len(entries)
        if stats.outcomes:
            log.warning("fetch %s: OperationOutcome entries %s", spec.key, dict(stats.outcomes))
        if stats.dropped:
            log.warning(
                "fetch %s: dropped entries of other types or patients %s",
                spec.key,
                dict(stats.dropped),
            )
        log.info(
            "fetch %s: %d %s in %d page(s), %.0f ms",
            spec.key,
            stats.kept,
            spec.resource_type,
            stats.pages,
            (time.monotonic() - t0) * 1000,
        )
        if errors:
            raise Unreadable(f"fhirServer reported an error: {'; '.join(errors)}"[:300])
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": res} for res in entries.values()],
        }

    def _pages(
        self,
        url: str,
        server: str,
        spec: PrefetchKey,
        headers: dict[str, str],
        patient: str,
        deadline: float,
        allowance: _Allowance,
        stats: _KeyStats,
        entries: dict[tuple[str, str], dict[str, Any]],
        errors: list[str],
    ) -> None:
        """Read one search and its next pages into `entries` (keyed by type and id); each entry
        is counted and sorted as soon as it has arrived, so the resource cap stops the reading
        of a page that holds too many, before the rest of it is downloaded."""
        lim = self.limits
        seen: set[str] = set()

        def take(entry: Any) -> None:
            stats.read += 1
            if stats.read > lim.max_resources:
                raise Unreadable(
                    f"the {spec.resource_type} search returned more than {lim.max_resources} "
                    "resources, too many to read"
                )
            res = entry.get("resource") if isinstance(entry, dict) else None
            rtype = res.get("resourceType") if isinstance(res, dict) else None
            if not isinstance(res, dict) or not isinstance(rtype, str):
                stats.dropped["(not a resource)"] += 1
            elif rtype == "OperationOutcome":
                for iss in res.get("issue") or []:
                    if isinstance(iss, dict):
                        stats.outcomes[f"{iss.get('severity')}/{iss.get('code')}"] += 1
                        if iss.get("severity") in ("error", "fatal"):
                            errors.append(_outcome_summary({"issue": [iss]}))
            elif rtype in _INCLUDABLE or (
                rtype == spec.resource_type and _belongs_to(res, patient, server)
            ):
                entries.setdefault((rtype, str(res.get("id"))), res)
            elif rtype == spec.resource_type and rtype != "Coverage":
                # asked for this patient, answered with another's: the search cannot be
                # trusted as this patient's record (the prefetch path says the same). A
                # Coverage search may list the subscriber's family: those are dropped.
                raise Unreadable(
                    f"fhirServer answered a {rtype} of another patient to a search for this "
                    "patient's"
                )
            else:
                stats.dropped[rtype] += 1

        while True:
            seen.add(url)
            status, body = self._get(url, headers, deadline, allowance, on_entry=take)
            stats.pages += 1
            if status != 200:
                raise Unreadable(_status_reason(status, body))
            if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
                got = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
                if got == "OperationOutcome":
                    raise Unreadable(f"fhirServer answered an error: {_outcome_summary(body)}")
                raise Unreadable(f"fhirServer answered a {got} where a search Bundle was asked")
            if body.get("type") != "searchset":
                raise Unreadable(
                    f"fhirServer answered a Bundle of type {body.get('type')!r}, not a searchset"
                )
            if body.get("entry") is not None:  # not an array: the stream left it here
                raise Unreadable("fhirServer answered a Bundle whose entry is not a list")
            nxt = next(
                (
                    ln.get("url")
                    for ln in body.get("link") or []
                    if isinstance(ln, dict) and ln.get("relation") == "next"
                ),
                None,
            )
            if not nxt:
                return
            if not isinstance(nxt, str) or not same_origin(nxt, server):
                raise Unreadable("fhirServer's next-page link leaves fhirServer; not followed")
            if not self.allowlist.allows(nxt):
                raise Unreadable("fhirServer's next-page link is not on the allowlist")
            if nxt in seen:
                raise Unreadable(
                    f"fhirServer's paging loops (the {spec.resource_type} next-page link "
                    "repeats a page already read)"
                )
            if stats.pages >= lim.max_pages:
                raise Unreadable(
                    f"the {spec.resource_type} search has more than {lim.max_pages} pages"
                )
            url = nxt


def _merge(bundles: list[dict[str, Any]]) -> dict[str, Any]:
    """One searchset of the entries of several (de-duplicated by type and id)."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for bundle in bundles:
        for entry in bundle["entry"]:
            res = entry["resource"]
            entries.setdefault((str(res.get("resourceType")), str(res.get("id"))), entry)
    return {"resourceType": "Bundle", "type": "searchset", "entry": list(entries.values())}


def _belongs_to(res: dict[str, Any], patient: str, server: str | None = None) -> bool:
    """The resource is this patient's (Coverage names its patient as `beneficiary`)."""
    if res.get("resourceType") == "Coverage":
        ref = res.get("beneficiary")
        target = ref.get("reference") if isinstance(ref, dict) else None
        return isinstance(target, str) and refers_to_patient(target, patient, server)
    return for_patient(res, patient, server)


def _wire_length(text: str) -> int:
    """Length once percent-encoded as sent (`|` and other unsafe characters take 3 bytes)."""
    return len(quote(text, safe=":/?&=,%-._~+"))
