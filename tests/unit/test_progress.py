"""Progress inside a stage: small throttled objects in the store, read back tolerantly, summed
into a percent, a rate and a time left."""

import pytest

from selftaught.chat import Sample
from selftaught.pipeline.scan import scan
from selftaught.pipeline.table import StageRef
from selftaught.stages.shard_progress import SampleMeter, ShardProgress
from selftaught.store import LocalStore
from selftaught.store.layout import progress_key
from selftaught.store.manifest import Manifest, write_manifest
from selftaught.store.progress import ProgressRecord, read_progress, write_progress
from selftaught.views.live import describe, duration, read_view, stage_view


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path)


def test_a_shard_writes_at_its_start_at_most_every_few_seconds_and_at_its_end(store):
    clock = Clock()
    key = progress_key("iter-001/judge", 3)
    progress = ShardProgress(store, key, "judge-1", 3, "attempt-x", every=5.0, clock=clock, wall=clock)
    progress.start(total=1000)
    assert progress.writes == 1 and read_progress(store, key).total == 1000
    for _ in range(400):  # a burst of finished requests within a second: no write per item
        progress.advance(1)
    clock.now += 0.9
    progress.advance(1)
    assert progress.writes == 1
    clock.now += 5
    progress.advance(1)
    assert progress.writes == 2 and read_progress(store, key).done == 402
    progress.finish()
    record = read_progress(store, key)
    assert progress.writes == 3 and record.finished and record.done == 1000 and record.seconds == pytest.approx(5.9)


def test_outside_a_shard_progress_is_counted_nowhere():
    from selftaught.stages.shard_progress import NoProgress

    nothing = NoProgress()  # a training rank other than 0, a stage called directly
    nothing.start(10)
    nothing.working()
    nothing.set(3, 10)
    nothing.advance(2)
    nothing.add_tokens(7)
    nothing.finish()
    assert nothing.writes == 0


def test_a_missing_partial_or_foreign_progress_object_is_no_progress(store):
    key = progress_key("categorize", 0)
    assert read_progress(store, key) is None
    store.write_bytes(key, b'{"stage": "categorize", "done": 3')  # cut short
    assert read_progress(store, key) is None
    store.write_bytes(key, b'{"some": "thing else"}')
    assert read_progress(store, key) is None


def test_samples_are_counted_per_request_where_the_engine_reports_them_else_per_call(store):
    progress = ShardProgress(store, progress_key("pairs", 0), "pairs", every=0)
    meter = SampleMeter(lambda: progress)

    class Engine:
        max_model_len = 100
        live = False

        def chat(self, conversations, sampling, seeds=None):
            if self.live:
                for _ in conversations:
                    meter.finished(sampling.n)
            return [[Sample("x", 7)] * sampling.n for _ in conversations]

        def prompt_tokens(self, conversations):
            return [1] * len(conversations)

    from selftaught.chat import Sampling

    engine = Engine()
    counted = meter.counted(engine)
    counted.chat([[]] * 3, Sampling(n=2))
    assert (progress.record.done, progress.record.tokens) == (6, 42)
    engine.live = True  # vLLM: each finished request's samples as they come; nothing counted twice
    counted.chat([[]] * 3, Sampling(n=2))
    assert (progress.record.done, progress.record.tokens) == (12, 84)


def record(shard, done, total, seconds, tokens=0.0, finished=False, unit="samples"):
    return ProgressRecord(stage="judge-1", shard=shard, done=done, total=total, tokens=tokens, started_at=100.0, updated_at=100.0 + seconds, finished=finished, unit=unit)


def test_a_stage_view_sums_its_shards_and_says_how_long_is_left():
    records = [record(0, 100, 100, 50, finished=True), record(1, 50, 100, 50, tokens=5000), record(2, 25, 100, 25, tokens=2500)]
    view = stage_view("judge-1", records, shards=4, finished={0})
    # shard 3 has not started: as big as the others; 400 in all, 175 done
    assert (view.done, view.total, view.percent) == (175, 400, 43.8)
    assert view.shards_done == 1 and view.tokens_per_second == 200.0
    assert view.eta_seconds == round(225 / 2.0)  # two running shards, each at 1/s
    assert view.updated_at == 150.0


def test_a_view_is_relative_to_its_newest_record_and_a_finished_shard_counts_whole():
    stale = record(1, 5, 100, 10)
    view = stage_view("judge-1", [stale], shards=2, finished={0})
    assert view.done == 105 and view.total == 200
    assert stage_view("judge-1", [stale], shards=2, finished={0}) == view  # the same records, the same view
    assert "last update" in describe(view, now=150.0 + 3600) and "ETA" in describe(view)


