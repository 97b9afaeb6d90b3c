"""Reading instructions and evaluation pairs: every bad record is named by file and line."""

import json

import pytest

from selftaught.api.spec import DataSource, EvaluationData, Storage
from selftaught.errors import InvalidInput
from selftaught.stages.sources import iter_evaluation_examples, iter_instructions
from selftaught.store.jsonl import SkipCounter


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_malformed_line_fails_with_file_and_line_number(tmp_path):
    path = _write(tmp_path / "in.jsonl", ['{"instruction": "a"}', '{"instruction": ', '{"instruction": "c"}'])
    with pytest.raises(InvalidInput, match=r"in\.jsonl:2: malformed JSONL line"):
        list(iter_instructions(DataSource(source=str(path)), None, SkipCounter()))


def test_a_lone_surrogate_is_a_bad_record_like_any_other_and_a_pair_of_them_is_text(tmp_path):
    lines = ['{"instruction": "a"}', '{"instruction": "half \\ud800 a character"}', '{"x": ["\\udc00"], "instruction": "b"}', '{"instruction": "\\ud83d\\ude00"}']
    path = _write(tmp_path / "in.jsonl", lines)
    skipped = SkipCounter()
    records = list(iter_instructions(DataSource(source=str(path), on_bad_record="skip"), None, skipped))
    assert [r["instruction"] for r in records] == ["a", "\U0001f600"]  # an escaped surrogate pair is one character
    assert skipped.skipped == 2 and all("a lone surrogate escape" in e for e in skipped.examples)
    with pytest.raises(InvalidInput, match=r"in\.jsonl:2: malformed JSONL line: a lone surrogate escape"):
        list(iter_instructions(DataSource(source=str(path)), None, SkipCounter()))


def test_skip_mode_counts_bad_lines_and_records_without_the_field(tmp_path):
    path = _write(tmp_path / "in.jsonl", ['{"instruction": "a"}', "not json", '{"text": "b"}', "[1]", '{"instruction": "c"}'])
    skipped = SkipCounter()
    records = list(iter_instructions(DataSource(source=str(path), on_bad_record="skip"), None, skipped))
    assert [r["instruction"] for r in records] == ["a", "c"]
    assert skipped.skipped == 3
    assert any("in.jsonl:3: record has no non-empty text field 'instruction'" in e for e in skipped.examples)


def test_nested_fields_ids_and_limits(tmp_path):
    wildchat = [{"conversation_hash": f"h{i}", "conversation": [{"role": "user", "content": f"q{i}"}]} for i in range(5)]
    path = _write(tmp_path / "wildchat.jsonl", [json.dumps(r) for r in wildchat])
    source = DataSource(source=str(path), field="conversation.0.content", id_field="conversation_hash", limit=3)
    assert list(iter_instructions(source, None, SkipCounter())) == [{"id": f"h{i}", "instruction": f"q{i}"} for i in range(3)]


def test_a_folder_of_jsonl_files_is_read_in_name_order(tmp_path):
    _write(tmp_path / "b.jsonl", ['{"instruction": "second"}'])
    _write(tmp_path / "a.jsonl", ['{"instruction": "first"}'])
    assert [r["instruction"] for r in iter_instructions(DataSource(source=str(tmp_path)), None, SkipCounter())] == ["first", "second"]


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(InvalidInput, match="nowhere.jsonl: no such file or folder"):
        list(iter_instructions(DataSource(source=str(tmp_path / "nowhere.jsonl")), None, SkipCounter()))


def test_instructions_are_read_from_s3(bucket, s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.put_object(Bucket=bucket[5:], Key="data/part-1.jsonl", Body=b'{"instruction": "from s3"}\n')
    storage = Storage(uri=bucket, endpoint=s3_server)
    for uri in (f"{bucket}/data/part-1.jsonl", f"{bucket}/data"):
        assert [r["instruction"] for r in iter_instructions(DataSource(source=uri), storage, SkipCounter())] == ["from s3"]
    with pytest.raises(InvalidInput, match="missing.jsonl: no such object"):
        list(iter_instructions(DataSource(source=f"{bucket}/data/missing.jsonl"), storage, SkipCounter()))


def test_a_hugging_face_dataset_is_streamed(tmp_path):
    dataset = tmp_path / "my-dataset"
    dataset.mkdir()
    _write(dataset / "train.jsonl", ['{"prompt": "hub question"}'])
    source = DataSource(source=f"hf://datasets/{dataset}", field="prompt")
    assert [r["instruction"] for r in iter_instructions(source, None, SkipCounter())] == ["hub question"]


def test_evaluation_records_need_prompt_chosen_and_rejected(tmp_path):
    path = _write(tmp_path / "rb.jsonl", ['{"prompt": "p", "chosen": "c", "rejected": "r", "subset": "math-prm"}', '{"prompt": "p", "chosen": "c"}'])
    with pytest.raises(InvalidInput, match=r"rb\.jsonl:2: evaluation record is missing rejected"):
        list(iter_evaluation_examples(EvaluationData(source=str(path)), "rewardbench", None, SkipCounter()))
    skipped = SkipCounter()
    records = list(iter_evaluation_examples(EvaluationData(source=str(path), on_bad_record="skip"), "rewardbench", None, skipped))
    assert [r["subset"] for r in records] == ["math-prm"] and skipped.skipped == 1


def test_each_benchmark_format_is_read_and_a_bad_record_is_named(tmp_path):
    rb2 = _write(tmp_path / "rb2.jsonl", [
        '{"id": "7", "prompt": "p", "chosen": ["good"], "rejected": ["bad1", "bad2", "bad3"], "num_correct": 1, "subset": "Focus"}',
        '{"id": "ref:3", "prompt": "p", "chosen": ["a", "b"], "rejected": ["x"], "num_correct": 2, "subset": "Ties"}',
        '{"id": "8", "prompt": "p", "chosen": ["good"], "rejected": [], "subset": "Math"}',
    ])  # fmt: skip
    with pytest.raises(InvalidInput, match=r"rb2\.jsonl:3: RewardBench 2 record is missing rejected"):
        list(iter_evaluation_examples(EvaluationData(source=str(rb2)), "rewardbench2", None, SkipCounter()))
    first, ties = list(iter_evaluation_examples(EvaluationData(source=str(rb2), on_bad_record="skip"), "rewardbench2", None, SkipCounter()))
    assert first["answers"] == ["good", "bad1", "bad2", "bad3"] and first["num_correct"] == 1
    assert ties["id"] == "ref:3" and ties["answers"] == ["a", "b", "x"] and ties["num_correct"] == 2
    jb = _write(tmp_path / "jb.jsonl", [
        '{"pair_id": "p1", "question": "q", "response_A": "a", "response_B": "b", "label": "B>A", "source": "livebench-math"}',
        '{"pair_id": "p2", "question": "q", "response_A": "a", "response_B": "b", "label": "A=B", "source": "livecodebench"}',
    ])  # fmt: skip
    with pytest.raises(InvalidInput, match=r"jb\.jsonl:2: JudgeBench record has label 'A=B'"):
        list(iter_evaluation_examples(EvaluationData(source=str(jb)), "judgebench", None, SkipCounter()))
    skipped = SkipCounter()
    (pair,) = iter_evaluation_examples(EvaluationData(source=str(jb), on_bad_record="skip"), "judgebench", None, skipped)
    assert (pair["id"], pair["winner"], pair["subset"]) == ("p1", "B", "livebench-math") and skipped.skipped == 1
