"""Model sources as users give them: a Hub id (from the local Hub cache, offline), an s3:// prefix
(downloaded once per machine), a local path; and a clear error when a model is missing."""

import shutil

import pytest

from selftaught.api.spec import ModelSource, Storage
from selftaught.engines import models
from selftaught.errors import ModelNotFound
from selftaught.store import open_store


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_hub_id_resolves_from_the_hub_cache_without_network(tiny_model, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "hub" / "models--acme--tiny-judge"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    path = models.resolve_model(ModelSource(source="acme/tiny-judge"))
    assert (path / "config.json").is_file() and path.name == commit


def test_a_missing_hub_model_says_so_by_name(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="model 'acme/no-such-model': not in the local cache"):
        models.resolve_model(ModelSource(source="acme/no-such-model"))


def test_an_s3_checkpoint_is_downloaded_once_into_the_cache(tiny_model, cache, bucket, s3_server):
    store = open_store(f"{bucket}/ckpt", endpoint=s3_server)
    store.upload_dir(tiny_model, "m")
    store.write_text("m/_manifest.json", "{}")  # our done-marker is not part of the model
    storage = Storage(uri=bucket, endpoint=s3_server)
    first = models.resolve_model(ModelSource(source=f"{bucket}/ckpt/m"), storage)
    assert (first / "model.safetensors").is_file() and not (first / "_manifest.json").exists()
    store.delete_prefix("m/")
    assert models.resolve_model(ModelSource(source=f"{bucket}/ckpt/m"), storage) == first  # cached


def test_missing_models_are_named(tmp_path, bucket, s3_server, cache):
    with pytest.raises(ModelNotFound, match="no config.json"):
        models.resolve_model(ModelSource(source=str(tmp_path)))
    with pytest.raises(ModelNotFound, match="s3://.*/nothing-here.*no config.json"):
        models.resolve_model(ModelSource(source=f"{bucket}/nothing-here"), Storage(uri=bucket, endpoint=s3_server))
