"""FHIR-fetch path measurement (no prefetch): placeholder until the sekmet harness lands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def measure(n: int, quick: bool, log: Callable[[str], None], log_dir: Path) -> dict[str, Any]:
    del n, quick, log, log_dir
    return {"available": False, "reason": "fetch measurement not implemented yet"}
