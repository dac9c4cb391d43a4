"""Run a real local FHIR R4 server (PyPI ``sekmet-fhir==0.1.1``) as a subprocess for tests.

The server lives in its *own* virtualenv (it pins ~47 dependencies that must not leak into the
service's venv).  Typical use from a pytest session fixture::

    exe = ensure_installed(Path(".venv-fhir"))
    with FhirServer(exe) as srv:
        srv.load_transaction(bundle)
        requests.get(f"{srv.base_url}/Observation?patient=seed-1")

Every server gets a fresh temporary directory (settings file, SQLite data dir, log file, cwd) and
a free loopback port.  ``stop()`` kills the whole process group by PID and deletes the directory.
Only the standard library and ``requests`` are used.

Development tooling (tests, `make harness`), never on the request path; `make fhir-server` runs
`python -m tools.local_fhir install .venv-fhir`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import requests

__all__ = [
    "SEKMET_REQUIREMENT",
    "FhirServer",
    "FhirServerError",
    "ensure_installed",
    "free_port",
    "outcome_text",
]

SEKMET_REQUIREMENT = "sekmet-fhir==0.1.1"
_SEKMET_VERSION = SEKMET_REQUIREMENT.split("==")[1]
FHIR_JSON = "application/fhir+json"
Validation = Literal["strict", "warn", "off"]

_PR_SET_PDEATHSIG = 1


class FhirServerError(RuntimeError):
    """Install/startup failure, or a FHIR request answered with an error."""


# --------------------------------------------------------------------------- install


def _sekmet_exe(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "sekmet"


def _is_installed(venv_dir: Path) -> bool:
    """Cheap check (no subprocess): console script + dist-info of the pinned version exist."""
    if not _sekmet_exe(venv_dir).is_file():
        return False
    pattern = f"lib/python*/site-packages/sekmet_fhir-{_SEKMET_VERSION}.dist-info"
    return any(venv_dir.glob(pattern))


def ensure_installed(venv_dir: Path, *, python: str | None = None, timeout: float = 600.0) -> Path:
    """Create ``venv_dir`` and pip-install sekmet-fhir into it unless already there.

    Returns the path of the ``sekmet`` console script.  Idempotent: when installed this is a
    couple of ``stat`` calls (no subprocess).  Concurrent callers (e.g. pytest-xdist workers)
    are serialised with an ``flock`` on ``<venv_dir>.lock``.
    """
    venv_dir = venv_dir.absolute()
    if _is_installed(venv_dir):
        return _sekmet_exe(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv_dir.with_name(venv_dir.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_installed(venv_dir):  # another process finished while we waited
                return _sekmet_exe(venv_dir)
            py = python or sys.executable
            pip = venv_dir / "bin" / "pip"
            steps: list[list[str]] = []
            if not pip.is_file():
                steps.append([py, "-m", "venv", str(venv_dir)])
            steps.append(
                [str(pip), "install", "--disable-pip-version-check", "-q", SEKMET_REQUIREMENT]
            )
            for cmd in steps:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=timeout, check=False
                )
                if proc.returncode != 0:
                    tail = (proc.stdout + proc.stderr)[-3000:]
                    raise FhirServerError(
                        f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}"
                    )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if not _is_installed(venv_dir):
        raise FhirServerError(
            f"{SEKMET_REQUIREMENT} installed but {_sekmet_exe(venv_dir)} is missing"
        )
    return _sekmet_exe(venv_dir)


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server start retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def outcome_text(body: object) -> str:
    """Human-readable text of an OperationOutcome (or of any JSON body, as a fallback)."""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        parts: list[str] = []
        for iss in body.get("issue") or []:
            if not isinstance(iss, dict):
                continue
            details = iss.get("details")
            text = details.get("text") if isinstance(details, dict) else None
            msg = text or iss.get("diagnostics") or iss.get("code") or "?"
            parts.append(f"{iss.get('severity', '?')}: {msg}")
        return "; ".join(parts) or "OperationOutcome without issues"
    return json.dumps(body)[:2000]


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the server if the process that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- server


class FhirServer:
    """A sekmet FHIR R4 server subprocess on a free loopback port with a throw-away data dir.

    Use as a context manager or call ``start()`` / ``stop()``.  ``stop()`` is idempotent, also
    registered with ``atexit``, and the child gets ``PR_SET_PDEATHSIG=SIGKILL`` (Linux) so that
    it dies with the parent even on SIGKILL of the test runner.  Caveat: PDEATHSIG fires when
    the *thread* that started the server exits, so start it from a long-lived thread (pytest
    fixtures run in the main thread) or pass ``kill_with_parent=False``.
    """

    def __init__(
        self,
        exe: Path,
        *,
        validation: Validation = "strict",
        startup_timeout: float = 30.0,
        host: str = "127.0.0.1",
        extra_settings: Mapping[str, Any] | None = None,
        kill_with_parent: bool = True,
        port_attempts: int = 3,
        tmp_root: Path | None = None,
    ) -> None:
        self.exe = Path(exe).absolute()  # the child runs with cwd=workdir
        self.validation: Validation = validation
        self.startup_timeout = startup_timeout
        self.host = host
        self.extra_settings = dict(extra_settings or {})
        self.kill_with_parent = kill_with_parent
        self.port_attempts = port_attempts
        self.tmp_root = tmp_root  # parent of the per-server temp dir (default: $TMPDIR)
        self.port = 0
        self.workdir: Path | None = None
        self.startup_seconds = 0.0
        self.last_pid: int | None = None  # PID of the most recent server process (kept after stop)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._session = requests.Session()

    # -- public API --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self.port:
            raise FhirServerError("server not started")
        return f"http://{self.host}:{self.port}/fhir"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        if self._proc is not None:
            raise FhirServerError("server already started")
        if not self.exe.is_file():
            raise FhirServerError(
                f"sekmet executable not found: {self.exe} (call ensure_installed first)"
            )
        atexit.register(self.stop)
        try:
            last: FhirServerError | None = None
            for _ in range(max(1, self.port_attempts)):
                try:
                    self._start_once()
                    return self
                except _PortInUse as e:  # lost the free-port race; try another port
                    last = FhirServerError(str(e))
                    self.stop()
            raise last or FhirServerError("could not start server")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the process group (SIGTERM, then SIGKILL after 5 s) and remove the work dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc)
        self._session.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def load_transaction(self, bundle: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle to the base; returns the response Bundle.

        Raises FhirServerError with the OperationOutcome text on HTTP errors and on batch
        entries whose response status is not 2xx.
        """
        resp = self._session.post(
            self.base_url,
            data=json.dumps(bundle),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            timeout=timeout,
        )
        body = _json_or_text(resp)
        if resp.status_code >= 400:
            raise FhirServerError(
                f"POST {self.base_url} -> HTTP {resp.status_code}: {outcome_text(body)}"
            )
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise FhirServerError(f"unexpected transaction response: {str(body)[:500]}")
        failed = [
            f"entry {i}: {e['response'].get('status')} {outcome_text(e['response'].get('outcome'))}"
            for i, e in enumerate(body.get("entry") or [])
            if not str(e.get("response", {}).get("status", "")).startswith("2")
        ]
        if failed:
            raise FhirServerError("bundle entries failed: " + " | ".join(failed))
        return body

    def get_json(self, path_or_url: str, timeout: float = 30.0) -> dict[str, Any]:
        """GET a relative path (``Observation?patient=x``) or absolute URL; raise on >= 400."""
        absolute = path_or_url.startswith(("http://", "https://"))  # NB: queries contain "://"
        url = path_or_url if absolute else f"{self.base_url}/{path_or_url.lstrip('/')}"
        resp = self._session.get(url, headers={"Accept": FHIR_JSON}, timeout=timeout)
        body = _json_or_text(resp)
        if resp.status_code >= 400:
            raise FhirServerError(f"GET {url} -> HTTP {resp.status_code}: {outcome_text(body)}")
        if not isinstance(body, dict):
            raise FhirServerError(f"GET {url}: non-object JSON body")
        return body

    def log_tail(self, max_chars: int = 4000) -> str:
        """Last part of the server's combined stdout/stderr."""
        if self._log is None or not self._log.exists():
            return ""
        with open(self._log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_chars))
            return f.read().decode("utf-8", "replace")

    # -- internals ---------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        assert self.workdir is not None
        settings: dict[str, Any] = {
            # base_url MUST carry the real port: Bundle.link / fullUrl / Location are built from it
            "base_url": f"http://{self.host}:{self.port}/fhir",
            "host": self.host,
            "port": self.port,
            "data_dir": str(self.workdir / "data"),
            "simulator": {
                "enabled": False
            },  # otherwise it mutates MedicationRequest/Task/... after 2 s
            "log_inbound": False,  # otherwise every request/response is written to a traffic log
            "validation": {"inbound": self.validation},
            "own_private_key_path": str(self.workdir / "keys" / "sekmet_private.pem"),
        }
        for key, value in self.extra_settings.items():
            if isinstance(value, Mapping) and isinstance(settings.get(key), dict):
                settings[key] = {**settings[key], **value}
            else:
                settings[key] = value
        return settings

    def _start_once(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sekmet-fhir-", dir=self.tmp_root))
        self.port = free_port(self.host)
        settings_path = self.workdir / "settings.yaml"
        settings_path.write_text(json.dumps(self._settings(), indent=2))  # JSON is valid YAML
        self._log = self.workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
        env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")
        env["_TYPER_STANDARD_TRACEBACK"] = "1"  # plain tracebacks in server.log, not rich boxes
        t0 = time.monotonic()
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [str(self.exe), "serve", "-c", str(settings_path)],
                cwd=self.workdir,  # anything sekmet writes relative to cwd stays in the temp dir
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group -> killpg gets every child
                preexec_fn=_set_pdeathsig if self.kill_with_parent else None,  # noqa: PLW1509
            )
        self.last_pid = self._proc.pid
        self._wait_ready(t0)
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        assert self._proc is not None
        url = f"{self.base_url}/metadata"
        deadline = t0 + self.startup_timeout
        last_error = "no response yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    raise _PortInUse(f"port {self.port} taken:\n{tail}")
                raise FhirServerError(
                    f"sekmet exited with code {code} before {url} answered.\n"
                    f"--- server output (tail) ---\n{tail}"
                )
            try:
                resp = self._session.get(url, headers={"Accept": FHIR_JSON}, timeout=2)
                if resp.status_code == 200:
                    return
                last_error = f"HTTP {resp.status_code}"
            except requests.RequestException as e:
                last_error = type(e).__name__
            if time.monotonic() > deadline:
                raise FhirServerError(
                    f"sekmet did not answer 200 on {url} within {self.startup_timeout:.0f} s "
                    f"(last: {last_error}).\n--- server output (tail) ---\n{self.log_tail()}"
                )
            time.sleep(0.05)


class _PortInUse(FhirServerError):
    pass


def _json_or_text(resp: requests.Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:2000]


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    pid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # pgid == pid because of start_new_session=True
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the leader is reaped; make sure no straggler of its group survives
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _main(argv: list[str]) -> int:
    """`python -m tools.local_fhir install VENV_DIR`: install sekmet-fhir (idempotent)."""
    if len(argv) != 2 or argv[0] != "install":
        sys.stderr.write("usage: python -m tools.local_fhir install VENV_DIR\n")
        return 2
    ensure_installed(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
