"""A generation shard that dies halfway resumes in its next attempt from the answers it saved: it
asks the engine only for the rest, and writes byte for byte what an uninterrupted shard writes.
Scripted engines (no vLLM) whose every answer is a function of its request, as vLLM's seeded
sampling is."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from selftaught.api.load import parse_run
from selftaught.chat import Sample
from selftaught.method.categories import CATEGORIES
from selftaught.method.prompts import MODIFIED_ANSWER_END, MODIFIED_ANSWER_START, MODIFIED_QUESTION_MARKER
from selftaught.pipeline.table import StageRef
from selftaught.stages import IMPLEMENTATIONS, StageContext, execute, shard_resume
from selftaught.stages.shard_progress import ShardProgress
from selftaught.stages.shard_resume import SavedRequests
from selftaught.store import LocalStore, open_store
from selftaught.store.layout import PAIRS_HELDOUT, PAIRS_TRAIN, SAVED, SELECTED, progress_key
from selftaught.store.manifest import read_manifest
from selftaught.store.progress import read_progress
from tests.stores import publish

from .test_spec import MINIMAL

REPO = Path(__file__).resolve().parents[2]


class Killed(Exception):
    """The process died here (with `flush_quietly` off, nothing more is written: a SIGKILL)."""


class SeededModel:
    """Answers every stage's prompts in its format; each sample is a function of its request (the
    conversation, the seed, the sample's number). Counts what it was asked; dies on call `dies_at`."""

    max_model_len = 4096

    def __init__(self, dies_at: int | None = None):
        self.dies_at, self.calls = dies_at, 0
        self.asked: Counter[tuple[str, int | None, int]] = Counter()

    def prompt_tokens(self, conversations):
        return [sum(len(m["content"].split()) for m in c) for c in conversations]

    def chat(self, conversations, sampling, seeds=None):
        self.calls += 1
        if self.calls == self.dies_at:
            raise Killed(f"call {self.calls}")
        answers = []
        for i, conversation in enumerate(conversations):
            seed = None if seeds is None else seeds[i]
            text = conversation[-1]["content"]
            digest = hashlib.sha256(json.dumps(conversation).encode()).hexdigest()[:8]
            self.asked[(digest, seed, sampling.n)] += 1
            answers.append([Sample(t, len(t.split())) for t in (_answer(text, random.Random(f"{digest}:{seed}:{j}")) for j in range(sampling.n))])
        return answers

    @property
    def samples(self) -> int:
        return sum(n * times for (_, _, n), times in self.asked.items())


def _answer(prompt: str, rng: random.Random) -> str:
    if "Classify it." in prompt:
        return f"Category: {rng.choice(CATEGORIES)}\nComplexity: {rng.randint(3, 9)}\nLength: (b)"
    if MODIFIED_QUESTION_MARKER in prompt:
        return f"{MODIFIED_QUESTION_MARKER}\nalso {rng.random():.5f}\n\n{MODIFIED_ANSWER_START}\nworse {rng.random():.5f}\n{MODIFIED_ANSWER_END}"
    if "[The Start of Assistant A's Answer]" in prompt:  # right half the time: the judge needs rounds, the votes too
        return f"because {rng.random():.5f} [[{rng.choice('AB')}]]"
    return f"an answer {rng.random():.5f}"


def _run(tmp_path: Path, **spec):
    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text("".join(json.dumps({"id": f"i{i}", "instruction": f"question {i}?"}) + "\n" for i in range(10)))
    base = {**MINIMAL["spec"], "data": {"instructions": {"source": str(instructions)}, "evaluation": {"heldOutFraction": 0.5}}, "generation": {"batchSize": 3}}
    return parse_run({**MINIMAL, "spec": {**base, **spec}})


