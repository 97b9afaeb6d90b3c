"""The same behaviour from a local folder and from S3 over HTTP (moto's server)."""


import pytest

from selftaught.errors import StorageUnavailable
from selftaught.store import ObjectNotFound, open_store
from selftaught.store.jsonl import JsonlWriter, read_jsonl
from selftaught.store.manifest import Manifest, read_manifest, write_manifest


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "root"))
    bucket = request.getfixturevalue("bucket")
    return open_store(f"{bucket}/prefix", endpoint=request.getfixturevalue("s3_server"))


def test_objects_round_trip_and_listing_is_recursive_and_sorted(store):
    store.write_text("b/two.json", "2")
    store.write_text("a/one.json", "1")
    store.write_text("a/deeper/three.json", "3")
    assert store.list("") == ["a/deeper/three.json", "a/one.json", "b/two.json"]
    assert store.list("a/") == ["a/deeper/three.json", "a/one.json"]
    assert store.read_text("a/one.json") == "1"
    assert store.exists("b/two.json") and not store.exists("b/none.json")
    assert store.child("a").list("") == ["deeper/three.json", "one.json"]


def test_a_missing_object_is_named_in_the_error(store):
    with pytest.raises(ObjectNotFound, match=r"nothing\.json: no such object"):
        store.read_bytes("nothing.json")
    assert read_manifest(store, "stage/_manifest.json") is None


def test_jsonl_is_published_only_when_complete(store):
    writer = JsonlWriter(store, "out/part.jsonl")
    writer.write({"a": 1})
    assert not store.exists("out/part.jsonl")  # nothing partial is visible
    written = writer.close()
    assert written.records == 1 and len(written.sha256) == 64
    assert list(read_jsonl(store, "out/part.jsonl")) == [{"a": 1}]


def test_a_failed_writer_publishes_nothing(store):
    with pytest.raises(RuntimeError), JsonlWriter(store, "out/failed.jsonl") as writer:
        writer.write({"a": 1})
        raise RuntimeError("killed")
    assert not store.exists("out/failed.jsonl")


def test_a_directory_uploads_whole_and_each_file_downloads(store, tmp_path):
    source = tmp_path / "checkpoint"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights.bin").write_bytes(b"\0" * 1000)
    store.upload_dir(source, "iter-001/train/checkpoint")
    assert store.list("iter-001/") == ["iter-001/train/checkpoint/config.json", "iter-001/train/checkpoint/sub/weights.bin"]
    target = tmp_path / "copy" / "weights.bin"
    store.download_file("iter-001/train/checkpoint/sub/weights.bin", target)
    assert target.read_bytes() == b"\0" * 1000
    with pytest.raises(ObjectNotFound):
        store.download_file("iter-009/train/checkpoint/weights.bin", tmp_path / "none")


def test_manifests_round_trip(store):
    write_manifest(store, "pairs/_manifest.json", Manifest(stage="pairs", counts={"pairs": 3}, summary={"pairs": 3}))
    assert read_manifest(store, "pairs/_manifest.json").counts == {"pairs": 3}


def test_large_objects_go_through_multipart_uploads(bucket, s3_server, tmp_path):
    store = open_store(bucket, endpoint=s3_server)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (70 * 2**20))  # above the 64 MiB multipart threshold
    store.upload_file(big, "big.bin")
    store.download_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").stat().st_size == 70 * 2**20


def test_a_missing_bucket_and_an_unreachable_endpoint_are_clear_errors(s3_server):
    with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket' does not exist"):
        open_store("s3://no-such-bucket/x", endpoint=s3_server).write_text("a", "b")
    with pytest.raises(StorageUnavailable, match="storage unreachable"):
        open_store("s3://b/x", endpoint="http://127.0.0.1:9").read_bytes("a")


def test_only_the_first_conditional_create_wins(store):
    assert store.create_bytes("stage/_manifest.json", b"first")
    assert not store.create_bytes("stage/_manifest.json", b"second")
    assert store.read_bytes("stage/_manifest.json") == b"first"
    assert store.list("stage/") == ["stage/_manifest.json"]  # the loser left nothing behind


def test_a_replace_applies_only_to_the_version_it_read(store):
    store.write_bytes("lease.json", b"one")
    _, version = store.read_versioned("lease.json")
    assert store.replace_bytes("lease.json", b"two", version)
    assert not store.replace_bytes("lease.json", b"three", version)  # someone replaced it since
    assert store.read_bytes("lease.json") == b"two"
    store.delete("lease.json")
    store.delete("lease.json")  # already gone: no error
    assert not store.replace_bytes("lease.json", b"four", version)
    assert not store.exists("lease.json")


def test_of_many_concurrent_creators_exactly_one_wins(store):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda n: store.create_bytes("race.json", str(n).encode()), range(16)))
    assert won.count(True) == 1
    assert store.read_bytes("race.json") == str(won.index(True)).encode()


def test_a_published_output_is_verified_against_its_marker_wherever_it_is_read(store):
    """Keys read from a marker carry its promise: a file with a line blanked out (its size intact)
    fails on its record count, one with a byte changed on its checksum, one cut short on its size
    before the first record; a key of no marker (a user's data) is read as it is."""
    from selftaught.errors import StoreCorrupt
    from selftaught.store.jsonl import read_jsonl
    from selftaught.store.manifest import published_key
    from tests.stores import publish

    records = [{"id": n, "text": "x" * 20} for n in range(10)]
    key = publish(store, ("pairs", "heldout.jsonl"), records)
    published = published_key(store, "pairs", "heldout.jsonl")
    assert published == key and published.promise.records == 10 and read_manifest(store, "pairs/_manifest.json").outputs[key]["records"] == 10
    assert list(read_jsonl(store, published)) == records
    whole = store.read_bytes(key)
    lines = whole.splitlines(keepends=True)
    marker = store.url("pairs/_manifest.json")
    for damaged, figures in (
        (b"".join([*lines[:3], b" " * (len(lines[3]) - 1) + b"\n", *lines[4:]]), "holds 9 records where its marker"),
        (whole.replace(b'"id":3,', b'"id":7,'), "has sha256 "),
        (b"".join(lines[:5]), f"holds {len(b''.join(lines[:5]))} bytes where its marker {marker} promises {len(whole)}"),
    ):
        store.write_bytes(key, damaged)
        with pytest.raises(StoreCorrupt, match="where its marker") as error:
            list(read_jsonl(store, published_key(store, "pairs", "heldout.jsonl")))
        assert figures in str(error.value) and f"delete {marker} to run that stage again" in str(error.value)
        assert list(read_jsonl(store, str(key)))  # a plain key (a user's data): read as it is, no promise to keep
