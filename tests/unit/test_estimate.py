"""The cost estimate: a pure function of the spec, the data's size, the models' sizes and a
throughput table, corrected by what finished stages measured."""

import random

import pytest

from selftaught.api.load import load_run, parse_run
from selftaught.api.spec import GpuKind
from selftaught.method.sampling import Population, Schedule
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import Manifest
from selftaught.views.estimate import RATES, Executor, estimate, expected_sampling, gpu_kind, inputs_for, measure, size_from_name
from tests.conftest import REPO


def spec_of(**overrides):
    document = {
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "r"},
        "spec": {"models": {"seed": {"source": "meta-llama/Meta-Llama-3-70B-Instruct"}}, "data": {"instructions": {"source": "hf://datasets/x"}},
                 "storage": {"uri": "s3://b"}, "iterations": 2, **overrides},
    }  # fmt: skip
    return parse_run(document).spec


def test_every_gpu_kind_the_spec_accepts_has_a_throughput_row():
    assert set(RATES) == set(GpuKind.__args__)


def test_the_plan_says_where_its_rates_come_from_and_which_ones_the_spec_replaced():
    assert {kind: rates.source for kind, rates in RATES.items() if kind != "cpu"} == dict.fromkeys(set(RATES) - {"cpu"}, "datasheet-derived")
    assert RATES["cpu"].source.startswith("calibrated")
    for overrides, said in (({}, "(datasheet-derived)"), ({"throughput": {"trainTflops": 300}}, "(datasheet-derived; trainTflops from spec.estimate.throughput)")):
        spec = spec_of(estimate={"gpu": "H200", **overrides})
        line = estimate(spec, inputs_for(spec)).assumptions[0]
        assert line.startswith("GPU H200") and line.endswith(said)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("meta-llama/Meta-Llama-3-70B-Instruct", (70, 70)),
        ("meta-llama/Llama-3.1-8B-Instruct", (8, 8)),
        ("Qwen/Qwen2.5-0.5B-Instruct", (0.5, 0.5)),
        ("mistralai/Mixtral-8x22B-Instruct-v0.1", (140.8, 39.6)),
        ("Qwen/Qwen3-30B-A3B", (30, 3)),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", (0.135, 0.135)),
        (".selftaught/models/tiny-judge", None),
    ],
)
def test_a_models_size_is_read_from_its_name(name, size):
    assert size_from_name(name) == size


def test_the_adaptive_sampling_model_agrees_with_a_simulation_of_the_rounds():
    """E[samples] and the keep rate under Beta-distributed item accuracy, against drawing it."""
    rng, items, mean, samples = random.Random(0), 40_000, 0.6, 15
    schedule, drawn, kept = Schedule(samples), 0, 0
    for _ in range(items):
        p = rng.betavariate(mean * 2, (1 - mean) * 2)
        for size in schedule.failing_rounds(Population(mean, 2.0)):
            drawn += size
            if any(rng.random() < p for _ in range(size)):
                kept += 1
                break
    model = expected_sampling(schedule, mean)
    assert model.samples == pytest.approx(drawn / items, rel=0.03)
    assert model.keep_rate == pytest.approx(kept / items, rel=0.01)
    fixed = expected_sampling(Schedule(samples, adaptive=False), mean)
    assert fixed.samples == samples and fixed.keep_rate == model.keep_rate  # the same items are kept either way


def test_the_estimate_has_a_row_per_stage_and_adaptive_judging_costs_less_than_fixed_n():
    spec = spec_of(estimate={"instructions": 100_000}, select={"totalCap": 10_000})
    result = estimate(spec, inputs_for(spec))
    labels = [row.label for row in result.rows]
    assert labels == ["categorize", "select", "pairs", "evaluate-0", "judge-1", "train-1", "evaluate-1", "judge-2", "train-2", "evaluate-2"]
    assert all(row.gpu_hours > 0 for row in result.rows if row.label != "select")
    assert result.gpu_hours == pytest.approx(sum(row.gpu_hours for row in result.rows))
    adaptive = result.adaptive
    assert adaptive.samples_per_item < 15 and adaptive.tokens < adaptive.fixed_tokens and adaptive.gpu_hours < adaptive.fixed_gpu_hours
    # 10,000 selected pairs (capped), 10% held out, both orders, ~3 samples of 400 tokens each
    judge = next(row for row in result.rows if row.label == "judge-1")
    assert judge.generated_tokens == pytest.approx(9000 * 2 * adaptive.samples_per_item * 400)


