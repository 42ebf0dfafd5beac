"""API settings, read from ``SHORTFLOW_*`` environment variables (pydantic-settings).

=================================  =========================================================
``SHORTFLOW_HOST``                 bind address (default ``127.0.0.1``)
``SHORTFLOW_PORT``                 TCP port (default 8080)
``SHORTFLOW_MODEL_DIR``            model directory (default: the model shipped with shortflow)
``SHORTFLOW_API_TOKEN``            bearer token for live/* and policy endpoints
``SHORTFLOW_MAX_UPLOAD_BYTES``     largest request body accepted (default 256 MiB) -> 413
``SHORTFLOW_MAX_ROWS``             most feature rows per ``flows:classify`` call
``SHORTFLOW_UPLOAD_DIR``           where uploads are spooled (default: the system temp dir)
``SHORTFLOW_CPU_WORKERS``          featurize/predict jobs run at once in the threadpool
``SHORTFLOW_SNAPSHOTS``            early-snapshot horizons for uploads, e.g. ``[3, 10]``
``SHORTFLOW_MODELS_DIR``           directory of model directories the web page may switch to
``SHORTFLOW_BACKEND``              capture reader for uploads: ``builtin`` (default; fast
                                   engine) or ``tshark`` (reference engine; no timeline)
=================================  =========================================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_MIB = 1 << 20


class Settings(BaseSettings):
    """Everything the API process can be configured with (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="SHORTFLOW_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    model_dir: Path | None = None
    models_dir: Path | None = None
    api_token: SecretStr | None = None
    max_upload_bytes: int = Field(default=256 * _MIB, ge=1)
    max_rows: int = Field(default=100_000, ge=1)
    upload_dir: Path | None = None
    upload_chunk_bytes: int = Field(default=1 * _MIB, ge=4096)
    cpu_workers: int = Field(default=2, ge=1, le=64)
    snapshots: tuple[float, ...] = (3.0, 10.0)
    backend: str = "builtin"  # "dpkt" and "native" are older names of it

    @field_validator("snapshots")
    @classmethod
    def _positive_snapshots(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in value):
            raise ValueError("snapshot horizons must be positive")
        return value

    @field_validator("api_token")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    def token(self) -> str | None:
        """The API token in clear, or None when none is configured."""
        return self.api_token.get_secret_value() if self.api_token is not None else None
