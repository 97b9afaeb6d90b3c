"""Training survives its process: a train stage stopped by SIGTERM saves its full state and exits
Disrupted, one killed with SIGKILL loses only the steps since its last periodic checkpoint, and
either way the next attempt continues where the store says and ends with exactly the weights of
an uninterrupted run (CPU, fp32, the same seeds and data order: bitwise). Only the final model is
published; the checkpoints are gone once it is.

The stage runs as pods and the local runner run it: `python -m selftaught stage train`, one
process (DeepSpeed on CPU, gloo), the run in `SELFTAUGHT_RUN`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selftaught.api.load import parse_run
from selftaught.engines.checkpointing import checkpoint_folders, read_marker
from selftaught.errors import TERMINATION_MESSAGE_VARIABLE, Reason, decode
from selftaught.method.prompts import judge_messages
from selftaught.pipeline.launch import RUN_VARIABLE, stage_document
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import progress_key, sft_output
from selftaught.store.manifest import read_manifest
from selftaught.store.progress import read_progress
from tests.conftest import QUICK_SPEC, REPO, _merge
from tests.stores import publish

TRAIN = StageRef("train", 1)
#: 10 judgments, one per step, two epochs: 20 optimizer steps, an epoch boundary at step 10
STEPS = 20

#: `selftaught stage train`, which sends itself SIGTERM at the end of step SIGNAL_AT_STEP: the
#: signal arrives mid-training at a step the test knows, and takes the path a pod's SIGTERM takes
SIGNALLED_STAGE = """
import os, signal, sys
import transformers
from selftaught.cli import main

at = int(os.environ["SIGNAL_AT_STEP"])
original = transformers.Trainer.train