def test_a_view_with_no_total_yet_has_no_percent_or_eta():
    view = stage_view("categorize", [record(0, 0, None, 3)], shards=1)
    assert view.percent is None and view.eta_seconds is None
    assert describe(view) == "started"


def test_training_progress_is_steps_and_its_rate_leaves_out_the_model_load():
    loaded = record(0, 30, 120, 60, unit="steps").model_copy(update={"working_since": 130.0})  # 30 s of loading
    view = stage_view("train-1", [loaded], shards=1)
    assert (view.unit, view.percent, view.eta_seconds) == ("steps", 25.0, 90)
    assert describe(view).startswith("25.0% (30/120 steps)")


def test_a_grpo_train_stage_shows_its_newest_reward_and_accuracy_in_its_progress_and_the_run_status():
    from selftaught.controller.status import run_progress

    grpo = record(0, 30, 120, 60, unit="steps").model_copy(update={"metrics": {"reward": 0.75, "accuracy": 0.625}})
    view = stage_view("train-1", [grpo], shards=1)
    assert describe(view).endswith(", reward 0.75, accuracy 0.62, ETA 3m00s")
    status = run_progress(view)
    assert (status.reward, status.accuracy, status.unit) == (0.75, 0.625, "steps")
    assert run_progress(stage_view("judge-1", [record(0, 3, 10, 5)], shards=1)).reward is None


def test_the_store_scan_finds_progress_objects_and_the_view_reads_them(store):
    ref = StageRef("judge", 1)
    write_progress(store, progress_key(ref.prefix, 0), record(0, 10, 40, 10))
    store.write_bytes(progress_key(ref.prefix, 1), b"garbage")
    write_manifest(store, ref.shard_manifest_key(1), Manifest(stage="judge", iteration=1, shard=1))
    progress = scan(store)
    assert progress.progress_keys[ref] == [progress_key(ref.prefix, 0), progress_key(ref.prefix, 1)]
    assert progress.finished_shards[ref] == {1} and ref not in progress.manifests  # progress is never "done"
    view = read_view(store, ref, progress, shards=2)
    assert (view.done, view.total) == (50, 80)


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (12, "12s"), (245, "4m05s"), (3720, "1h02m")])
def test_durations_read_like_a_person_writes_them(seconds, text):
    assert duration(seconds) == text


def test_the_meter_times_generation_and_the_stage_manifest_says_tokens_per_second_per_gpu(store):
    from selftaught.chat import Sampling
    from selftaught.stages.contract import with_generation_speed

    now = [0.0]
    meter = SampleMeter(lambda: ShardProgress(store, progress_key("judge", 0), "judge-1", every=0), clock=lambda: now[0])

    class Engine:
        max_model_len = 100

        def chat(self, conversations, sampling, seeds=None):
            now[0] += 2.0  # two seconds of generating
            return [[Sample("x", 50)] * sampling.n for _ in conversations]

    meter.counted(Engine()).chat([[]] * 4, Sampling(n=2))
    assert (meter.tokens, meter.seconds) == (400, 2.0)
    shards = [Manifest(stage="judge", counts={"generated_tokens": 400, "generation_seconds": 2.0}),
              Manifest(stage="judge", counts={"generated_tokens": 200, "generation_seconds": 2.0})]  # fmt: skip
    manifest = with_generation_speed(Manifest(stage="judge"), shards, gpus_per_engine=2)
    assert manifest.summary["tokensPerSecondPerGpu"] == 75.0  # 600 tokens over 4 engine-seconds on 2 GPUs each
    meter.reset()
    assert (meter.tokens, meter.seconds) == (0, 0.0)


def test_each_iteration_reports_the_judge_and_train_speeds_under_their_own_names(store):
    from selftaught.pipeline.scan import iteration_summaries

    write_manifest(store, StageRef("judge", 1).manifest_key, Manifest(stage="judge", iteration=1, summary={"kept": 3, "tokensPerSecondPerGpu": 900.5}))
    write_manifest(store, StageRef("train", 1).manifest_key, Manifest(stage="train", iteration=1, summary={"checkpoint": "s3://c", "tokensPerSecondPerGpu": 1200.0}))
    (row,) = iteration_summaries(scan(store))
    assert row == {"iteration": 1, "kept": 3, "judgeTokensPerSecondPerGpu": 900.5, "checkpoint": "s3://c", "trainTokensPerSecondPerGpu": 1200.0}


def test_what_a_resumed_attempt_continued_from_is_done_but_not_part_of_its_rate():
    resumed = record(0, 60, 100, 10, unit="steps").model_copy(update={"resumed": 50.0})  # 50 steps from a checkpoint, 10 in 10 s
    view = stage_view("train-1", [resumed], shards=1)
    assert view.done == 60 and view.eta_seconds == 40  # 40 steps left at its own 1 step/s, not 6 steps/s
