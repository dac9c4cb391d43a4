"""Service settings (environment variables prefixed IVIG_CDS_, or a .env file).

Defaults are the secure ones; `demo=true` (set by `make run`) relaxes only what a laptop demo needs.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_service.knowledge import KNOWLEDGE_DIR
from cds_service.wording import CARDS_DIR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IVIG_CDS_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    demo: bool = Field(default=False, description="local demo: loopback FHIR servers allowed")
    public_base_url: str = Field(
        default="http://127.0.0.1:8080", description="URL the EHR uses to reach this service"
    )
    knowledge_dir: Path = KNOWLEDGE_DIR
    policy_file: str = "policy-cvid-ig.yaml"
    cards_dir: Path = CARDS_DIR
    source_label: str = "ivig-cds immune globulin criteria"
    log_level: str = "INFO"


@cache
def get_settings() -> Settings:
    return Settings()