def train(self, *args, **kwargs):
    class Signal(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == at:
                os.kill(os.getpid(), signal.SIGTERM)
    self.add_callback(Signal())
    return original(self, *args, **kwargs)

transformers.Trainer.train = train
main(["stage", "train", "--iteration=1"])
"""


def _run(tiny_model: Path, store: Path, **train):
    """A one-iteration run on the tiny model whose judge stage is done: one judgment per step."""
    spec = {
        **QUICK_SPEC,
        "models": {"seed": {"source": str(tiny_model)}},
        "data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}},
        "storage": {"uri": str(store)},
        "iterations": 1,
    }
    train = {"microBatchSize": 1, "epochs": 2, "checkpointEvery": 0, **train}
    run = parse_run({"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "resume", "namespace": "tests"},
                     "spec": _merge(spec, {"train": train})})  # fmt: skip
    opened = open_run_store(run)
    accept(opened, run)
    judgments = [
        {"id": f"{i}:AB", "messages": judge_messages(f"question {i} " + "word " * i, "a good answer", "a bad answer"), "completion": f"A is better, {i}. [[A]]", "winner": "A"}
        for i in range(STEPS // 2)
    ]
    publish(opened, sft_output(1), judgments)
    return run, opened


def _stage(run, tmp_path: Path, script: str | None = None, **env: str) -> subprocess.Popen:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "selftaught", "stage", "train", "--iteration=1"]
    environment = {
        **os.environ, RUN_VARIABLE: stage_document(run), TERMINATION_MESSAGE_VARIABLE: str(tmp_path / "termination-log"),
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), **env,
    }  # fmt: skip
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    log, _ = process.communicate(timeout=timeout)
    return process.returncode, log


def _weights(store, manifest) -> bytes:
    return Path(store.url(f"{manifest.summary['checkpoint'].removeprefix(store.url()).strip('/')}/model.safetensors")).read_bytes()


def _published_only_the_final_model(store, manifest) -> None:
    attempt = manifest.attempt
    assert manifest.outputs and all(key.startswith(f"{TRAIN.prefix}/{attempt}/checkpoint/") for key in manifest.outputs)
    assert [key for key in store.list(f"{TRAIN.prefix}/") if "/resume/" in key] == []  # every attempt's checkpoints are gone
    assert {key for key in store.list(f"{TRAIN.prefix}/") if "/attempt-" in key} == set(manifest.outputs)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory) -> bytes:
    """The final weights of the same training run in one go."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    run, store = _run(tiny_model, tmp_path / "store")
    code, log = _finish(_stage(run, tmp_path))
    assert code == 0, log[-3000:]
    manifest = read_manifest(store, TRAIN.manifest_key)
    assert manifest.counts["steps"] == STEPS and manifest.summary["resumedFromStep"] == 0
    return _weights(store, manifest)


def test_a_stopped_then_killed_train_stage_continues_from_its_checkpoints_to_the_weights_of_an_uninterrupted_run(
    tiny_model, tmp_path, uninterrupted
):
    run, store = _run(tiny_model, tmp_path / "store")  # checkpointEvery: 0, so the stop's checkpoint is the only one

    # SIGTERM during step 5 (a pod deleted, a spot node reclaimed): the trainer saves at the end of step 6 and stops
    code, log = _finish(_stage(run, tmp_path, SIGNALLED_STAGE, SIGNAL_AT_STEP="5"))
    told = decode((tmp_path / "termination-log").read_text())
    assert code == 1 and told is not None and told.reason == Reason.DISRUPTED and not told.permanent, log[-3000:]
    assert told.message.startswith(f"stopped by SIGTERM at step 6 of {STEPS}: saved its full state in ")
    assert told.message.endswith("the next attempt continues from step 6")
    (folder,) = checkpoint_folders(store, TRAIN.prefix)
    saved = read_marker(store, folder)
    assert saved is not None and saved.step == 6 and saved.bytes > 0
    progress = read_progress(store, progress_key(TRAIN.prefix, 0))
    assert progress.saved is not None and (progress.saved.done, progress.saved.bytes) == (6, saved.bytes) and not progress.finished

    # the next attempt continues from step 6, checkpointing at every step (the interval is not a
    # training setting: any checkpoint of the same training is continued), until SIGKILL: a lost
    # node, the OOM killer; no handler runs, no last checkpoint
    often = run.model_copy(update={"spec": run.spec.model_copy(update={"train": run.spec.train.model_copy(update={"checkpoint_every": "1ms"})})})
    stage = _stage(often, tmp_path)
    deadline = time.monotonic() + 300
    while not any(step >= 9 and read_marker(store, folder) for folder, step in checkpoint_folders(store, TRAIN.prefix).items()):
        assert stage.poll() is None and time.monotonic() < deadline, stage.communicate()[0][-3000:]
        time.sleep(0.02)
    stage.send_signal(signal.SIGKILL)
    _finish(stage)
    complete = [saved for saved in map(lambda folder: read_marker(store, folder), checkpoint_folders(store, TRAIN.prefix)) if saved]
    assert len(complete) == 1 and 9 <= complete[0].step < STEPS  # the older ones, step 6's too, went once a newer one was complete
    newest = complete[0].step
    assert read_manifest(store, TRAIN.manifest_key) is None

    # the third attempt redoes only the steps after the newest checkpoint and ends where an uninterrupted run ends
    code, log = _finish(_stage(run, tmp_path))
    assert code == 0, log[-3000:]
    manifest = read_manifest(store, TRAIN.manifest_key)
    summary = manifest.summary
    assert summary["resumedFromStep"] == newest and manifest.counts["steps"] == STEPS and summary["checkpoints"] == 0
    assert _weights(store, manifest) == uninterrupted
    _published_only_the_final_model(store, manifest)  # no attempt's checkpoint is left, none is in the manifest


#: DPO or GRPO (or SFT) trained three times in one process: in one go, stopped (a stop request at the
#: end of step 3, as SIGTERM makes one), and continued in another attempt; the weights of the first and
#: the last. GRPO checkpoints only between generation blocks (two steps here), so it stops at step 4.
#: With `lora` as a third argument, LoRA adapters are trained (and compared) instead of every weight.
METHOD_SCRIPT = """
import contextlib, json, sys
from pathlib import Path
from safetensors.torch import load_file
from selftaught.api.spec import Train
from selftaught.engines import training
from selftaught.engines.checkpointing import Checkpointing
from selftaught.errors import Disrupted
from selftaught.store.layout import resume_folder
from selftaught.store.local import LocalStore

method, model, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
lora = {"lora": {"rank": 4, "alpha": 8, "learningRate": 1e-2}} if sys.argv[4:] == ["lora"] else {}
weights = "adapter_model.safetensors" if lora else "model.safetensors"
store = LocalStore(out / "store")

class StopAt:
    signal_name = "SIGTERM"
    def __init__(self, step): self.step, self.seen = step, 0
    def requested(self): return self.seen >= self.step
    def deferred(self): return contextlib.nullcontext()

def attempt(name, stop_at=10**9):
    stop = StopAt(stop_at)
    checkpoints = Checkpointing(store, "iter-001/train", resume_folder("iter-001/train", name), fingerprint="same", every=None, stop=stop)
    steps = []
    def on_step(step, total):
        stop.seen = step
        steps.append(step)
    common = dict(output_dir=out / name / "model", work_dir=out / name / "work", on_step=on_step, checkpoints=checkpoints)
    try:
        if method == "sft":
            records = [{"messages": [{"role": "user", "content": f"Which is better, pair {i}?"}], "completion": "The first. [[A]]"} for i in range(8)]
            train = Train(zeroStage=2, learningRate=5e-4, warmupSteps=0, epochs=2, microBatchSize=2, gradientAccumulation=1, bf16=False, **lora)
            training.train_sft(records=records, train=train, model_path=model, **common)
        elif method == "dpo":
            records = [{"messages": [{"role": "user", "content": f"Which is better, pair {i}?"}], "chosen": "The first. [[A]]", "rejected": "The second. [[B]]"} for i in range(8)]
            train = Train(method="dpo", zeroStage=2, learningRate=5e-4, warmupSteps=0, epochs=2, microBatchSize=2, gradientAccumulation=1, bf16=False, **lora)
            training.train_dpo(model_path=model, records=records, train=train, **common)
        else:
            from selftaught.method.rewards import TERMS, grpo_prompts, rewards, rows_per_pair
            pairs = [{"id": f"p{i}", "instruction": f"What is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}."} for i in range(4)]
            rows = grpo_prompts(pairs, format="pairwise", orders="both", seed=1, iteration=1)
            train = Train(method="grpo", zeroStage=2, warmupSteps=0, microBatchSize=4, gradientAccumulation=1, bf16=False, grpo={"groupSize": 4, "steps": 6}, **lora)
            scorer = lambda batch, texts: rewards([r["group"] for r in batch], [r["role"] for r in batch], texts)
            training.train_grpo(model_path=model, rows=rows, scorer=scorer, terms=TERMS, weights={name: 1.0 for name in TERMS},
                                rows_per_pair=rows_per_pair("pairwise", "both"), max_completion_tokens=16, train=train, seed=3, **common)
        ended = "finished"
    except Disrupted as error:
        ended = str(error)
    resumed = checkpoints.resumed
    return {"ended": ended, "first": steps[0], "last": steps[-1], "resumed": resumed.step if resumed else 0, "bytes": resumed.bytes if resumed else 0}

results = [attempt("attempt-whole"), attempt("attempt-stopped", stop_at=3), attempt("attempt-continued")]
whole, continued = (load_file(out / name / "model" / weights) for name in ("attempt-whole", "attempt-continued"))
print("RESULT " + json.dumps({"attempts": results, "difference": max((whole[k] - continued[k]).abs().max().item() for k in whole)}))
"""


def _three_attempts(tiny_model: Path, tmp_path: Path, method: str, *flags: str) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-c", METHOD_SCRIPT, method, str(tiny_model), str(tmp_path), *flags]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])


def _continued_as_one(result: dict, steps: int, saved: int) -> None:
    whole, stopped, continued = result["attempts"]
    assert {k: v for k, v in whole.items() if k != "bytes"} == {"ended": "finished", "first": 0, "last": steps, "resumed": 0}
    assert stopped["ended"].startswith(f"stopped by SIGTERM at step {saved} of {steps}: saved its full state") and stopped["last"] == saved
    assert {k: v for k, v in continued.items() if k != "bytes"} == {"ended": "finished", "first": saved, "last": steps, "resumed": saved}
    assert result["difference"] == 0.0  # CPU, fp32, the same seeds, data order and (GRPO) rollouts: bitwise


@pytest.mark.slow
@pytest.mark.parametrize(("method", "steps", "saved"), [("dpo", 8, 3), ("grpo", 6, 4)])
def test_dpo_and_grpo_stopped_mid_training_continue_to_the_weights_of_an_uninterrupted_run(tiny_model, tmp_path, method, steps, saved):
    _continued_as_one(_three_attempts(tiny_model, tmp_path, method), steps, saved)


def test_a_lora_trainer_stopped_mid_training_continues_from_a_checkpoint_of_its_adapter_to_the_adapter_of_an_uninterrupted_run(tiny_model, tmp_path):
    """The Trainer checkpoints a PEFT model as its adapter and the adapter's optimizer state (DeepSpeed
    leaves the frozen weights out): a fraction of the model, and continued bitwise."""
    result = _three_attempts(tiny_model, tmp_path, "sft", "lora")
    _continued_as_one(result, 8, 3)
    assert 0 < result["attempts"][2]["bytes"] < (tiny_model / "model.safetensors").stat().st_size / 4  # 0.5 MB: the weights alone are 2.8


@pytest.mark.slow
def test_grpo_with_lora_stopped_between_generation_blocks_continues_to_the_adapter_of_an_uninterrupted_run(tiny_model, tmp_path):
    _continued_as_one(_three_attempts(tiny_model, tmp_path, "grpo", "lora"), 6, 4)


@pytest.mark.slow
def test_ctrl_c_during_training_saves_a_checkpoint_and_the_same_command_continues_from_it(make_run, tmp_path):
    """What a user meets: `selftaught run` interrupted while it trains (the runner sends its stage
    processes SIGTERM and waits for them), then run again."""
    import yaml

    from selftaught.local.runner import work_folder
    from tests.integration.test_faults import _runner, _seed_until_train

    run = make_run(name="ctrlc", train={"microBatchSize": 1, "epochs": 4, "checkpointEvery": "1ms"})  # 8 judgments: 32 steps
    store = _seed_until_train(run)
    manifest_path = tmp_path / "run.yaml"
    manifest_path.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))

    runner = _runner(manifest_path)
    deadline = time.monotonic() + 300
    while not any(read_marker(store, folder) for folder in checkpoint_folders(store, TRAIN.prefix)):  # it trains
        assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
        time.sleep(0.05)
    runner.send_signal(signal.SIGINT)
    _, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted; run the same command to resume", stderr
    stage_log = (work_folder(run, store.uri) / "logs" / "train-1.log").read_text()
    assert "Disrupted: stopped by SIGTERM at step" in stage_log and "saved its full state" in stage_log, stage_log[-3000:]
    (saved,) = [saved for saved in map(lambda folder: read_marker(store, folder), checkpoint_folders(store, TRAIN.prefix)) if saved]

    again = _runner(manifest_path)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    manifest = read_manifest(store, TRAIN.manifest_key)
    assert manifest.summary["resumedFromStep"] == saved.step and 0 < saved.step < 32
    _published_only_the_final_model(store, manifest)


