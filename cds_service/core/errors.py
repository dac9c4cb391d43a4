"""Domain errors, each mapped to one HTTP status by a single handler in the protocol module."""

from __future__ import annotations


class CdsError(Exception):
    """Base: carries the HTTP status and a message that names what was wrong."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CdsError):
    """Client input that does not fit CDS Hooks 2.0 or the hook's context (400)."""

    status_code = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class UnknownService(CdsError):
    status_code = 404


class NotFound(CdsError):
    status_code = 404


class PayloadTooLarge(CdsError):
    """A request body over the configured limit (413)."""

    status_code = 413


class UnsupportedMediaType(CdsError):
    """A hook or feedback body that is not sent as JSON (415): a form or text/plain post is what
    a web page can send cross-origin without a CORS preflight."""

    status_code = 415


class Unauthorized(CdsError):
    status_code = 401


class DataUnavailable(CdsError):
    """Needed data neither in prefetch nor obtainable from fhirServer (412, CDS Hooks 2.0)."""

    status_code = 412

    def __init__(self, unreadable: dict[str, str]) -> None:
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(unreadable.items()))
        super().__init__(f"could not read required data: {detail}")
        self.unreadable = unreadable
