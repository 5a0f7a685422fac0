"""The one settings class: every knob is an environment variable prefixed MEDISENTINEL_."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("data") / "medisentinel.db"
# HIPAA 45 CFR 164.316(b)(2)(i) keeps required documentation six years from its creation.
# Six years hold at most two leap days. Below this an operator could archive (and delete
# from the database) records the law still wants kept; 0 would free the whole trail at once.
MIN_AUDIT_RETENTION_DAYS = 6 * 365 + 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDISENTINEL_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH}",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pw@host/db",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    base_url: str = Field(
        default="",
        description="Public FHIR base URL; defaults to http://{host}:{port}/fhir",
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes for `serve`")
    db_pool_size: int = Field(
        default=20, ge=1, description="connections kept open per worker (plus a few overflow)"
    )
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    max_bundle_entries: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    # Authorization server (SMART on FHIR)
    master_key: str | None = Field(
        default=None,
        min_length=32,
        description="secret that seals the signing keys (32+ characters)",
    )
    master_key_file: Path = Field(
        default=Path("data") / "master.key",
        description="where the master key is read from when MEDISENTINEL_MASTER_KEY is unset "
        "(created on first start)",
    )
    access_token_seconds: int = Field(default=3600, ge=1)
    # SMART Backend Services: client_credentials tokens "SHALL be short-lived; the expires_in
    # value SHOULD NOT exceed 300" (docs/smart.md): so 300 is the ceiling too, as nothing
    # needs more (a backend asks again with its key). Users' tokens keep access_token_seconds.
    backend_access_token_seconds: int = Field(
        default=300,
        ge=1,
        le=300,
        description="lifetime of client_credentials (backend) access tokens, at most 300 s",
    )
    refresh_token_seconds: int = Field(default=90 * 24 * 3600, ge=1)  # offline_access
    online_refresh_seconds: int = Field(default=12 * 3600, ge=1)  # online_access: a working day
    authorization_code_seconds: int = Field(default=60, ge=1)
    login_seconds: int = Field(default=600, ge=1)  # time to log in and consent
    # Audit trail
    audit_retention_days: int = Field(
        default=7 * 365,
        description="audit records younger than this can never be archived (six years at "
        "least: HIPAA 45 CFR 164.316(b)(2)(i))",
    )
    audit_checkpoint_seconds: int = Field(
        default=300, gt=0, description="how often a server signs the audit chain heads"
    )
    audit_index_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often a server copies new audit records into the searchable "
        "AuditEvent store (searching AuditEvent always catches up first)",
    )
    audit_index_max_lag_seconds: float = Field(
        default=30.0,
        ge=0,
        description="while the server is busy, the searchable copy may fall this far behind "
        "the audit chain (it catches up whenever the server idles, and before any search of "
        "AuditEvent); 0 copies every round regardless of load",
    )
    # HL7 v2 feeds
    mllp_enabled: bool = Field(default=True, description="start the MLLP listener with `serve`")
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)  # 0: any free port
    mllp_allowlist: str = Field(
        default="",
        description="comma list of IPs/CIDRs allowed to connect over MLLP (empty: everyone)",
    )
    mllp_tls_cert: Path | None = Field(default=None, description="PEM certificate: MLLP over TLS")
    mllp_tls_key: Path | None = Field(default=None, description="PEM private key for the above")
    mllp_idle_seconds: float = Field(default=300.0, gt=0)
    hl7_default_offset: str | None = Field(
        default=None,
        pattern=r"^[+-](0\d|1[0-4]):[0-5]\d$",
        description="the feeds' UTC offset (e.g. +01:00) for times sent without one; unset: "
        "such times are kept as dates only, with a warning in the ACK",
    )
    hl7_processing_ids: str = Field(
        default="P",
        pattern=r"^\s*[PTDptd](\s*,\s*[PTDptd])*\s*$",
        description="MSH-11 processing ids the feeds process (comma list of P, T, D); others "
        "get AR 202",
    )
    mllp_max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    cors_origins: str = Field(
        default="*", description="origins allowed to call the API from a browser (comma list)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # INFO works as well

    @field_validator("audit_retention_days")
    @classmethod
    def _six_years_at_least(cls, value: int) -> int:
        if value < MIN_AUDIT_RETENTION_DAYS:
            raise ValueError(
                f"must be at least {MIN_AUDIT_RETENTION_DAYS} days (six years: HIPAA 45 CFR "
                "164.316(b)(2)(i) keeps required documentation six years)"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        # Every link the server writes (Bundle.link, Location, fullUrl) starts with it.
        if value and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                "must be an absolute http(s) URL such as https://fhir.example.org/fhir"
            )
        return value

    @property
    def fhir_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"

    @property
    def server_root(self) -> str:
        """The base URL without /fhir: where /auth/... lives."""
        base = self.fhir_base_url
        return base[: -len("/fhir")] if base.endswith("/fhir") else base

    @property
    def longest_access_token_seconds(self) -> int:
        """How long any access token may live: what retired signing keys and the revocation
        watch must cover."""
        return max(self.access_token_seconds, self.backend_access_token_seconds)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@cache
def get_settings() -> Settings:
    return Settings()
