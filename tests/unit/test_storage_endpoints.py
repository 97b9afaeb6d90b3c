"""Which S3 endpoint a run reads a URI through (`store.endpoint_for`): chosen on purpose, never
the run store's endpoint for another bucket by accident."""

import pytest

from selftaught.api.spec import Storage
from selftaught.store import LocalStore, endpoint_for, open_uri

MINIO = "http://minio.minio.svc:9000"
DATA = "http://ceph.example:7480"


@pytest.mark.parametrize(
    ("storage", "uri", "endpoint"),
    [
        # the run store's own bucket: its checkpoints, data kept beside the runs
        (Storage(uri="s3://runs/team", endpoint=MINIO), "s3://runs/team/ns/r1/iter-001/train/attempt-a/checkpoint", MINIO),
        (Storage(uri="s3://runs/team", endpoint=MINIO), "s3://runs/datasets/instructions.jsonl", MINIO),
        # another bucket: AWS's default endpoint unless the spec names one for sources
        (Storage(uri="s3://runs/team", endpoint=MINIO), "s3://public-data/rewardbench.jsonl", None),
        (Storage(uri="s3://runs/team", endpoint=MINIO, source_endpoint=DATA), "s3://data/rewardbench.jsonl", DATA),
        (Storage(uri="s3://runs", source_endpoint=DATA), "s3://runs/models/seed", None),  # same bucket: the store's (AWS)
        # a local run store: its endpoint means nothing to an s3:// source
        (Storage(uri=".selftaught/runs", endpoint=MINIO), "s3://data/x.jsonl", None),
        (Storage(uri=".selftaught/runs", endpoint=MINIO, source_endpoint=DATA), "s3://data/x.jsonl", DATA),
        # not S3, or no run at all (`selftaught score`, a model given without a run)
        (Storage(uri="s3://runs", endpoint=MINIO), "examples/data/instructions.jsonl", None),
        (None, "s3://data/x.jsonl", None),
    ],
)
def test_the_run_stores_endpoint_applies_to_its_own_bucket_only(storage, uri, endpoint):
    assert endpoint_for(uri, storage) == endpoint


def test_open_uri_opens_s3_at_the_chosen_endpoint_and_local_paths_as_folders(tmp_path):
    storage = Storage(uri="s3://runs/team", endpoint=MINIO, source_endpoint=DATA, region="eu-west-1")
    store = open_uri("s3://data/sets", storage)
    assert (store.uri, store.endpoint, store.region) == ("s3://data/sets", DATA, "eu-west-1")
    assert open_uri("s3://runs/team", storage).endpoint == MINIO
    assert isinstance(open_uri(str(tmp_path), storage), LocalStore)


def test_the_source_endpoint_is_a_url_like_the_store_endpoint():
    with pytest.raises(ValueError, match="is not a URL"):
        Storage(uri="s3://runs", source_endpoint="minio:9000")
