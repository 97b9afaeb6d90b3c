"""LoRA judges on the real engines and the tiny model: the train stage stores an adapter that names
its seed (a small fraction of the model), evaluation loads it on the seed through vLLM's LoRA
support and gives the verdicts of the merged model `selftaught export` writes, an adapter can be
trained on (`initFrom: previous`) by SFT, DPO and GRPO, and QLoRA on a CPU is refused by its field.
A LoRA quickstart runs end to end for each method, and is served, side by side (slow)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from selftaught.api.load import parse_run
from selftaught.api.spec import ModelSource, Train
from selftaught.engines.adapters import read_adapter
from selftaught.engines.models import resolve_checkpoint
from selftaught.errors import DoesNotFit
from selftaught.export import export_checkpoint
from selftaught.local.runner import _run_stage
from selftaught.method.prompts import judge_messages
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.scan import located
from selftaught.pipeline.served import ServedModel
from selftaught.pipeline.table import StageRef
from selftaught.stage_process import run_stage
from selftaught.store.layout import PAIRS_HELDOUT, metrics_output, sft_output
from selftaught.store.manifest import published_key, read_manifest
from tests.conftest import QUICK_SPEC, REPO, _merge
from tests.stores import publish

TRAIN, EVALUATE = StageRef("train", 1), StageRef("evaluate", 1)
#: questions with a right and a wrong answer: the held-out pairs the judge is evaluated on
QUESTIONS = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {a + b + 3}.") for a, b in ((2, 3), (7, 5), (12, 9), (4, 40))]


def lora_run(tiny_model: Path, store: Path, name: str = "lora", **train):
    spec = _merge(
        {**QUICK_SPEC, "models": {"seed": {"source": str(tiny_model)}}, "data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}},
         "storage": {"uri": str(store)}, "iterations": 1},
        {"train": {"lora": {"rank": 4, "alpha": 8, "learningRate": 3e-2}, "epochs": 2, "microBatchSize": 2, **train}},
    )  # fmt: skip
    return parse_run({"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": name, "namespace": "tests"}, "spec": spec})


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A one-iteration LoRA run whose judge stage kept judgments that always name the first answer
    (the tiny seed tends to name the second) and whose pairs held some out; its train stage run as
    the local runner runs it: torchrun, two CPU processes, DeepSpeed ZeRO-3 (the frozen base sharded
    as a 70B's is on a node, the adapters gathered to save them)."""
    tmp = tmp_path_factory.mktemp("lora")
    run = lora_run(tiny_model, tmp / "store", zeroStage=3, gpusPerNode=2)
    store = open_run_store(run)
    accept(store, run)
    judgments = [
        {"id": f"{i}:AB", "messages": judge_messages(question, good, bad), "completion": "Assistant A is right. [[A]]", "winner": "A"}
        for i, (question, good, bad) in enumerate(QUESTIONS * 3)
    ]
    publish(store, sft_output(1), judgments)
    publish(store, PAIRS_HELDOUT, [{"id": f"h{i}", "prompt": q, "chosen": good, "rejected": bad, "subset": "math"} for i, (q, good, bad) in enumerate(QUESTIONS)])
    (tmp / "scratch").mkdir()
    _run_stage(run, TRAIN, tmp, tmp / "scratch")
    return run, store, read_manifest(store, TRAIN.manifest_key), tmp


