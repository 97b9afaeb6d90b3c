"""Operator settings, from `SELFTAUGHT_*` environment variables (set by the Helm chart)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from selftaught import __version__

IMAGE_REPOSITORY = "ghcr.io/selftaught"


@dataclass(frozen=True)
class OperatorConfig:
    #: image of categorize, pairs, judge, evaluate (vLLM + selftaught)
    generate_image: str = f"{IMAGE_REPOSITORY}/generate:{__version__}"
    #: image of train (PyTorch + DeepSpeed + selftaught)
    train_image: str = f"{IMAGE_REPOSITORY}/train:{__version__}"
    #: image of the CPU-only select stage; the generate image when empty
    data_image: str = ""
    #: safety-net re-reconcile of every run, in seconds (events do the real work)
    resync_seconds: float = 60.0
    #: Prometheus metrics port (0 disables)
    metrics_port: int = 8080
    #: Kopf liveness endpoint port (0 disables)
    health_port: int = 8081
    #: ttlSecondsAfterFinished for Jobs when a run does not set one (results live in the store)
    job_ttl_seconds: int = 7 * 24 * 3600
    #: UID the stage pods run as (non-root)
    run_as_user: int = 1000
    #: how long the store may be unreachable before a run fails with StorageUnavailable
    storage_grace_seconds: float = 300.0
    #: `spec.storage.endpoint` for runs that leave it empty (e.g. the cluster's MinIO)
    default_s3_endpoint: str = ""
    #: `spec.storage.credentialsSecret` for runs that leave it empty (a Secret in the run's namespace)
    default_credentials_secret: str = ""
    #: worker threads for reconciles (each run is reconciled by one thread at a time)
    workers: int = 16

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = environ.get(f"SELFTAUGHT_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = type(field.default)(raw)
        return cls(**values)
