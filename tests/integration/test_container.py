"""The container files: a multi-stage, non-root image with a health check, built with the make
target CI checks (`make runtime-check`), and a compose file with PostgreSQL and two replicas.
(No image can be pulled on the CI machines; `make lint` runs hadolint on the Dockerfile.)"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import ROOT


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    build, run = _stages()
    assert any("make install-runtime" in x for x in build)
    assert not any("make" in x for x in run if x.startswith("RUN"))  # no build tools at run time
    user = [x.split()[1] for x in run if x.startswith("USER ")]
    assert user
    assert user[-1].isdigit()
    assert int(user[-1]) >= 1000
    health = next(x for x in run if x.startswith("HEALTHCHECK"))
    assert "/healthz" in health
    assert run[-1] == 'CMD ["ivig-cds", "serve"]'
    # the wheel has no card wording: the image copies it and points the service at it
    assert "COPY cards /opt/ivig-cds/cards" in run
    assert any("IVIG_CDS_CARDS_DIR=/opt/ivig-cds/cards" in x for x in run if x.startswith("ENV"))
    assert "install-runtime:" in (ROOT / "Makefile").read_text()


def test_compose_runs_two_replicas_on_one_postgresql() -> None:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert re.match(r"postgres:15\b", services["postgres"]["image"])
    replicas = [s for s in services.values() if s.get("build") == "."]
    assert len(replicas) == 2
    urls = {s["environment"]["DATABASE_URL"] for s in replicas}
    assert len(urls) == 1
    assert "@postgres:5432/" in urls.pop()
    for s in replicas:
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