def test_a_lora_train_stage_stores_only_its_adapter_naming_the_seed_a_small_fraction_of_the_model(trained, tiny_model):
    run, store, manifest, _ = trained
    checkpoint = Path(located(store.url(), manifest.summary["checkpoint"]))  # a manifest holds it store-relative
    names = {key.rsplit("/", 1)[1] for key in manifest.outputs}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names and "model.safetensors" not in names and "ref" not in {p.name for p in checkpoint.iterdir()}
    adapter_bytes = (checkpoint / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 0.05 * (tiny_model / "model.safetensors").stat().st_size  # rank 4 on a 0.7M-parameter model
    assert read_adapter(checkpoint).base == ModelSource(source=str(tiny_model)) and read_adapter(checkpoint).rank == 4  # the seed as the spec names it
    assert manifest.summary["adapterOf"] == str(tiny_model) and manifest.counts["trainable_parameters"] == 4 * 2 * (2 * 256 + 2 * 256 + 3 * 384)
    local = resolve_checkpoint(ModelSource(source=str(checkpoint)), run.spec.storage)
    assert (local.base, local.adapter) == (tiny_model, checkpoint)


def test_evaluation_goes_through_vllms_lora_path_and_the_exported_merged_model_gives_the_same_verdicts(trained, tiny_model):
    run, store, _, tmp = trained
    run_stage(run, EVALUATE)  # vLLM: the seed loaded once, the adapter per request (an adapter folder has no model to load)
    adapter = json.loads(store.read_text(published_key(store, *metrics_output(1))))

    merged = export_checkpoint(ServedModel(name="lora", iteration=1, model=ModelSource(source=located(store.url(), read_manifest(store, TRAIN.manifest_key).summary["checkpoint"])), storage=run.spec.storage), tmp / "merged", say=lambda _: None)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    from safetensors.torch import load_file

    seed_weights, merged_weights = load_file(tiny_model / "model.safetensors"), load_file(merged / "model.safetensors")
    assert any((seed_weights[name] - merged_weights[name]).abs().max() > 0 for name in seed_weights)  # the adapter moved the weights
    again = run.model_copy(update={"spec": run.spec.model_copy(update={"models": run.spec.models.model_copy(update={"seed": ModelSource(source=str(merged))})})})
    other = again.model_copy(update={"spec": again.spec.model_copy(update={"storage": again.spec.storage.model_copy(update={"uri": str(tmp / "merged-store")})})})
    publish(open_run_store(other), PAIRS_HELDOUT, [{"id": f"h{i}", "prompt": q, "chosen": good, "rejected": bad, "subset": "math"} for i, (q, good, bad) in enumerate(QUESTIONS)])
    run_stage(other, StageRef("evaluate", 0))  # the merged model as a seed: a full model, no adapter
    full = json.loads(open_run_store(other).read_text(published_key(open_run_store(other), *metrics_output(0))))
    assert adapter["examples"] == full["examples"] == len(QUESTIONS)
    assert adapter["outcomes"] == full["outcomes"]  # the same verdict on every held-out pair, in each order
    run_stage(run, StageRef("evaluate", 0))  # the seed alone: what the adapter changed
    assert _outputs(store, 1) == _outputs(open_run_store(other), 0) != _outputs(store, 0)


def _outputs(store, iteration: int) -> list[str]:
    """The judge's raw outputs of an evaluate stage, in order of example and order."""
    records = [json.loads(line) for key in sorted(store.list(f"iter-{iteration:03d}/evaluate/")) if key.endswith(".jsonl") for line in store.read_text(key).splitlines()]
    return [json.dumps(record.get("output") or record.get("outputs"), sort_keys=True) for record in sorted(records, key=lambda r: r["id"])]


#: LoRA by SFT, then DPO and GRPO going on training that adapter (`initFrom: previous`), all in one
#: process; each saved adapter names the seed. A learning rate of ~0 shows what a continued adapter
#: starts from: the previous one, not a fresh one.
CONTINUE_SCRIPT = """
import json, sys
from pathlib import Path
from safetensors.torch import load_file
from selftaught.api.spec import ModelSource, Train
from selftaught.engines import training
from selftaught.engines.adapters import read_adapter
from selftaught.method.rewards import TERMS, grpo_prompts, rewards, rows_per_pair

model, out = Path(sys.argv[1]), Path(sys.argv[2])
seed = ModelSource(source="org/the-seed", revision="abc")  # what the spec calls it, not where it was loaded from
lora = {"rank": 4, "alpha": 8}
common = dict(model_path=model, base=seed)
sft = [{"messages": [{"role": "user", "content": f"Which is better, pair {i}?"}], "completion": "The first. [[A]]"} for i in range(4)]
train = Train(zeroStage=2, warmupSteps=0, epochs=1, microBatchSize=2, gradientAccumulation=1, bf16=False, lora={**lora, "learningRate": 3e-2})
first = training.train_sft(records=sft, train=train, output_dir=out / "sft", work_dir=out / "w1", **common)
dpo = [{"messages": r["messages"], "chosen": "The first. [[A]]", "rejected": "The second. [[B]]"} for r in sft]
train = Train(method="dpo", zeroStage=2, warmupSteps=0, epochs=1, microBatchSize=2, gradientAccumulation=1, bf16=False, lora={**lora, "learningRate": 1e-12})
second = training.train_dpo(records=dpo, train=train, output_dir=out / "dpo", work_dir=out / "w2", adapter=out / "sft", **common)
pairs = [{"id": f"p{i}", "instruction": f"What is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}."} for i in range(2)]
rows = grpo_prompts(pairs, format="pairwise", orders="both", seed=1, iteration=1)
train = Train(method="grpo", zeroStage=2, warmupSteps=0, microBatchSize=4, gradientAccumulation=1, bf16=False, grpo={"groupSize": 4, "steps": 2}, lora={**lora, "learningRate": 1e-12})
scorer = lambda batch, texts: rewards([r["group"] for r in batch], [r["role"] for r in batch], texts)
third = training.train_grpo(rows=rows, scorer=scorer, terms=TERMS, weights={name: 1.0 for name in TERMS}, rows_per_pair=rows_per_pair("pairwise", "both"),
                            max_completion_tokens=8, train=train, output_dir=out / "grpo", work_dir=out / "w3", seed=3, adapter=out / "dpo", **common)
weights = {name: load_file(out / name / "adapter_model.safetensors") for name in ("sft", "dpo", "grpo")}
moved = lambda a, b: max((weights[a][k] - weights[b][k]).abs().max().item() for k in weights[a])
print("RESULT " + json.dumps({
    "bases": [[read_adapter(out / name).base.source, read_adapter(out / name).base.revision] for name in ("sft", "dpo", "grpo")],
    "folders": sorted(p.name for p in (out / "dpo").iterdir()), "trainable": [first["trainable_parameters"], second["trainable_parameters"], third["trainable_parameters"]],
    "dpo_from_sft": moved("dpo", "sft"), "grpo_from_dpo": moved("grpo", "dpo"), "sft_lora_b": max(v.abs().max().item() for k, v in weights["sft"].items() if "lora_B" in k),
}))
"""


def _trainer_env() -> dict[str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}  # fmt: skip


def test_sft_dpo_and_grpo_train_a_fresh_adapter_or_go_on_training_the_previous_one(tiny_model, tmp_path):
    done = subprocess.run([sys.executable, "-c", CONTINUE_SCRIPT, str(tiny_model), str(tmp_path)], capture_output=True, text=True, env=_trainer_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["bases"] == [["org/the-seed", "abc"]] * 3
    assert result["folders"] == sorted(["README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "training_args.bin"])
    assert result["trainable"] == [4 * 2 * (2 * 256 + 2 * 256 + 3 * 384)] * 3  # the adapters only; DPO's and GRPO's frozen reference copy is not trained
    assert result["sft_lora_b"] > 0  # a fresh adapter starts with B = 0 (the seed itself) and learned
    assert result["dpo_from_sft"] < 1e-6 and result["grpo_from_dpo"] < 1e-6  # continued: the previous adapter, moved by ~0


def test_qlora_on_a_machine_without_a_gpu_is_refused_naming_the_field(tiny_model, tmp_path):
    records = [{"messages": [{"role": "user", "content": "Which is better?"}], "completion": "The first. [[A]]"}]
    train = Train(zeroStage=2, bf16=False, lora={"quantize": "nf4"})
    with pytest.raises(DoesNotFit, match=r"^train\.lora\.quantize: nf4 \(QLoRA\) .*needs a CUDA GPU, and this machine has none: set train\.lora\.quantize: none"):
        from selftaught.engines.training import train_sft

        train_sft(model_path=tiny_model, records=records, train=train, output_dir=tmp_path / "out", work_dir=tmp_path / "work")


# -- the LoRA quickstart end to end, per method, then served and exported (slow) -------------------


def _quickstart(tmp_path: Path, tiny_model: Path, name: str, **train) -> tuple[str, Path]:
    """`selftaught run` of examples/local-quickstart-lora.yaml, with `train` merged into its spec,
    on the tiny model where `make quickstart` puts it."""
    import yaml

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(tiny_model, tmp_path / ".selftaught/models/tiny-judge")
    selftaught = [sys.executable, "-m", "selftaught"]
    document = yaml.safe_load((tmp_path / "examples/local-quickstart-lora.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"]["train"] = _merge(document["spec"]["train"], train)
    (tmp_path / f"examples/{name}.yaml").write_text(yaml.safe_dump(document))  # its paths are read from examples/
    done = subprocess.run([*selftaught, "run", f"examples/{name}.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, tmp_path / ".selftaught/runs/local" / name


def _adapters_of(run: Path, seed: Path) -> list[Path]:
    checkpoints = []
    for iteration in (1, 2):
        summary = json.loads((run / f"iter-00{iteration}/train/_manifest.json").read_text())["summary"]
        checkpoint = Path(located(str(run), summary["checkpoint"]))
        assert summary["adapterOf"] == str(seed) and read_adapter(checkpoint).base.source == str(seed)
        assert (checkpoint / "adapter_model.safetensors").stat().st_size < 0.1 * (seed / "model.safetensors").stat().st_size
        assert not (checkpoint / "model.safetensors").exists()
        checkpoints.append(checkpoint)
    return checkpoints


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("method", "train"),
    [
        # DPO as the DPO quickstart runs it (with the NLL term), at a tenth of the LoRA quickstart's rate: at 1e-2 the
        # tiny judge's judgments stop ending and judge-2 keeps none (a recipe's limit, not the plumbing's)
        ("dpo", {"method": "dpo", "dpo": {"nllWeight": 0.2}, "initFrom": "previous", "lora": {"learningRate": 1e-3}}),
        ("grpo", {"method": "grpo", "grpo": {"groupSize": 4, "steps": 4}}),
    ],
)
def test_a_lora_quickstart_trains_and_evaluates_adapters_by_dpo_and_grpo(tmp_path, tiny_model, method, train):
    out, run = _quickstart(tmp_path, tiny_model, f"lora-{method}", **train)
    _adapters_of(run, tmp_path / ".selftaught/models/tiny-judge")
    assert len(re.findall(r"evaluate-\d\s+✓ ", out)) == 3  # the seed, and each iteration's adapter on it through vLLM


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_lora_quickstart_runs_end_to_end_and_is_served_side_by_side_and_exported(tmp_path, tiny_model, capsys):
    from selftaught.cli import main

    out, run = _quickstart(tmp_path, tiny_model, "lora-sft")
    seed = tmp_path / ".selftaught/models/tiny-judge"
    _adapters_of(run, seed)
    assert len(re.findall(r"evaluate-\d\s+✓ ", out)) == 3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "OMP_NUM_THREADS": "1", "SELFTAUGHT_CACHE": str(tmp_path / "cache")}
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "selftaught", "serve", "examples/lora-sft.yaml", "--iteration", "2", "--iteration", "1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "sum", "instruction": "What is 12 times 12?", "response_a": "144.", "response_b": "124."}) + "\n")
    try:
        from tests.integration.test_serving import wait_until_healthy

        wait_until_healthy(url, server, log)
        with urllib.request.urlopen(f"{url}/v1/models") as answer:
            listed = {model["id"]: model.get("parent") for model in json.load(answer)["data"]}
        for model in ("lora-sft", "lora-sft-iteration-1"):
            with pytest.raises(SystemExit) as ended:
                main(["judge", "--endpoint", f"{url}/v1", "--model", model, "--max-tokens", "24", str(pairs)])
            assert ended.value.code == 0
        judged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert listed == {"lora-sft-iteration-0": None, "lora-sft": "lora-sft-iteration-0", "lora-sft-iteration-2": "lora-sft-iteration-0", "lora-sft-iteration-1": "lora-sft-iteration-0"}
    assert len(judged) == 2 and all(len(result["verdicts"]) == 2 for result in judged)
    said = log.read_text()
    assert "serving iteration 2 of run lora-sft" in said and "LoRA adapters: lora-sft, lora-sft-iteration-2, lora-sft-iteration-1" in said

    exported = subprocess.run([sys.executable, "-m", "selftaught", "export", "examples/lora-sft.yaml", "merged", "--iteration", "2"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "merging iteration 2 of run lora-sft: the LoRA adapter" in exported.stdout and (tmp_path / "merged/model.safetensors").is_file()
    assert (tmp_path / "merged/config.json").is_file() and (tmp_path / "merged/tokenizer.json").is_file()
