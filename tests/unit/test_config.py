"""The operator's settings: `SELFTAUGHT_*` variables parsed by type, empty = unset, bad values
named by their variable."""

from __future__ import annotations

import pytest
from pydantic import Field

from selftaught import __version__
from selftaught.controller.config import ConfigError, OperatorConfig


def test_defaults():
    config = OperatorConfig()
    assert config.generate_image == f"ghcr.io/selftaught/generate:{__version__}"
    assert config.train_image == f"ghcr.io/selftaught/train:{__version__}"
    assert (config.metrics_port, config.health_port, config.workers, config.run_as_user) == (8080, 8081, 16, 1000)
    assert config.job_ttl_seconds == 7 * 24 * 3600 and config.data_image == ""
    assert OperatorConfig.from_env({}) == config


def test_values_are_parsed_by_type():
    config = OperatorConfig.from_env(
        {
            "SELFTAUGHT_WORKERS": "4",
            "SELFTAUGHT_RESYNC_SECONDS": "30.5",
            "SELFTAUGHT_STORAGE_GRACE_SECONDS": "0",
            "SELFTAUGHT_JOB_TTL_SECONDS": "2592000",
            "SELFTAUGHT_DATA_IMAGE": "registry.example/data:cpu",
            "SELFTAUGHT_DEFAULT_S3_ENDPOINT": "http://minio.minio.svc:9000",
        }
    )
    assert config.workers == 4 and isinstance(config.workers, int)
    assert config.resync_seconds == 30.5 and config.storage_grace_seconds == 0.0
    assert config.job_ttl_seconds == 2592000
    assert config.data_image == "registry.example/data:cpu"
    assert config.default_s3_endpoint == "http://minio.minio.svc:9000"


def test_empty_values_are_unset_and_other_variables_are_ignored():
    environ = {"SELFTAUGHT_WORKERS": "", "SELFTAUGHT_GENERATE_IMAGE": "", "SELFTAUGHT_LOG_LEVEL": "DEBUG", "SELFTAUGHT_RUN": "{}", "HOME": "/tmp"}
    assert OperatorConfig.from_env(environ) == OperatorConfig()


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("SELFTAUGHT_METRICS_PORT", "0")
    assert OperatorConfig.from_env().metrics_port == 0
    assert OperatorConfig().metrics_port == 8080  # the constructor alone gives the defaults


class _WithAFlag(OperatorConfig):
    dry_run: bool = Field(True, description="a boolean setting")


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("False", False), ("0", False), ("no", False), ("true", True), ("1", True)])
def test_a_boolean_setting_reads_false_as_false(raw, expected):
    assert _WithAFlag.from_env({"SELFTAUGHT_DRY_RUN": raw}).dry_run is expected
    assert _WithAFlag.from_env({"SELFTAUGHT_DRY_RUN": ""}).dry_run is True


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("SELFTAUGHT_WORKERS", "many", "valid integer"),
        ("SELFTAUGHT_WORKERS", "0", "greater than or equal to 1"),
        ("SELFTAUGHT_METRICS_PORT", "70000", "less than or equal to 65535"),
        ("SELFTAUGHT_JOB_TTL_SECONDS", "2.592e+06", "valid integer"),
        ("SELFTAUGHT_RESYNC_SECONDS", "soon", "valid number"),
        ("SELFTAUGHT_RUN_AS_USER", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_names_its_variable(name, raw, message):
    with pytest.raises(ConfigError, match=name) as caught:
        OperatorConfig.from_env({name: raw})
    assert repr(raw) in str(caught.value) and message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_settings_are_frozen_and_hashable():
    config = OperatorConfig()
    with pytest.raises(ValueError):
        config.workers = 2  # type: ignore[misc]
    assert hash(config) == hash(OperatorConfig())


def test_every_setting_is_documented():
    for name, field in OperatorConfig.model_fields.items():
        assert field.description, name
        assert OperatorConfig.env_var(name) == f"SELFTAUGHT_{name.upper()}"