def _seed_inputs(store: LocalStore, stage: str) -> None:
    """What `stage` reads (categorize reads the instructions file `_run` writes)."""
    if stage == "pairs":
        publish(store, SELECTED, [{"id": f"s{i}", "instruction": f"question {i}?", "category": "Coding"} for i in range(8)])
    elif stage == "judge":
        publish(store, PAIRS_TRAIN, [{"id": f"p{i}", "instruction": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(8)])
    elif stage == "evaluate":
        publish(store, PAIRS_HELDOUT, [{"id": f"h{i}", "prompt": f"q{i}", "chosen": "good", "rejected": "bad", "subset": "default"} for i in range(8)])


STAGES = {
    "categorize": (StageRef("categorize"), {}),
    "pairs": (StageRef("pairs"), {}),
    "judge": (StageRef("judge", 1), {"judge": {"samples": 8}}),
    "evaluate": (StageRef("evaluate", 0), {"evaluate": {"majorityVote": 5, "positionConsistency": False}}),
}


def _attempt(run, ref, store, engine):
    ctx = StageContext(run=run, stage=ref, store=store, make_engine=lambda ctx, model: engine)
    return execute(IMPLEMENTATIONS[ref.name], ctx), ctx


def _published(store, manifest) -> dict[str, bytes]:
    """Every output the stage published, by name, as bytes."""
    return {key.rsplit("/", 1)[-1]: store.read_bytes(key) for key in manifest.outputs}


def _without_this_attempts_numbers(counts):
    return {k: v for k, v in counts.items() if not k.startswith("resumed_") and k not in ("generated_tokens", "generation_seconds")}


@pytest.fixture
def hard_kill(monkeypatch):
    """A part every 4 finished requests and never on the way out: what a SIGKILL leaves."""
    monkeypatch.setattr(shard_resume, "FLUSH_REQUESTS", 4)
    monkeypatch.setattr(shard_resume, "FLUSH_SECONDS", 3600.0)  # (the spec's generation.saveEvery: 30 s)
    monkeypatch.setattr(SavedRequests, "flush_quietly", lambda self: None)


def _kill_and_resume(run, ref, whole, killed):
    """Run the stage once uninterrupted on `whole`; on `killed`, kill its shard halfway and run it
    again: what the resumed attempt must not have generated again, and must have written the same."""
    for store in (whole, killed):
        _seed_inputs(store, ref.name)
    uninterrupted = SeededModel()
    expected, _ = _attempt(run, ref, whole, uninterrupted)
    assert uninterrupted.calls >= 4, "a shard big enough to die halfway"

    with pytest.raises(Killed):
        _attempt(run, ref, killed, SeededModel(dies_at=uninterrupted.calls // 2 + 1))
    assert killed.list(f"{ref.prefix}/{SAVED}/00000/"), "it saved parts before it died"
    assert read_manifest(killed, ref.shard_manifest_key(0)) is None

    resumed = SeededModel()
    manifest, _ = _attempt(run, ref, killed, resumed)
    marker = read_manifest(killed, ref.shard_manifest_key(0))
    # the resumed attempt asked only what the uninterrupted shard asked, less what was saved
    assert marker.counts["resumed_samples"] > 0
    assert resumed.samples + marker.counts["resumed_samples"] == uninterrupted.samples
    assert not resumed.asked - uninterrupted.asked
    # ... and wrote the same, byte for byte: the shard's file, its counts, what the stage published
    whole_marker = read_manifest(whole, ref.shard_manifest_key(0))
    assert list(marker.outputs.values()) == list(whole_marker.outputs.values())  # records, sha256, bytes
    assert _without_this_attempts_numbers(marker.counts) == _without_this_attempts_numbers(whole_marker.counts)
    assert _published(killed, manifest) == _published(whole, expected)
    assert manifest.counts["resumed_samples"] == marker.counts["resumed_samples"]  # the stage says what was not redone
    assert read_progress(killed, progress_key(ref.prefix, 0)).saved.done >= marker.counts["resumed_samples"]
    assert not killed.list(f"{ref.prefix}/{SAVED}/")  # the saved parts went with the shard's marker


@pytest.mark.parametrize("name", list(STAGES))
def test_a_shard_killed_halfway_generates_only_what_it_had_not_saved_and_writes_the_same_output(tmp_path, hard_kill, name):
    ref, spec = STAGES[name]
    _kill_and_resume(_run(tmp_path, **spec), ref, LocalStore(tmp_path / "whole"), LocalStore(tmp_path / "killed"))


def test_save_every_zero_saves_only_when_the_shard_stops(tmp_path, hard_kill):
    ref, spec = STAGES["judge"]
    store = LocalStore(tmp_path / "killed")
    _seed_inputs(store, ref.name)
    with pytest.raises(Killed):
        _attempt(_run(tmp_path, **spec, generation={"batchSize": 3, "saveEvery": "0"}), ref, store, SeededModel(dies_at=3))
    assert not store.list(f"{ref.prefix}/{SAVED}/"), "a SIGKILL with saveEvery 0 leaves nothing to replay"


def test_a_killed_shard_resumes_on_s3_too(tmp_path, hard_kill, bucket, s3_server):
    ref, spec = STAGES["judge"]
    whole, killed = (open_store(f"{bucket}/{name}", endpoint=s3_server) for name in ("whole", "killed"))
    _kill_and_resume(_run(tmp_path, **spec), ref, whole, killed)


def test_a_shard_stopped_by_an_exception_saves_what_it_finished_on_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_resume, "FLUSH_REQUESTS", 10**6)  # nothing saved as it goes
    monkeypatch.setattr(shard_resume, "FLUSH_SECONDS", 3600.0)  # (the spec's generation.saveEvery: 30 s)
    ref, spec = STAGES["judge"]
    run = _run(tmp_path, **spec)
    store = LocalStore(tmp_path / "store")
    _seed_inputs(store, "judge")
    stopped = SeededModel(dies_at=3)
    with pytest.raises(Killed):
        _attempt(run, ref, store, stopped)
    assert len(store.list(f"{ref.prefix}/{SAVED}/00000/")) == 1  # one part, written as it stopped
    resumed = SeededModel()
    _attempt(run, ref, store, resumed)
    marker = read_manifest(store, ref.shard_manifest_key(0))
    assert marker.counts["resumed_samples"] == stopped.samples  # all it drew, none drawn again
    assert not resumed.asked & stopped.asked


def test_a_torn_saved_part_is_only_answers_missing(tmp_path, hard_kill):
    ref, spec = STAGES["pairs"]
    run = _run(tmp_path, **spec)
    whole, killed = LocalStore(tmp_path / "whole"), LocalStore(tmp_path / "killed")
    for store in (whole, killed):
        _seed_inputs(store, "pairs")
    expected, _ = _attempt(run, ref, whole, SeededModel())
    with pytest.raises(Killed):
        _attempt(run, ref, killed, SeededModel(dies_at=5))
    parts = killed.list(f"{ref.prefix}/{SAVED}/00000/")
    assert len(parts) >= 2
    lines = killed.read_bytes(parts[-1]).splitlines(keepends=True)
    killed.write_bytes(parts[-1], b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # its last line cut in half
    killed.write_bytes(parts[0], killed.read_bytes(parts[0]) + b'{"request": "x", "samples": "not a list"}\n\xff\xfe\n')
    saved = sum(len(killed.read_bytes(p).splitlines()) for p in parts) - 3  # the three lines that are not answers

    resumed = SeededModel()
    manifest, _ = _attempt(run, ref, killed, resumed)
    marker = read_manifest(killed, ref.shard_manifest_key(0))
    assert marker.counts["resumed_samples"] == saved  # one sample per pairs request
    assert _published(killed, manifest) == _published(whole, expected)


def test_saved_parts_a_finished_shard_left_behind_go_when_the_stage_publishes(tmp_path):
    ref, spec = STAGES["evaluate"]
    run = _run(tmp_path, generation={"shards": 2}, **spec)
    store = LocalStore(tmp_path / "store")
    _seed_inputs(store, "evaluate")
    ctx = StageContext(run=run, stage=ref, store=store, num_shards=2, make_engine=lambda ctx, model: SeededModel())
    assert execute(IMPLEMENTATIONS["evaluate"], ctx, [0]) is None
    # an orphan of shard 0, killed after it saved a part and before it saw the marker
    store.write_bytes(f"{ref.prefix}/{SAVED}/00000/attempt-orphan/part-00000.jsonl", b'{"request": "k/0", "samples": [["[[A]]", 1, false]]}\n')
    assert execute(IMPLEMENTATIONS["evaluate"], ctx) is not None
    assert not store.list(f"{ref.prefix}/{SAVED}/")


@pytest.mark.parametrize(
    ("edit", "replayed"),
    [({"generation": {"batchSize": 5}}, True), ({"models": {"seed": {"source": "another/model"}}}, False)],
    ids=["batch-size", "model"],
)
def test_answers_saved_before_an_edit_count_unless_the_edit_changes_what_the_model_answers(tmp_path, hard_kill, edit, replayed):
    ref, _ = STAGES["categorize"]
    store = LocalStore(tmp_path / "store")
    with pytest.raises(Killed):
        _attempt(_run(tmp_path), ref, store, SeededModel(dies_at=3))
    assert store.list(f"{ref.prefix}/{SAVED}/00000/")
    _attempt(_run(tmp_path, **edit), ref, store, SeededModel())
    assert ("resumed_samples" in read_manifest(store, ref.shard_manifest_key(0)).counts) == replayed


def test_a_part_is_written_every_k_requests_or_t_seconds_whichever_comes_first(tmp_path):
    store, now = LocalStore(tmp_path), [0.0]
    progress = ShardProgress(store, "p.json", "judge-1", wall=lambda: 1000 + now[0])
    saved = SavedRequests(store, "iter-001/judge", 0, "attempt-a", progress, every_requests=3, every_seconds=30, clock=lambda: now[0])

    def parts():
        return store.list("iter-001/judge/_saved/00000/attempt-a/")

    def answered(key, samples):  # as the engine wrapper does: an engine call, its answers waiting, maybe a part
        saved.calling()
        progress.advance(samples)  # the engine's samples count as they finish
        saved.called()
        saved.add(key, [Sample("x", 1)] * samples)
        saved.maybe_flush()

    answered("a/0", 2)
    answered("b/0", 2)
    assert parts() == [] and progress.record.saved is None
    answered("c/0", 1)  # three requests wait
    assert len(parts()) == 1 and progress.record.saved.done == 5 and progress.record.saved.at == 1000
    now[0] = 29.0
    answered("d/0", 1)
    assert len(parts()) == 1
    now[0] = 30.0
    saved.maybe_flush()  # 30 s since the last part
    assert len(parts()) == 2 and progress.record.saved.done == 6 and progress.record.saved.at == 1030
    assert progress.record.saved.bytes == sum(len(store.read_bytes(key)) for key in parts())
    assert read_progress(store, "p.json").saved == progress.record.saved  # in the store at once: it prices a disruption
    now[0] = 100.0
    saved.maybe_flush()  # nothing waits: nothing written
    assert len(parts()) == 2

    saved.add("e/0", [Sample("x", 1)])
    progress.advance(1)
    saved.calling()
    progress.advance(4)  # an engine call that dies with 4 samples finished: they never come back
    saved.flush_quietly()  # on the way out
    assert len(parts()) == 3 and progress.record.saved.done == 7


class BlockingModel(SeededModel):
    """Once `after` calls have returned, the next one says so in `flag` and never returns."""

    def __init__(self, after: int, flag: Path):
        super().__init__()
        self.after, self.flag = after, flag

    def chat(self, conversations, sampling, seeds=None):
        if self.calls == self.after:
            self.flag.write_text("blocked")
            time.sleep(600)
        return super().chat(conversations, sampling, seeds)


def run_until_killed(root: str, after: int) -> None:
    """The child process of the SIGKILL test: the judge stage on a model that blocks mid-shard."""
    monkey = pytest.MonkeyPatch()
    monkey.setattr(shard_resume, "FLUSH_REQUESTS", 4)
    monkey.setattr(shard_resume, "FLUSH_SECONDS", 3600.0)
    ref, spec = STAGES["judge"]
    _attempt(_run(Path(root), **spec), ref, LocalStore(Path(root) / "killed"), BlockingModel(after, Path(root) / "blocked"))


def test_a_shard_process_killed_with_sigkill_resumes_from_its_saved_parts(tmp_path):
    ref, spec = STAGES["judge"]
    run = _run(tmp_path, **spec)
    whole, killed = LocalStore(tmp_path / "whole"), LocalStore(tmp_path / "killed")
    for store in (whole, killed):
        _seed_inputs(store, "judge")
    uninterrupted = SeededModel()
    expected, _ = _attempt(run, ref, whole, uninterrupted)
    code = f"from tests.unit.test_shard_resume import run_until_killed; run_until_killed({str(tmp_path)!r}, {uninterrupted.calls // 2})"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "blocked").exists():
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the child never reached its blocking call"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert killed.list(f"{ref.prefix}/{SAVED}/00000/")

    resumed = SeededModel()
    manifest, _ = _attempt(run, ref, killed, resumed)
    marker = read_manifest(killed, ref.shard_manifest_key(0))
    assert marker.counts["resumed_samples"] > 0 and resumed.samples + marker.counts["resumed_samples"] == uninterrupted.samples
    assert _published(killed, manifest) == _published(whole, expected)
    assert not killed.list(f"{ref.prefix}/{SAVED}/")
