"""Service settings (environment variables prefixed IVIG_CDS_, or a .env file).

Defaults are the secure ones; `demo=true` (set by `make run`) relaxes only what a laptop demo needs.
"""

from __future__ import annotations

import socket
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_service.knowledge import KNOWLEDGE_DIR
from cds_service.wording import CARDS_DIR

WILDCARD = frozenset({"0.0.0.0", "::", ""})


class IssuerKeySet(BaseModel):
    """Where a trusted issuer's keys are read (`jwks`: an https URL, or a JWKS file for a
    deployment that cannot fetch it) and the URL its tokens name in their `jku` header (`jku`;
    by default `jwks` when that is a URL). A token's `jku` must equal it, so a file-configured
    issuer accepts the tokens the EHR sends with `jku` and no key is fetched from elsewhere."""

    model_config = ConfigDict(extra="forbid")

    jwks: str
    jku: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """A plain string is `jwks` alone (the setting's first form, still the usual one)."""
        return {"jwks": value} if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IVIG_CDS_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    demo: bool = Field(default=False, description="local demo: loopback FHIR servers allowed")
    public_base_url: str | None = Field(
        default=None,
        description="URL the EHR uses to reach this service; unset: derived from host and port",
    )
    knowledge_dir: Path = KNOWLEDGE_DIR
    policy_file: str = "policy-cvid-ig.yaml"
    cards_dir: Path = CARDS_DIR
    source_label: str = "ivig-cds immune globulin criteria"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line (log pipelines); text: humans"
    )
    workers: int | None = Field(
        default=None, ge=1, le=64, description="server processes (`serve`); default: the cores"
    )
    # an evaluation holds its slot while it waits for the EHR's FHIR server: the slots must
    # outnumber the requests a slow or hung tenant keeps in flight (each up to the fetch budget),
    # or that tenant queues every other tenant's order-signs behind its own (issue 13); CPU work
    # is bounded by the interpreter lock whatever the count
    eval_threads: int = Field(
        default=32,
        ge=1,
        le=256,
        description="evaluations run at once per process; more wait, discovery and health do not",
    )

    # -- storage: evaluations (card uuids, assertion ids, report snapshots) and feedback --
    database_path: Path = Field(
        default=Path("ivig-cds.db"), description="SQLite file used when no database_url is set"
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("IVIG_CDS_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db",
    )
    db_migrate: bool = Field(
        default=True,
        description="upgrade the schema at start-up (under a lock); false: refuse an old schema",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="purge evaluations, their reports and feedback older than this (none: keep)",
    )
    purge_interval_s: float = Field(
        default=3600.0, ge=1, description="how often a serving process purges (with retention)"
    )

    # -- CDS Hooks 2.0 client authentication (JWT bearer, verified with PyJWT) --
    jwt_required: bool | None = Field(
        default=None, description="None: required unless demo; true/false forces it"
    )
    jwt_issuers: dict[str, IssuerKeySet] = Field(
        default_factory=dict,
        description="allowlist: iss -> its JWKS (https URL, or path to a JWKS JSON file), or "
        '{"jwks": URL or file, "jku": the URL its tokens name}',
    )
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300, description="clock skew for exp/iat")
    jwt_max_lifetime_seconds: int = Field(
        default=3600,
        gt=0,
        le=86_400,
        description="longest exp - iat accepted (bounds the replay window and the jti cache)",
    )

    max_body_bytes: int = Field(
        default=20_000_000, ge=1024, description="largest hook or feedback request body (413)"
    )

    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser-based CDS clients allowed by CORS (JSON list of origins)",
    )

    # -- record access: fetching absent prefetch keys from the EHR's fhirServer ---------------
    fhir_allowlist: list[str] = Field(
        default_factory=list,
        description="FHIR base URLs the service may query (JSON list); loopback is added in demo",
    )
    fetch_budget_s: float = Field(default=3.0, gt=0, description="all queries of one request")
    fetch_timeout_s: float = Field(default=2.0, gt=0, description="connect/read timeout per query")
    fetch_max_pages: int = Field(default=20, ge=1, description="pages followed per query")
    fetch_max_resources: int = Field(default=5000, ge=1, description="resources read per query")
    prefetch_max_resources: int = Field(
        default=20_000, ge=1, description="resources in all prefetch keys together (else 413)"
    )
    fetch_page_size: int = Field(default=200, ge=1, description="_count added to searches")
    fetch_max_bytes: int = Field(
        default=4_000_000, ge=1024, description="largest answer read per page (decoded bytes)"
    )
    fetch_request_max_bytes: int = Field(
        default=32_000_000, ge=1024, description="all answers read for one request (bytes)"
    )
    fetch_workers: int = Field(default=96, ge=1, description="concurrent queries (all requests)")
    # 16: one request's 15 queries run at once; 96: four misbehaving servers leave a third free
    fetch_workers_per_server: int = Field(
        default=16, ge=1, description="of those, at most this many on one fhirServer at a time"
    )
    fetch_max_url: int = Field(
        default=2048, ge=256, description="longer code lists are split over several queries"
    )

    @property
    def auth_enabled(self) -> bool:
        return self.jwt_required if self.jwt_required is not None else not self.demo

    @property
    def base_url(self) -> str:
        """Where report links point and what JWT `aud` names: the configured public URL, else
        the address `serve` binds (so `--port 9000` gives working links, never a fixed port).
        A wildcard bind names no reachable host: this machine's name stands in for it."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = self.host
        if host in WILDCARD:
            host = socket.gethostname()
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def storage_url(self) -> str:
        return self.database_url or f"sqlite:///{self.database_path}"


@cache
def get_settings() -> Settings:
    return Settings()
