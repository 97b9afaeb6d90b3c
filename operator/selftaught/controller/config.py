"""Operator settings, from `SELFTAUGHT_*` environment variables (set by the Helm chart).

`OperatorConfig()` is the defaults (plus any keyword arguments); `OperatorConfig.from_env()` reads
the environment, or a given mapping. Values are parsed by type (`"false"` is false, `"8080"` an
integer), an empty value counts as unset, and a bad value raises `ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from selftaught import __version__
from selftaught.api.spec import SelfTaughtRun

IMAGE_REPOSITORY = "ghcr.io/selftaught"
ENV_PREFIX = "SELFTAUGHT_"


class ConfigError(ValueError):
    """An operator setting in the environment has a value of the wrong type or out of bounds."""


class OperatorConfig(BaseSettings):
    """The operator's settings; each field is the environment variable `SELFTAUGHT_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # the chart renders unset settings as ""
        extra="ignore",  # SELFTAUGHT_LOG_LEVEL, SELFTAUGHT_RUN, ... belong to others
        frozen=True,
        validate_default=True,
    )

    generate_image: str = Field(
        f"{IMAGE_REPOSITORY}/generate:{__version__}",
        min_length=1,
        description="Image of categorize, pairs, judge, evaluate (vLLM + selftaught).",
    )
    train_image: str = Field(
        f"{IMAGE_REPOSITORY}/train:{__version__}",
        min_length=1,
        description="Image of train (PyTorch + DeepSpeed + selftaught).",
    )
    rl_image: str = Field(
        f"{IMAGE_REPOSITORY}/rl:{__version__}",
        min_length=1,
        description="Image of train with train.method grpo (vLLM rollouts + TRL + DeepSpeed + selftaught).",
    )
    data_image: str = Field("", description="Image of the CPU-only select stage; the generate image when empty.")
    resync_seconds: float = Field(60.0, gt=0, description="Safety-net re-reconcile of every run, in seconds (events do the real work).")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus metrics port (0 disables).")
    health_port: int = Field(8081, ge=0, le=65535, description="Kopf liveness endpoint port (0 disables).")
    job_ttl_seconds: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="`ttlSecondsAfterFinished` for Jobs when a run does not set one (results live in the store).",
    )
    run_as_user: int = Field(1000, ge=1, description="UID the stage pods run as (non-root).")
    storage_grace_seconds: float = Field(
        300.0, ge=0, description="How long the store may be unreachable before a run fails with StorageUnavailable, in seconds."
    )
    default_s3_endpoint: str = Field("", description="`spec.storage.endpoint` for runs that leave it empty (e.g. the cluster's MinIO).")
    default_credentials_secret: str = Field(
        "", description="`spec.storage.credentialsSecret` for runs that leave it empty (a Secret in the run's namespace)."
    )
    workers: int = Field(16, ge=1, description="Worker threads for reconciles (each run is reconciled by one thread at a time).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: the environment is read by from_env, from the mapping it is given.
        return (init_settings,)

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable of a field: `SELFTAUGHT_<FIELD>`."""
        return f"{ENV_PREFIX}{field.upper()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """The settings from `environ` (default: `os.environ`); unset or empty variables keep their defaults."""
        values = _MappingSource(cls, os.environ if environ is None else environ)()
        try:
            return cls(**values)
        except ValidationError as error:
            problems = []
            for item in error.errors():
                field = str(item["loc"][0]) if item["loc"] else ""
                name = cls.env_var(field) if field in cls.model_fields else field
                problems.append(f"{name}={item['input']!r}: {item['msg']}")
            raise ConfigError("invalid operator setting: " + "; ".join(problems)) from None

    def with_defaults(self, run: SelfTaughtRun) -> SelfTaughtRun:
        """`run` with the platform's default S3 endpoint and credentials Secret, where it names none."""
        storage = run.spec.storage
        update = {}
        if not storage.endpoint and self.default_s3_endpoint:
            update["endpoint"] = self.default_s3_endpoint
        if not storage.credentials_secret and self.default_credentials_secret:
            update["credentials_secret"] = self.default_credentials_secret
        if not update:
            return run
        spec = run.spec.model_copy(update={"storage": storage.model_copy(update=update)})
        return run.model_copy(update={"spec": spec})


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (name if self.case_sensitive else name.lower()): value
            for name, value in self._environ.items()
            if not (self.env_ignore_empty and value == "")
        }