def test_more_data_a_bigger_model_or_a_slower_gpu_cost_more():
    base = spec_of(estimate={"instructions": 100_000})
    hours = estimate(base, inputs_for(base)).gpu_hours
    for changed in (
        spec_of(estimate={"instructions": 200_000}),
        spec_of(estimate={"instructions": 100_000, "gpu": "A100"}),
        spec_of(estimate={"instructions": 100_000, "seedSize": {"total": 140}}),
        spec_of(estimate={"instructions": 100_000, "judgeAccuracy": 0.3}),
        spec_of(estimate={"instructions": 100_000, "throughput": {"decodeTflops": 10}}),
    ):
        assert estimate(changed, inputs_for(changed)).gpu_hours > hours


def test_without_an_instruction_count_there_is_no_estimate_and_it_says_what_to_set():
    spec = spec_of()
    result = estimate(spec, inputs_for(spec))
    assert "spec.estimate.instructions" in result.unknown and result.gpu_hours == 0 and result.hours == 0
    assert [row.label for row in result.rows][:3] == ["categorize", "select", "pairs"]  # how each stage runs, with no numbers
    counted = inputs_for(spec, instructions=5000)  # what selftaught plan counts in a local file
    assert estimate(spec, counted).gpu_hours > 0


def test_the_gpu_kind_comes_from_the_spec_the_node_selector_or_defaults_to_h100():
    assert gpu_kind(spec_of(estimate={"gpu": "A100"})) == ("A100", "spec.estimate.gpu")
    selector = {"generation": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"}}}
    assert gpu_kind(spec_of(scheduling=selector))[0] == "H200"
    assert gpu_kind(spec_of())[0] == "H100"
    assert gpu_kind(spec_of(), machine="cpu")[0] == "cpu"


def test_finished_stages_replace_assumptions_with_measurements_and_scale_what_is_left():
    spec = spec_of(estimate={"instructions": 100_000})
    before = estimate(spec, inputs_for(spec))
    predicted = {row.label: row for row in before.rows}
    manifests = {
        StageRef("categorize"): Manifest(stage="categorize", counts={"records": 50_000, "tokens": 1.5e6}, seconds=predicted["categorize"].hours * 3600 * 4),
        StageRef("select"): Manifest(stage="select", summary={"selected": 5000}, seconds=10),
        StageRef("pairs"): Manifest(stage="pairs", counts={"train": 4500, "heldout": 500}, seconds=1000),
        StageRef("judge", 1): Manifest(stage="judge", iteration=1, counts={"items": 9000, "samples": 45_000, "tokens": 9e6, "kept": 8000, "training_examples": 7900}, seconds=20_000),
    }  # fmt: skip
    after = estimate(spec, inputs_for(spec), measure(manifests))
    rows = {row.label: row for row in after.rows}
    assert [row.label for row in after.rows if row.measured] == ["categorize", "select", "pairs", "judge-1"]
    assert rows["categorize"].generated_tokens == 1.5e6
    assert rows["judge-1"].gpu_hours == pytest.approx(20_000 / 3600)  # its measured seconds, on one GPU per pod
    # judge-2 goes at judge-1's measured speed, on judge-1's measured samples per item
    assert rows["judge-2"].generated_tokens == pytest.approx(9000 * 5 * 200)
    assert rows["judge-2"].gpu_hours == pytest.approx(rows["judge-1"].gpu_hours, rel=0.01)
    assert after.remaining_gpu_hours == pytest.approx(sum(r.gpu_hours for r in after.rows if not r.measured))
    assert any("measured" in line for line in after.assumptions)


def test_a_local_cpu_run_loads_its_model_once_per_stage_and_holds_no_gpu():
    spec = spec_of(estimate={"instructions": 50}, generation={"shards": 4})
    local = Executor("local", 1, False, 0, 0)
    result = estimate(spec, inputs_for(spec, machine_gpu="cpu", executor=local))
    assert result.gpu_hours == 0 and result.hours > 0
    assert {row.processes for row in result.rows if row.kind == "generation"} == {"1 process"}


def test_the_paper_replication_estimate_is_the_one_in_docs_cost():
    run = load_run(REPO / "manifests/examples/paper-replication.yaml")
    result = estimate(run.spec, inputs_for(run.spec))
    assert result.gpu == "H100" and 500 < result.gpu_hours < 1200
    assert f"{result.gpu_hours:,.0f} GPU-hours" in (REPO / "docs/cost.md").read_text()


def test_unset_gradient_checkpointing_is_priced_with_the_train_stages_own_memory_rule():
    """A 70B seed on 8 H100s with ZeRO-3 needs it (activations of 4k tokens x 80 layers), a 1B
    seed on an H200 does not: the estimate adds the recomputation only where the stage will."""

    def train_hours(seed: str, gpu: str, checkpointing):
        train = {"gpusPerNode": 8} if checkpointing is None else {"gpusPerNode": 8, "gradientCheckpointing": checkpointing}
        spec = spec_of(models={"seed": {"source": seed}}, estimate={"instructions": 20_000, "gpu": gpu}, train=train)
        result = estimate(spec, inputs_for(spec))
        return next(row.gpu_hours for row in result.rows if row.label == "train-1")

    big, small = "meta-llama/Meta-Llama-3-70B-Instruct", "TinyLlama/TinyLlama-1.1B-Chat"
    assert train_hours(big, "H100", None) == pytest.approx(train_hours(big, "H100", True))
    assert train_hours(small, "H200", None) == pytest.approx(train_hours(small, "H200", False))
    assert train_hours(small, "H200", True) > train_hours(small, "H200", False)


def test_a_grpo_run_prices_its_rollouts_like_a_judge_stages_generation_and_has_no_judge_row():
    spec = spec_of(estimate={"instructions": 100_000}, select={"totalCap": 10_000}, train={"method": "grpo", "grpo": {"groupSize": 8}})
    result = estimate(spec, inputs_for(spec))
    assert [row.label for row in result.rows] == ["categorize", "select", "pairs", "evaluate-0", "train-1", "evaluate-1", "train-2", "evaluate-2"]
    assert result.adaptive is None
    train = next(row for row in result.rows if row.label == "train-1")
    # 9,000 training pairs in both orders, 8 judgments of ~400 tokens each
    assert train.generated_tokens == pytest.approx(9000 * 2 * 8 * 400) and train.prompt_tokens > 0
    bigger = spec_of(estimate={"instructions": 100_000}, select={"totalCap": 10_000}, train={"method": "grpo", "grpo": {"groupSize": 16}})
    assert estimate(bigger, inputs_for(bigger)).gpu_hours > result.gpu_hours
    assert any("GRPO: 8 judgments sampled per prompt" in line for line in result.assumptions)


def test_majority_votes_that_stop_once_decided_are_priced_with_the_stages_rounds_and_corrected_by_a_finished_evaluation():
    def run(**evaluate):
        spec = spec_of(estimate={"instructions": 100_000, "evaluationExamples": 3000}, data={"instructions": {"source": "hf://datasets/x"},
                       "evaluation": {"source": "s3://b/rb.jsonl"}}, evaluate={"majorityVote": 32, "positionConsistency": False, **evaluate})  # fmt: skip
        return spec, estimate(spec, inputs_for(spec))

    _, exact = run()
    _, off = run(earlyStop="off")
    _, approximate = run(earlyStop="approximate")
    votes = exact.votes
    assert 17 < votes.samples_per_example < 24 and votes.k == 32  # the closed form at accuracy 0.7, spread 2
    assert votes.tokens < votes.all_k_tokens == off.votes.all_k_tokens == off.votes.tokens
    assert votes.gpu_hours < votes.all_k_gpu_hours == pytest.approx(off.votes.gpu_hours)
    assert approximate.votes.gpu_hours < votes.gpu_hours
    evaluation = next(row for row in exact.rows if row.label == "evaluate-0")
    assert evaluation.generated_tokens == pytest.approx(3000 * (1 + votes.samples_per_example) * 400)
    assert exact.gpu_hours == pytest.approx(off.gpu_hours - (off.votes.gpu_hours - votes.gpu_hours))
    # a finished evaluation's votes replace the assumption for those still to run
    spec, _ = run()
    counts = {"examples": 3000, "tokens": 3000 * 30 * 400, "vote_samples": 3000 * 29, "vote_rounds": 3000 * 4, "vote_all": 3000 * 32}
    measured = measure({StageRef("evaluate", 0): Manifest(stage="evaluate", counts=counts, seconds=3600.0)})
    after = estimate(spec, inputs_for(spec), measured)
    assert after.votes.samples_per_example == 29
    assert next(row for row in after.rows if row.label == "evaluate-1").generated_tokens == pytest.approx(3000 * 30 * 400)
    assert any("29.0 samples per example (measured" in line for line in after.assumptions)
    _, none = run(majorityVote=0)
    assert none.votes is None


def _train_row(result):
    return next(row for row in result.rows if row.label == "train-1")


def test_the_plan_says_a_70b_lora_fits_one_node_of_eight_80gb_gpus_where_full_fine_tuning_does_not():
    from selftaught.views.plan_text import format_plan

    one_node = {"nodes": 1, "gpusPerNode": 8, "zeroStage": 3}
    lora = spec_of(estimate={"instructions": 20_000}, train={**one_node, "lora": {}})
    full = spec_of(estimate={"instructions": 20_000}, train=one_node)
    planned, refused = estimate(lora, inputs_for(lora)), estimate(full, inputs_for(full))
    memory = planned.train_memory
    assert memory.does_not_fit is None and (memory.gpu_gib, memory.gpus, memory.checkpointing) == (80, 8, True)
    assert 17.5 < memory.gib_per_gpu < 0.85 * 80 and round(memory.trainable * 1000) == 207  # the frozen base is 140 GB over 8 GPUs
    line = memory.line()
    assert line == (
        f"train: ~{memory.gib_per_gpu:.1f} of 80 GiB per GPU over 8 GPUs (LoRA rank 16, 207M trainable, on the frozen 70B seed in bf16 "
        "sharded by ZeRO-3; gradient checkpointing on): fits"
    )
    assert line in format_plan("r", planned, "on a cluster")
    assert refused.train_memory.does_not_fit.startswith("training needs ~")
    assert "set train.lora (adapters on the frozen seed" in format_plan("r", refused, "on a cluster")
    # no gradient of the frozen weights (4 x parameters a token, not 6), and one pass over them, not three
    assert _train_row(planned).gpu_hours < 0.75 * _train_row(refused).gpu_hours


def test_the_one_gpu_lora_example_fits_an_8b_qlora_on_one_24gb_gpu():
    from selftaught.local.placement import Machine, check_fit, generation_placement, training_placement

    spec = load_run(REPO / "examples/one-gpu-lora.yaml").spec
    assert spec.train.lora is not None and spec.train.lora.quantize == "nf4" and spec.train.lora.learning_rate_for(spec.train.learning_rate) == pytest.approx(1e-4)
    one = ("0",)
    assert generation_placement(spec.generation, one).at_once == 1 and training_placement(spec.train, one).nproc == 1
    check_fit("the seed", 16_060_000_000, spec.generation, Machine(one, (int(22.5 * 2**30),)))  # Llama 3.1 8B in bf16: served on the one GPU
    result = estimate(spec, inputs_for(spec))
    memory = result.train_memory
    assert result.gpu == "L4" and memory.does_not_fit is None and memory.gpus == 1 and memory.gib_per_gpu < 0.85 * 22.5
    assert "on the frozen 8B seed in 4-bit (QLoRA)" in memory.line()
    in_bf16 = spec_of(models=spec.models.model_dump(by_alias=True), estimate={"instructions": 20_000, "gpu": "L4"}, train={"gpusPerNode": 1})
    assert "set train.lora (" in estimate(in_bf16, inputs_for(in_bf16)).train_memory.does_not_fit


def test_a_plan_for_the_cpu_refuses_qlora_by_its_field():
    spec = spec_of(estimate={"instructions": 1000}, train={"lora": {"quantize": "nf4"}})
    local = Executor("local", 1, False, 0, 0)
    memory = estimate(spec, inputs_for(spec, machine_gpu="cpu", executor=local)).train_memory
    assert memory.line().startswith("train: does not fit: train.lora.quantize: nf4 (QLoRA) needs bitsandbytes on a CUDA GPU")
    plain = spec_of(estimate={"instructions": 1000}, train={"lora": {}})
    assert estimate(plain, inputs_for(plain, machine_gpu="cpu", executor=local)).train_memory is None  # memory is not the limit on CPU


def test_docs_cost_throughput_table_says_each_rows_source_as_the_code_does():
    table = [line.split(" | ") for line in (REPO / "docs/cost.md").read_text().splitlines() if line.startswith("| ") and line.endswith(" |")]
    sources = {cells[0][2:]: cells[-1][:-2] for cells in table if cells[0][2:] in RATES and len(cells) == 8}
    assert sources == {kind: rates.source for kind, rates in RATES.items()}
