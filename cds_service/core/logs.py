"""Logging: one JSON object per line (structlog), or readable text with IVIG_CDS_LOG_FORMAT=text.

Every record, ours, the libraries' and uvicorn's, goes through the same formatter, with an ISO
timestamp (UTC), the level, the logger and the request id bound for the request being answered.
What is logged is chosen where it is logged: never a token, a patient id, a report id or a body.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

HANDLER_NAME = "ivig-cds"

# fields every line carries (stdlib records and structlog events alike)
_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    # only the access line's fields: an `extra` nobody listed here is not written
    structlog.stdlib.ExtraAdder(
        allow=["method", "path", "status", "duration_ms", "service", "hookInstance"]
    ),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(fmt: str = "json", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route all logging to `stream` (stderr) in `fmt` ("json" or "text")."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # replaces an earlier configure(); handlers others installed (e.g. pytest's) stay
    root.handlers = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def remove() -> None:
    """Take this module's handler off the root logger (tests)."""
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != HANDLER_NAME]