@pytest.mark.slow
def test_two_nodes_write_one_checkpoint_and_a_sigterm_to_one_node_stops_both_at_the_same_step(tiny_model, tmp_path):
    """Two torchrun agents on this machine, each with a scratch folder of its own, are two nodes:
    each node's first process uploads its ranks' files into rank 0's attempt folder, and a pod
    deleted on one node (SIGTERM to it alone) stops both at one step end with one checkpoint."""
    from selftaught.local import subprocesses
    from selftaught.pipeline.launch import stage_command

    run, store = _run(tiny_model, tmp_path / "store", zeroStage=2, nodes=2, gpusPerNode=1, checkpointEvery="1ms")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def node(rank: int, attempt: str) -> subprocess.Popen:
        scratch = tmp_path / f"{attempt}-node-{rank}"
        scratch.mkdir()
        env = {**os.environ, RUN_VARIABLE: stage_document(run), TERMINATION_MESSAGE_VARIABLE: str(scratch / "termination-log"),
               "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}  # fmt: skip
        command = stage_command(run.spec, TRAIN, master_port=port, nproc=1, nnodes=2, node_rank=rank)
        return subprocesses.start(command, env=env, stdout=(scratch / "log").open("w"), stderr=subprocess.STDOUT)

    nodes = [node(0, "first"), node(1, "first")]
    deadline = time.monotonic() + 300
    while not any(read_marker(store, folder) for folder in checkpoint_folders(store, TRAIN.prefix)):
        assert all(n.poll() is None for n in nodes) and time.monotonic() < deadline, (tmp_path / "first-node-0" / "log").read_text()[-3000:]
        time.sleep(0.05)
    nodes[1].send_signal(signal.SIGTERM)  # node 1's pod is deleted; torchrun forwards the SIGTERM to its worker
    for n in nodes:
        n.wait(timeout=300)
    told = [decode((tmp_path / f"first-node-{rank}" / "termination-log").read_text()) for rank in (0, 1)]
    assert [t.reason for t in told] == [Reason.DISRUPTED] * 2, told
    assert told[1].message.startswith("stopped by SIGTERM at step ") and told[0].message.startswith("stopped with the other training processes")
    (folder,) = checkpoint_folders(store, TRAIN.prefix)
    saved = read_marker(store, folder)
    steps = STEPS // 2  # two processes: twice the examples per step
    assert saved is not None and all(f"at step {saved.step} of {steps}: saved its full state" in t.message for t in told)
    names = {key.removeprefix(f"{folder}/") for key in store.list(f"{folder}/")}
    step = f"global_step{saved.step}"
    assert {"rng_state_0.pth", "rng_state_1.pth", f"{step}/zero_pp_rank_0_mp_rank_00_optim_states.pt", f"{step}/zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= names

    nodes = [node(0, "second"), node(1, "second")]
    for n in nodes:
        assert n.wait(timeout=300) == 0, (tmp_path / "second-node-0" / "log").read_text()[-3000:]
    manifest = read_manifest(store, TRAIN.manifest_key)
    assert manifest.summary["resumedFromStep"] == saved.step and manifest.counts["steps"] == steps
    _published_only_the_final_model(store, manifest)
