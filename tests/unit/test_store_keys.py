"""The store never reads or writes outside its root, whatever key or prefix it is handed, and a
run's namespace and name cannot make it try."""

import pytest

from selftaught.api.load import parse_run
from selftaught.errors import InvalidSpec, StoreKeyInvalid
from selftaught.store import open_store

ESCAPING = ["../x", "a/../../x", "/etc/passwd", "a/..", "..", "a\0b"]
MINIMAL = {
    "apiVersion": "selftaught.dev/v1alpha1",
    "kind": "SelfTaughtRun",
    "metadata": {"name": "r1", "namespace": "ml"},
    "spec": {
        "models": {"seed": {"source": "m"}},
        "data": {"instructions": {"source": "i.jsonl"}},
        "storage": {"uri": "s3://bucket/runs"},
    },
}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    if request.param == "local":
        return open_store(str(tmp_path / "root"))
    return open_store("s3://bucket/root", endpoint="http://127.0.0.1:1", region="us-east-1")  # never reached


@pytest.mark.parametrize("key", ESCAPING)
def test_a_key_that_would_leave_the_root_is_refused_before_any_io(store, key):
    for call in (store.read_bytes, store.exists, store.list, store.child, lambda k: store.write_bytes(k, b"x")):
        with pytest.raises(StoreKeyInvalid, match="would leave the store") as raised:
            call(key)
        assert raised.value.permanent


def test_keys_below_the_root_are_fine(store, tmp_path):
    assert store.child("ml/r1").url("a/b.json").endswith("root/ml/r1/a/b.json")
    if store.uri.startswith("/"):
        store.child("ml/r1").write_bytes("a/..b/c.json", b"1")  # `..b` is a name, not a climb
        assert (tmp_path / "root/ml/r1/a/..b/c.json").read_bytes() == b"1"


@pytest.mark.parametrize("field", ["name", "namespace"])
@pytest.mark.parametrize("value", ["../../escaped", "a/b", "..", "Upper", "x" * 64, "-a", ""])
def test_a_name_or_namespace_must_be_a_dns_label(field, value):
    document = {**MINIMAL, "metadata": {**MINIMAL["metadata"], field: value}}
    with pytest.raises(InvalidSpec, match=rf"metadata\.{field}: .*not a valid Kubernetes name"):
        parse_run(document)


def test_a_63_character_dns_label_is_a_valid_name():
    assert parse_run({**MINIMAL, "metadata": {"name": "a" * 63, "namespace": "team-1"}}).metadata.namespace == "team-1"


@pytest.mark.parametrize(
    ("storage", "error"),
    [
        ({"uri": "s3://"}, "names no bucket"),
        ({"uri": "s3:///runs"}, "names no bucket"),
        ({"uri": "s3:bucket"}, "names no bucket"),
        ({"uri": "s3://b", "endpoint": "minio:9000"}, r"is not a URL: add http:// or https:// \(e\.g\. http://minio:9000\)"),
        ({"uri": "s3://b", "endpoint": "http://"}, "names no host"),
    ],
)
def test_a_store_uri_without_bucket_or_an_endpoint_without_scheme_is_a_spec_error(storage, error):
    with pytest.raises(InvalidSpec, match=rf"spec\.storage\.(uri|endpoint): '.*' {error}"):
        parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "storage": storage}})
