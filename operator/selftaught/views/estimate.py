"""What a run will cost, before it starts and as it goes: generated tokens, GPU-hours and time
per stage, from the spec, the data's size, the models' sizes and a throughput table per GPU kind.

A pure function, so `selftaught plan`, `selftaught run` and the operator print the same numbers.
Before launch every number comes from the spec's `estimate` assumptions (docs/cost.md); as stages
finish, their manifests replace assumptions with measurements: the counts that flow on (instructions,
selected, pairs, judge samples per item, kept), and for each stage name the measured seconds against
the predicted ones, a factor that corrects the stages of that name still to run.

Time model. Generation: a prompt token costs 2 x active parameters at the kind's prefill rate, a
generated token 2 x active parameters at its decode rate; every process that loads the model pays
the start time and the weights (2 bytes a parameter) at the load rate. Training: 6 x parameters per
token (x 4/3 with gradient checkpointing) at the training rate, plus a start and three passes over
the weights (load, gather, upload). LoRA (`train.lora`): 4 x parameters per token (the frozen
weights get no gradient of their own: the forward pass and the backward pass's gradient of the
activations), and one pass over the weights (the load: the adapters it gathers and uploads are
megabytes). Whether training fits its GPUs at all is the train stage's own memory rule
(`engines/memory.py`), on a Llama-family shape of the seed's size (`TrainingMemory`).

What is particular to a stage (its tokens, its seconds, what its manifest measures) is its row of
`COSTS`, one per stage of the stage table; the rest is the same for every stage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from selftaught.api.benchmarks import BENCHMARKS
from selftaught.api.spec import ModelSource, SelfTaughtRunSpec, Throughput
from selftaught.engines.memory import GIB, VLLM_GPU_SHARE, LoraShape, choose_checkpointing, does_not_fit, needed, shape_for_size
from selftaught.engines.memory import estimate as memory_estimate
from selftaught.method.prompts import (
    CATEGORIZE_TEMPLATE,
    JUDGE_SYSTEM_PROMPT,
    JUDGE_USER_TEMPLATE,
    MODIFIED_INSTRUCTION_TEMPLATE,
    RATING_TEMPLATE,
)
from selftaught.method.sampling import Population, Schedule
from selftaught.method.voting import VoteCost, expected_vote
from selftaught.pipeline.planner import evaluation_enabled, stage_graph
from selftaught.pipeline.table import STAGE_NAMES, StageRef
from selftaught.store.manifest import Manifest


@dataclass(frozen=True)
class Rates:
    """One GPU kind's effective per-GPU rates (`spec.estimate.throughput` overrides any)."""

    decode_tflops: float
    prefill_tflops: float
    train_tflops: float
    load_gb_per_second: float
    start_seconds: float
    memory_gib: float = 80.0  # per GPU: whether `train.gradientCheckpointing: auto` turns it on
    #: where the rates come from: datasheet-derived, or what measured them ("measured on NVIDIA H100 80GB
    #: HBM3, 2027-01-05, benchmarks/gpu_check.py"), which `selftaught plan` prints beside them
    source: str = "datasheet-derived"


#: Defaults, per GPU, for vLLM 0.32 and DeepSpeed ZeRO-3 in bf16 (docs/cost.md explains them): decode
#: is memory-bound (H100: ~500 tokens/s per GPU for a 70B model at large batch), prefill and
#: training compute-bound (~50% and ~40% of the dense bf16 peak): datasheet-derived until a GPU check
#: (benchmarks/gpu_check.py) measures a kind. `cpu` is vLLM's CPU build on a small model, calibrated
#: on the quickstart (2 cores).
RATES: dict[str, Rates] = {
    "H100": Rates(decode_tflops=70, prefill_tflops=500, train_tflops=400, load_gb_per_second=1.0, start_seconds=60, memory_gib=80),
    "H200": Rates(decode_tflops=100, prefill_tflops=500, train_tflops=400, load_gb_per_second=1.0, start_seconds=60, memory_gib=141),
    "B200": Rates(decode_tflops=140, prefill_tflops=1000, train_tflops=800, load_gb_per_second=1.5, start_seconds=60, memory_gib=180),
    "A100": Rates(decode_tflops=30, prefill_tflops=160, train_tflops=125, load_gb_per_second=1.0, start_seconds=60, memory_gib=80),
    "L40S": Rates(decode_tflops=20, prefill_tflops=180, train_tflops=130, load_gb_per_second=1.0, start_seconds=60, memory_gib=48),
    # after L40S: a device named "NVIDIA L40S" is an L40S (kinds are matched by name, in this order)
    "L4": Rates(decode_tflops=6, prefill_tflops=60, train_tflops=48, load_gb_per_second=1.0, start_seconds=60, memory_gib=22.5),
    "cpu": Rates(
        decode_tflops=0.002, prefill_tflops=0.02, train_tflops=0.02, load_gb_per_second=0.5, start_seconds=6,
        source="calibrated on the quickstart, 2 CPU cores",
    ),  # fmt: skip
}
#: Seconds a training stage spends launching before it loads weights (torchrun, DeepSpeed's init).
TRAIN_LAUNCH_SECONDS = 15.0
#: Generated tokens of a categorization (category, complexity, length), at most categorize.maxTokens.
CATEGORY_TOKENS = 30
#: Chat-template tokens around every conversation; prompt text is ~4 characters a token.
TEMPLATE_TOKENS, CHARS_PER_TOKEN = 20, 4
#: Spread of per-item judge accuracy around its mean (Beta concentration, as benchmarks/sampling.py).
CONCENTRATION = 2.0
#: Seconds select spends per instruction (a CPU stream), and to start.
SELECT_SECONDS_PER_RECORD, SELECT_START_SECONDS = 2e-5, 5.0


@dataclass(frozen=True)
class Size:
    """A model's parameters, in billions, and how we know."""

    total: float
    active: float
    known_from: str


@dataclass(frozen=True)
class Count:
    value: int | None
    known_from: str


@dataclass(frozen=True)
class Executor:
    """How stages run: how many generation processes at once, whether each shard loads its model
    (a pod or process per shard) or one process runs every shard, and the training GPUs."""

    name: Literal["cluster", "local"]
    generation_at_once: int
    load_per_shard: bool
    gpus_per_generation: int
    train_gpus: int
    train_nodes: int = 1


def cluster_executor(spec: SelfTaughtRunSpec) -> Executor:
    generation = spec.generation
    return Executor(
        "cluster", min(generation.parallelism, generation.shards), True, generation.tensor_parallel,
        spec.train.nodes * spec.train.gpus_per_node, spec.train.nodes,
    )  # fmt: skip


@dataclass(frozen=True)
class Inputs:
    """What the estimate knows besides the spec: data counts, model sizes, the GPU kind and the
    executor, each with where it came from."""

    instructions: Count
    evaluation_examples: Count
    seed: Size
    generator: Size
    gpu: str
    gpu_from: str
    executor: Executor
    #: what the contamination guard found, where it could look before launch (`views/plan_text.py`)
    contamination: str | None = None


@dataclass
class StageEstimate:
    label: str
    kind: str
    shards: int
    processes: str  #: how it runs, e.g. "16 pods x 8 GPUs, 4 at once"
    gpus: int  #: GPUs the stage holds while it runs
    prompt_tokens: float = 0.0
    generated_tokens: float = 0.0
    gpu_hours: float = 0.0
    hours: float = 0.0
    measured: bool = False
    #: linked from an earlier run with the same stage key (`spec.reuse`): it costs nothing here, and
    #: `saved_gpu_hours`/`saved_hours` are what running it would have cost
    reused: bool = False
    saved_gpu_hours: float = 0.0
    saved_hours: float = 0.0


@dataclass
class Adaptive:
    """Adaptive judging against always sampling `samples`, over all judge stages."""

    samples: int
    samples_per_item: float
    keep_rate: float
    tokens: float
    fixed_tokens: float
    gpu_hours: float
    fixed_gpu_hours: float


@dataclass
class Votes:
    """Majority votes that stop once decided (`evaluate.earlyStop`) against drawing all k, over
    all evaluate stages."""

    k: int
    early_stop: str
    samples_per_example: float
    tokens: float
    all_k_tokens: float
    gpu_hours: float
    all_k_gpu_hours: float


@dataclass(frozen=True)
class TrainingMemory:
    """What one training process needs against its GPU's memory: the train stage's own rule
    (`engines/memory.py`) on a Llama-family shape of the seed's size, at the least the settings
    allow (gradient checkpointing unless it is set off)."""

    gib_per_gpu: float
    gpu_gib: float
    gpus: int
    checkpointing: bool  #: what `train.gradientCheckpointing` (unset: the memory rule) chooses
    trainable: float  #: billions of parameters the optimizer updates
    what: str  #: what trains on what, e.g. "LoRA rank 16 (207M trainable) on the frozen 70B seed in bf16"
    does_not_fit: str | None = None  #: the sentence the train stage refuses with, naming the settings to change

    def line(self) -> str:
        if self.does_not_fit:
            return f"train: does not fit: {self.does_not_fit}"
        where = f"over {self.gpus} GPUs" if self.gpus > 1 else "on one GPU"
        return (
            f"train: ~{self.gib_per_gpu:.1f} of {self.gpu_gib:g} GiB per GPU {where} ({self.what}; gradient checkpointing "
            f"{'on' if self.checkpointing else 'off'}): fits"
        )


@dataclass
class Estimate:
    gpu: str
    rows: list[StageEstimate] = field(default_factory=list)
    adaptive: Adaptive | None = None
    votes: Votes | None = None
    assumptions: list[str] = field(default_factory=list)
    #: why there is no estimate (no instruction count); the rows then say how each stage runs, with no numbers
    unknown: str | None = None
    #: the contamination guard's line (`Inputs.contamination`), shown with the plan
    contamination: str | None = None
    #: whether training fits its GPUs (None on CPU, where memory is not the limit)
    train_memory: TrainingMemory | None = None

    @property
    def gpu_hours(self) -> float:
        return sum(row.gpu_hours for row in self.rows)

    @property
    def hours(self) -> float:
        return sum(row.hours for row in self.rows)

    @property
    def generated_tokens(self) -> float:
        return sum(row.generated_tokens for row in self.rows)

    @property
    def saved_gpu_hours(self) -> float:
        """What the stages reused from earlier runs would have cost (`with_reuse`)."""
        return sum(row.saved_gpu_hours for row in self.rows)

    @property
    def remaining_gpu_hours(self) -> float:
        return sum(row.gpu_hours for row in self.rows if not row.measured)

    @property
    def remaining_hours(self) -> float:
        return sum(row.hours for row in self.rows if not row.measured)

    @property
    def measured_stages(self) -> int:
        return sum(row.measured for row in self.rows)


# -- the inputs ------------------------------------------------------------------------------------


def size_from_name(source: str) -> tuple[float, float] | None:
    """(total, active) billions from a model's name: `Meta-Llama-3-70B` -> 70; `Mixtral-8x22B`
    -> 141 total, 39 active (experts share attention: ~0.8 x 8 x 22, two experts of ~0.9 x 22 per
    token); `Qwen3-30B-A3B` -> 30 total, 3 active."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    moe = re.search(r"(\d+)x(\d+(?:\.\d+)?)[bB]\b", name)
    if moe:
        experts, each = int(moe.group(1)), float(moe.group(2))
        return round(0.8 * experts * each, 1), round(1.8 * each, 1)
    active = re.search(r"(\d+(?:\.\d+)?)[bB]-[aA](\d+(?:\.\d+)?)[bB]\b", name)
    if active:
        return float(active.group(1)), float(active.group(2))
    dense = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[bB]\b", name)
    if dense:
        return float(dense.group(1)), float(dense.group(1))
    millions = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[mM]\b", name)
    if millions:
        return float(millions.group(1)) / 1000, float(millions.group(1)) / 1000
    return None


def model_size(model: ModelSource, given: tuple[float, float] | None, override, what: str) -> Size:
    """The size the spec gives (`override`), else `given` (read from the checkpoint), else from
    the model's name, else 8B."""
    if override is not None:
        return Size(override.total, override.active or override.total, f"spec.estimate.{what}Size")
    if given is not None:
        return Size(given[0], given[1], "its checkpoint's safetensors headers")
    guessed = size_from_name(model.source)
    if guessed is not None:
        return Size(guessed[0], guessed[1], "its name")
    return Size(8.0, 8.0, f"assumed: its name has no size, set spec.estimate.{what}Size")


def gpu_kind(spec: SelfTaughtRunSpec, machine: str | None = None) -> tuple[str, str]:
    """(GPU kind, where from): spec.estimate.gpu, else `machine` (the local runner's), else the
    generation node selector's `nvidia.com/gpu.product`, else H100."""
    if spec.estimate.gpu:
        return spec.estimate.gpu, "spec.estimate.gpu"
    if machine:
        return machine, "this machine"
    product = (spec.scheduling.generation.node_selector or {}).get("nvidia.com/gpu.product", "")
    for kind in RATES:
        if kind != "cpu" and kind.lower() in product.lower():
            return kind, f"scheduling.generation.nodeSelector {product}"
    return "H100", "default; set spec.estimate.gpu"


def kind_of_device(name: str) -> str | None:
    """The GPU kind of a device name such as `NVIDIA H100 80GB HBM3`."""
    return next((kind for kind in RATES if kind != "cpu" and kind.lower() in name.lower()), None)


def rates_of(kind: str, override: Throughput | None) -> Rates:
    rates = RATES[kind]
    if override is None:
        return rates
    return replace(rates, **{name: value for name, value in override.model_dump().items() if value is not None})


def inputs_for(
    spec: SelfTaughtRunSpec,
    *,
    instructions: int | None = None,
    evaluation_examples: int | None = None,
    seed_size: tuple[float, float] | None = None,
    generator_size: tuple[float, float] | None = None,
    machine_gpu: str | None = None,
    executor: Executor | None = None,
) -> Inputs:
    """The inputs from the spec and what a caller could count (a local file's lines, a local
    checkpoint's parameters, the machine's GPUs); the spec's `estimate` section wins over both."""
    assume = spec.estimate
    if assume.instructions:
        counted = Count(assume.instructions, "spec.estimate.instructions")
    elif instructions is not None:
        limit = spec.data.instructions.limit
        counted = Count(min(instructions, limit) if limit else instructions, "counted in data.instructions.source")
    elif spec.data.instructions.limit:
        counted = Count(spec.data.instructions.limit, "data.instructions.limit")
    else:
        counted = Count(None, "not counted before launch (no local file): set spec.estimate.instructions")
    source = spec.data.evaluation.source
    if not source:
        examples = Count(None, "the held-out pairs")
    elif assume.evaluation_examples:
        examples = Count(assume.evaluation_examples, "spec.estimate.evaluationExamples")
    elif evaluation_examples is not None:
        examples = Count(evaluation_examples, "counted in data.evaluation.source")
    else:
        benchmark = spec.evaluate.benchmark
        examples = Count(BENCHMARKS[benchmark].examples, f"{benchmark}'s usual size; set spec.estimate.evaluationExamples")
    kind, kind_from = gpu_kind(spec, machine_gpu)
    generator = spec.models.generator
    return Inputs(
        instructions=counted,
        evaluation_examples=examples,
        seed=model_size(spec.models.seed, seed_size, assume.seed_size, "seed"),
        generator=model_size(generator, generator_size, assume.generator_size, "generator")
        if generator is not None
        else model_size(spec.models.seed, seed_size, assume.seed_size, "seed"),
        gpu=kind,
        gpu_from=kind_from,
        executor=executor or cluster_executor(spec),
    )


# -- what finished stages measured -----------------------------------------------------------------


@dataclass(frozen=True)
class Measurements:
    """The numbers of finished stages, read from their manifests."""

    instructions: int | None = None
    selected: int | None = None
    train_pairs: int | None = None
    heldout_pairs: int | None = None
    evaluation_examples: int | None = None
    samples_per_item: float | None = None  #: of the newest finished judge
    vote: VoteCost | None = None  #: majority-vote samples and rounds per example, of the newest finished evaluate
    keep_rate: float | None = None
    tokens_per_sample: float | None = None
    judge_items: dict[int, int] = field(default_factory=dict)
    training_examples: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  #: label -> process seconds (summed over shards)
    tokens: dict[str, float] = field(default_factory=dict)  #: label -> generated tokens, where counted


def measure(manifests: Mapping[StageRef, Manifest]) -> Measurements:
    """Pure: the measurements in a run's stage manifests (what each stage's manifest says is its
    cost row's `measure`)."""
    found: dict = {"judge_items": {}, "training_examples": {}, "seconds": {}, "tokens": {}}
    for ref in sorted(manifests):
        manifest = manifests[ref]
        found["seconds"][ref.label] = manifest.seconds
        if manifest.counts.get("tokens") is not None:
            found["tokens"][ref.label] = manifest.counts["tokens"]
        COSTS[ref.name].measure(ref, manifest.counts, manifest.summary, found)
    return Measurements(**found)


# -- the estimate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Per judge item: samples drawn, requests sent (one per round it takes part in), and the
    chance it ends with a correct judgment (kept)."""

    samples: float
    requests: float
    keep_rate: float


def expected_sampling(schedule: Schedule, accuracy: float) -> Sampling:
    """What judging costs per item when an item's chance of a right judgment is Beta-distributed
    around `accuracy` (and the fitted schedule finds that distribution; no history): a round runs
    for the items with no right judgment yet, and for p ~ Beta(a, b),
    E[(1-p)^c] = prod_{j<c} (b+j)/(a+b+j)."""
    a, b = accuracy * CONCENTRATION, (1 - accuracy) * CONCENTRATION

    def none_right(draws: int) -> float:
        return math.prod((b + j) / (a + b + j) for j in range(draws))

    drawn, drawn_expected, requests = 0, 0.0, 0.0
    for size in schedule.failing_rounds(Population(accuracy, CONCENTRATION)):
        still = none_right(drawn)
        drawn_expected += size * still
        requests += still
        drawn += size
    return Sampling(drawn_expected, requests, 1 - none_right(schedule.samples))


def _tokens(text: str) -> float:
    return TEMPLATE_TOKENS + len(text) / CHARS_PER_TOKEN


_CATEGORIZE_PROMPT = _tokens(CATEGORIZE_TEMPLATE.format(instruction=""))
_MODIFIED_PROMPT = _tokens(MODIFIED_INSTRUCTION_TEMPLATE.format(instruction="", response=""))
_JUDGE_PROMPT = _tokens(JUDGE_SYSTEM_PROMPT + JUDGE_USER_TEMPLATE.format(instruction="", response_a="", response_b=""))
_RATING_PROMPT = _tokens(RATING_TEMPLATE)


@dataclass
class _Work:
    prompt_tokens: float
    generated_tokens: float


class _Pricer:
    """Seconds of work on the rates of one GPU kind."""

    def __init__(self, rates: Rates, executor: Executor):
        self.rates, self.executor = rates, executor

    def generation(self, work: _Work, size: Size, shards: int) -> float:
        """Process-seconds of a generation stage, summed over its processes (GPU-seconds / tp)."""
        tp = max(self.executor.gpus_per_generation, 1)
        flops_per_second = tp * 1e12
        compute = 2e9 * size.active * (work.prompt_tokens / (self.rates.prefill_tflops * flops_per_second) + work.generated_tokens / (self.rates.decode_tflops * flops_per_second))
        loads = shards if self.executor.load_per_shard else 1
        return compute + loads * self.load(size)

    def load(self, size: Size) -> float:
        return self.rates.start_seconds + 2 * size.total / self.rates.load_gb_per_second

    def training(self, tokens: float, size: Size, checkpointing: bool, lora: bool = False) -> float:
        """Seconds of the training stage (every worker at once): with LoRA, no gradient of the
        frozen weights (4 x parameters a token, not 6) and one pass over them (the load)."""
        gpus = max(self.executor.train_gpus, 1)
        flops = (4e9 if lora else 6e9) * size.total * tokens * (4 / 3 if checkpointing else 1)
        passes = 1 if lora else 3
        return flops / (gpus * self.rates.train_tflops * 1e12) + TRAIN_LAUNCH_SECONDS + self.rates.start_seconds + passes * 2 * size.total / self.rates.load_gb_per_second


def lora_shape(spec: SelfTaughtRunSpec) -> LoraShape | None:
    lora = spec.train.lora
    return None if lora is None else LoraShape(lora.rank, tuple(lora.target_modules), quantized=lora.quantize == "nf4")


def training_memory(
    spec: SelfTaughtRunSpec, inputs: Inputs, example_tokens: float, *, sequences: int = 1, reference: bool = False, gpu_share: float = 1.0
) -> TrainingMemory | None:
    """The train stage's memory rule (`engines/memory.py`) on a Llama-family shape of the seed's
    size: whether it fits, with gradient checkpointing as the stage will choose it. `example_tokens`:
    the tokens of an example, `sequences` of them side by side (DPO's chosen and rejected);
    `reference`: a frozen reference model (DPO, GRPO's KL term); `gpu_share`: what colocated vLLM
    leaves (GRPO). None on CPU, where memory is not the limit (but QLoRA, which needs a GPU, is
    refused)."""
    train, lora = spec.train, lora_shape(spec)
    what = _what_trains(spec, inputs, lora)
    if inputs.gpu == "cpu":
        if lora is not None and lora.quantized:
            message = "train.lora.quantize: nf4 (QLoRA) needs bitsandbytes on a CUDA GPU, and this plan runs on the CPU: set train.lora.quantize: none"
            return TrainingMemory(0.0, 0.0, 0, False, 0.0, what, message)
        return None
    shape = shape_for_size(inputs.seed.total * 1e9)
    tokens = sequences * train.micro_batch_size * (train.max_seq_len if train.packing else min(example_tokens, train.max_seq_len))
    world = max(inputs.executor.train_gpus, 1)
    memory = memory_estimate(
        shape, tokens=int(tokens), zero_stage=train.zero_stage, world=world, offload_optimizer=train.offload_optimizer, bf16=train.bf16,
        reference=reference, lora=lora,
    )  # fmt: skip
    gpu_bytes = int(RATES[inputs.gpu].memory_gib * GIB * gpu_share)
    message = does_not_fit(
        memory, gpu_bytes, gradient_checkpointing=train.gradient_checkpointing, lora=lora, zero_stage=train.zero_stage, world=world,
        offload_optimizer=train.offload_optimizer, micro_batch_size=train.micro_batch_size,
    )  # fmt: skip
    trainable = (lora.parameters(shape) if lora is not None else shape.parameters) / 1e9
    checkpointing = choose_checkpointing(train.gradient_checkpointing, memory, gpu_bytes).on
    return TrainingMemory(needed(memory, train.gradient_checkpointing) / GIB, gpu_bytes / GIB, world, checkpointing, trainable, what, message)


def _what_trains(spec: SelfTaughtRunSpec, inputs: Inputs, lora: LoraShape | None) -> str:
    train, seed = spec.train, _parameters(inputs.seed.total)
    sharded = " sharded by ZeRO-3" if train.zero_stage == 3 and max(inputs.executor.train_gpus, 1) > 1 else ""
    if lora is None:
        return f"every weight of the {seed} seed, ZeRO-{train.zero_stage}"
    trainable = lora.parameters(shape_for_size(inputs.seed.total * 1e9)) / 1e9
    base = "4-bit (QLoRA)" if lora.quantized else ("bf16" if train.bf16 else "fp32")
    return f"LoRA rank {lora.rank}, {_parameters(trainable)} trainable, on the frozen {seed} seed in {base}{sharded}"


def checkpointing_on(memory: TrainingMemory | None, setting: bool | None) -> bool:
    """Whether the train stage will checkpoint: the setting, or when unset the train stage's own
    memory rule (`training_memory`; off on CPU)."""
    if memory is None or setting is not None:
        return choose_checkpointing(setting, None, None).on
    return memory.checkpointing


@dataclass(frozen=True)
class _Quantities:
    """What the stages' costs are computed from: the run's counts and token lengths, measured by
    finished stages where they have run, else from the spec's assumptions."""

    spec: SelfTaughtRunSpec
    inputs: Inputs
    measured: Measurements
    pricer: _Pricer
    instructions: int
    selected: int
    train_pairs: int
    examples: int  #: evaluation examples
    orders: int  #: a judge item per pair and order
    instruction: float  #: tokens of an instruction, an answer, a judgment (a judge's, an evaluation's)
    answer: float
    judgment: float
    evaluation_judgment: float
    vote: VoteCost  #: a majority vote's samples and rounds per example (none without a vote)
    samples_per_item: float  #: adaptive judging: samples drawn, requests sent, kept, per item
    requests_per_item: float
    keep_rate: float
    tokens_per_sample: float
    judge_prompt: float

    @classmethod
    def of(cls, spec: SelfTaughtRunSpec, inputs: Inputs, measured: Measurements, pricer: _Pricer, instructions: int) -> _Quantities:
        assume = spec.estimate
        selected = measured.selected
        if selected is None:
            caps = [instructions * assume.selected_fraction]
            if spec.select.total_cap:
                caps.append(spec.select.total_cap)
            if spec.select.per_category_cap:
                caps.append(spec.select.per_category_cap * len(spec.select.categories))
            selected = max(1, round(min(caps)))
        held_fraction = 0.0 if spec.data.evaluation.source else spec.data.evaluation.held_out_fraction
        train_pairs = measured.train_pairs if measured.train_pairs is not None else round(selected * (1 - held_fraction))
        heldout = measured.heldout_pairs if measured.heldout_pairs is not None else selected - train_pairs
        model = expected_sampling(Schedule.of(spec.judge), assume.judge_accuracy)
        per_item, keep_rate = model.samples, model.keep_rate
        if measured.samples_per_item is not None:
            if spec.judge.adaptive:
                per_item = measured.samples_per_item
            keep_rate = measured.keep_rate if measured.keep_rate is not None else keep_rate
        instruction, answer = assume.instruction_tokens, min(assume.answer_tokens, spec.pairs.max_tokens)
        judgment = min(assume.judgment_tokens, spec.judge.max_tokens)
        return cls(
            spec, inputs, measured, pricer, instructions, selected, train_pairs,
            examples=measured.evaluation_examples or inputs.evaluation_examples.value or heldout,
            orders=2 if spec.judge.orders == "both" else 1,
            instruction=instruction, answer=answer, judgment=judgment,
            evaluation_judgment=min(assume.judgment_tokens, spec.evaluate.max_tokens),
            vote=_vote_cost(spec, measured),
            samples_per_item=per_item, requests_per_item=model.requests, keep_rate=keep_rate,
            tokens_per_sample=measured.tokens_per_sample or judgment,
            judge_prompt=_JUDGE_PROMPT + instruction + 2 * answer,
        )  # fmt: skip

    @property
    def votes(self) -> int:
        """k, when the evaluation samples a majority vote (RewardBench's, never in rating mode)."""
        evaluate = self.spec.evaluate
        voting = BENCHMARKS[self.spec.evaluation_benchmark].majority_vote and self.spec.evaluation_mode != "rating"
        return evaluate.majority_vote if voting else 0

    def judge_items(self, iteration: int) -> float:
        """Items a judge stage judges: measured, else a pair per order."""
        return self.measured.judge_items.get(iteration, self.train_pairs * self.orders)


# -- each stage's cost: one row per stage ----------------------------------------------------------


def _no_work(q: _Quantities, ref: StageRef, fixed: bool) -> _Work:
    return _Work(0.0, 0.0)


def _categorize_work(q: _Quantities, ref: StageRef, fixed: bool) -> _Work:
    return _Work(q.instructions * (_CATEGORIZE_PROMPT + q.instruction), q.instructions * min(CATEGORY_TOKENS, q.spec.categorize.max_tokens))


def _pairs_work(q: _Quantities, ref: StageRef, fixed: bool) -> _Work:
    """The answer, then a modified instruction and its answer."""
    prompt = q.selected * (2 * TEMPLATE_TOKENS + q.instruction + _MODIFIED_PROMPT + q.instruction + q.answer)
    return _Work(prompt, q.selected * (2 * q.answer + q.instruction))


def _judge_work(q: _Quantities, ref: StageRef, fixed: bool) -> _Work:
    """`fixed`: a judge that always samples judge.samples (one request per item)."""
    items = q.judge_items(ref.iteration)
    samples, requests = (float(q.spec.judge.samples), 1.0) if fixed else (q.samples_per_item, q.requests_per_item)
    return _Work(items * requests * q.judge_prompt, items * samples * q.tokens_per_sample)


def _evaluate_work(q: _Quantities, ref: StageRef, fixed: bool) -> _Work:
    """As the benchmark asks (`api/benchmarks.py`). A majority vote draws `q.vote` samples per
    example in its rounds, a prompt per round (its samples share it through the prefix cache);
    `fixed`: all k in one round."""
    benchmark = BENCHMARKS[q.spec.evaluation_benchmark]
    if benchmark.asks == "rated":  # every answer rated on its own
        ratings = q.examples * benchmark.answers
        return _Work(ratings * (_RATING_PROMPT + q.instruction + q.answer), ratings * q.evaluation_judgment)
    greedy = 2 if benchmark.asks == "both orders" or q.spec.evaluate.position_consistency else 1
    k = q.votes
    samples, rounds = (float(k), 1.0 if k else 0.0) if fixed else (q.vote.samples, q.vote.rounds)
    return _Work(q.examples * (greedy + rounds) * q.judge_prompt, q.examples * (greedy + samples) * q.evaluation_judgment)


def _vote_cost(spec: SelfTaughtRunSpec, measured: Measurements) -> VoteCost:
    """Per example of the evaluation's majority vote: measured by the newest finished evaluate, else
    what the exact rule draws at the judge's assumed accuracy and spread (`method/voting.py`)."""
    k = spec.evaluate.majority_vote
    if measured.vote is not None:
        return measured.vote
    return expected_vote(k, spec.estimate.judge_accuracy, CONCENTRATION, spec.evaluate.early_stop)


def _select_seconds(q: _Quantities, ref: StageRef, cost: StageCost, fixed: bool) -> float:
    return SELECT_START_SECONDS + SELECT_SECONDS_PER_RECORD * q.instructions


def _grpo_prompts(q: _Quantities) -> float:
    """Prompts a GRPO train stage samples judgments for: `grpo.steps` worth, else one pass over the
    pairs (a pair per order, or each of its answers rated)."""
    spec = q.spec
    grpo, train = spec.train.grpo, spec.train
    if grpo.steps:
        return grpo.steps * train.micro_batch_size * train.gradient_accumulation * max(q.inputs.executor.train_gpus, 1) / grpo.group_size
    return q.train_pairs * (2 if spec.judge.format == "pointwise" else q.orders)


def _grpo_completion(q: _Quantities) -> float:
    grpo = q.spec.train.grpo
    return min(q.spec.estimate.judgment_tokens, grpo.max_completion_tokens or q.spec.judge.max_tokens)


def _train_work(q: _Quantities, ref: StageRef, fixed: bool) -> _Work:
    """GRPO's rollouts, priced as the judge stage's generation: each prompt read once (its group's
    samples share it), group size x a judgment generated. SFT and DPO generate nothing."""
    if q.spec.train.method != "grpo":
        return _Work(0.0, 0.0)
    prompts = _grpo_prompts(q)
    prompt = _RATING_PROMPT + q.instruction + q.answer if q.spec.judge.format == "pointwise" else q.judge_prompt
    return _Work(prompts * prompt, prompts * q.spec.train.grpo.group_size * _grpo_completion(q))


def _grpo_seconds(q: _Quantities, ref: StageRef) -> float:
    """Rollouts (vLLM in the training processes: every training GPU generates its share), then the
    policy's forward and backward over every sampled judgment with its prompt (and, with a KL term,
    the reference model's forward: a third more)."""
    work = _train_work(q, ref, False)
    gpus = max(q.inputs.executor.train_gpus, 1)
    rates, seed = q.pricer.rates, q.inputs.seed
    rollout = 2e9 * seed.active * (work.prompt_tokens / rates.prefill_tflops + work.generated_tokens / rates.decode_tflops) / (gpus * 1e12)
    completion = _grpo_completion(q)
    tokens = work.generated_tokens / completion * _grpo_judgment(q) * (4 / 3 if q.spec.train.grpo.beta > 0 else 1)
    return rollout + q.pricer.training(tokens, seed, _checkpointing(q), lora=q.spec.train.lora is not None)


def _grpo_judgment(q: _Quantities) -> float:
    """Tokens of a sampled judgment with its prompt: what GRPO trains on, per rollout."""
    prompt = _RATING_PROMPT + q.instruction + q.answer if q.spec.judge.format == "pointwise" else q.judge_prompt
    return prompt + _grpo_completion(q)


def _train_memory(q: _Quantities) -> TrainingMemory | None:
    """The train stage's memory, as its method lays out a micro batch (`engines/training.py`)."""
    spec = q.spec
    if spec.train.method == "grpo":
        return training_memory(spec, q.inputs, _grpo_judgment(q), reference=spec.train.grpo.beta > 0, gpu_share=1 - VLLM_GPU_SHARE)
    example = q.judge_prompt + q.tokens_per_sample
    if spec.train.method == "dpo":  # chosen and rejected side by side, against a reference model
        return training_memory(spec, q.inputs, example, sequences=2, reference=True)
    return training_memory(spec, q.inputs, example)


def _checkpointing(q: _Quantities) -> bool:
    return checkpointing_on(_train_memory(q), q.spec.train.gradient_checkpointing)


def _train_seconds(q: _Quantities, ref: StageRef, cost: StageCost, fixed: bool) -> float:
    if q.spec.train.method == "grpo":
        return _grpo_seconds(q, ref)
    kept = q.measured.training_examples.get(ref.iteration)
    if kept is None:
        kept = q.judge_items(ref.iteration) * q.keep_rate
    example = q.judge_prompt + q.tokens_per_sample
    tokens = kept * example * q.spec.train.epochs
    return q.pricer.training(tokens, q.inputs.seed, _checkpointing(q), lora=q.spec.train.lora is not None)


def _generation_seconds(q: _Quantities, ref: StageRef, cost: StageCost, fixed: bool) -> float:
    """Summed over the stage's processes, on the model that generates it."""
    size = q.inputs.generator if cost.model == "generator" else q.inputs.seed
    return q.pricer.generation(cost.work(q, ref, fixed), size, q.spec.generation.shards)


def _measure_nothing(ref: StageRef, counts: dict, summary: dict, found: dict) -> None:
    pass


def _measure_categorize(ref: StageRef, counts: dict, summary: dict, found: dict) -> None:
    if counts.get("records") is not None:
        found["instructions"] = int(counts["records"])


def _measure_select(ref: StageRef, counts: dict, summary: dict, found: dict) -> None:
    if summary.get("selected") is not None:
        found["selected"] = int(summary["selected"])


def _measure_pairs(ref: StageRef, counts: dict, summary: dict, found: dict) -> None:
    if counts.get("train") is not None:
        found["train_pairs"], found["heldout_pairs"] = int(counts["train"]), int(counts.get("heldout", 0))


def _measure_judge(ref: StageRef, counts: dict, summary: dict, found: dict) -> None:
    if not counts.get("items"):
        return
    items = counts["items"]
    found["judge_items"][ref.iteration] = int(items)
    found["samples_per_item"] = counts.get("samples", 0) / items
    found["keep_rate"] = counts.get("kept", 0) / items
    if counts.get("samples"):
        found["tokens_per_sample"] = counts.get("tokens", 0) / counts["samples"]
    if counts.get("training_examples") is not None:
        found["training_examples"][ref.iteration] = int(counts["training_examples"])


def _measure_evaluate(ref: StageRef, counts: dict, summary: dict, found: dict) -> None:
    if counts.get("examples"):
        found["evaluation_examples"] = int(counts["examples"])
        if counts.get("vote_samples"):
            examples = counts["examples"]
            found["vote"] = VoteCost(counts["vote_samples"] / examples, counts.get("vote_rounds", examples) / examples)


@dataclass(frozen=True)
class StageCost:
    """How one stage is priced: the tokens it prompts and generates (`work`), the process-seconds
    they take (`seconds`: a generation stage's on the `model` that generates it), what its manifest
    measures for the stages after it (`measure`), and whether the plan compares it with sampling a
    fixed N (`adaptive`)."""

    work: Callable[[_Quantities, StageRef, bool], _Work] = _no_work
    seconds: Callable[[_Quantities, StageRef, StageCost, bool], float] = _generation_seconds
    model: Literal["seed", "generator"] = "seed"
    measure: Callable[[StageRef, dict, dict, dict], None] = _measure_nothing
    #: what the plan compares it with: the judge's fixed N (`adaptive`), a majority vote's k (`votes`)
    adaptive: bool = False
    votes: bool = False


#: One row per stage of the stage table (`pipeline/table.py`).
COSTS: dict[str, StageCost] = {
    "categorize": StageCost(work=_categorize_work, model="generator", measure=_measure_categorize),
    "select": StageCost(seconds=_select_seconds, measure=_measure_select),
    "pairs": StageCost(work=_pairs_work, model="generator", measure=_measure_pairs),
    "judge": StageCost(work=_judge_work, measure=_measure_judge, adaptive=True),
    "train": StageCost(work=_train_work, seconds=_train_seconds),
    "evaluate": StageCost(work=_evaluate_work, measure=_measure_evaluate, votes=True),
}
assert set(COSTS) == set(STAGE_NAMES), "every stage of the table has its cost row"


def estimate(spec: SelfTaughtRunSpec, inputs: Inputs, measured: Measurements | None = None) -> Estimate:
    """The run's estimate: one row per stage of the run, measured where finished."""
    measured = measured or Measurements()
    executor = inputs.executor
    pricer = _Pricer(rates_of(inputs.gpu, spec.estimate.throughput), executor)
    result = Estimate(gpu=inputs.gpu, assumptions=_assumptions(spec, inputs, measured), contamination=inputs.contamination)
    instructions = measured.instructions or inputs.instructions.value
    if instructions is None:
        result.unknown = f"the number of instructions is {inputs.instructions.known_from}"
        result.rows = [_row(spec, node.ref, executor) for node in stage_graph(spec)]  # how each stage runs, no numbers
        result.train_memory = _train_memory(_Quantities.of(spec, inputs, measured, pricer, 1))  # needs no count
        return result
    q = _Quantities.of(spec, inputs, measured, pricer, instructions)
    result.train_memory = _train_memory(q)
    shards = spec.generation.shards

    def seconds(ref: StageRef, fixed: bool = False) -> float:
        """Predicted process-seconds (generation: summed over processes; training: wall)."""
        cost = COSTS[ref.name]
        return cost.seconds(q, ref, cost, fixed)

    factors = {ref.name: measured.seconds[ref.label] / predicted for ref in _finished(spec, measured) if (predicted := seconds(ref)) > 0}
    adaptive_tokens = fixed_tokens = adaptive_hours = fixed_hours = 0.0
    vote_tokens = all_k_tokens = vote_hours = all_k_hours = 0.0
    graph = stage_graph(spec)
    for node in graph:
        ref, cost = node.ref, COSTS[node.ref.name]
        row = _row(spec, ref, executor)
        done = ref.label in measured.seconds
        process_seconds = measured.seconds[ref.label] if done else seconds(ref) * factors.get(ref.name, 1.0)
        planned = cost.work(q, ref, False)
        row.prompt_tokens = planned.prompt_tokens
        row.generated_tokens = measured.tokens.get(ref.label, planned.generated_tokens) if done else planned.generated_tokens
        row.gpu_hours, row.hours = _hours(ref, process_seconds, executor, shards)
        row.measured = done
        result.rows.append(row)
        if cost.adaptive:
            fixed = seconds(ref, fixed=True) * factors.get(ref.name, 1.0)
            adaptive_tokens += row.generated_tokens
            fixed_tokens += cost.work(q, ref, True).generated_tokens
            adaptive_hours += row.gpu_hours
            fixed_hours += _hours(ref, fixed, executor, shards)[0]
        if cost.votes and q.votes:
            all_k = seconds(ref, fixed=True) * factors.get(ref.name, 1.0)
            vote_tokens += row.generated_tokens
            all_k_tokens += cost.work(q, ref, True).generated_tokens
            vote_hours += row.gpu_hours
            all_k_hours += _hours(ref, all_k, executor, shards)[0]
    if any(COSTS[node.ref.name].adaptive for node in graph):
        result.adaptive = Adaptive(spec.judge.samples, q.samples_per_item, q.keep_rate, adaptive_tokens, fixed_tokens, adaptive_hours, fixed_hours)
    if q.votes and any(COSTS[node.ref.name].votes for node in graph):
        result.votes = Votes(q.votes, spec.evaluate.early_stop, q.vote.samples, vote_tokens, all_k_tokens, vote_hours, all_k_hours)
    return result


def _finished(spec: SelfTaughtRunSpec, measured: Measurements) -> list[StageRef]:
    return [node.ref for node in stage_graph(spec) if node.ref.label in measured.seconds]


def _row(spec: SelfTaughtRunSpec, ref: StageRef, executor: Executor) -> StageEstimate:
    shards = spec.generation.shards if ref.sharded else 1
    if ref.kind == "generation":
        tp = executor.gpus_per_generation
        unit = "pod" if executor.name == "cluster" else "process"
        count = shards if executor.load_per_shard else 1
        plural = "" if count == 1 else ("s" if unit == "pod" else "es")
        gpus = f" x {tp} GPU{'s' if tp > 1 else ''}" if tp else ""
        at_once = f", {executor.generation_at_once} at once" if count > 1 else ""
        return StageEstimate(ref.label, ref.kind, shards, f"{count} {unit}{plural}{gpus}{at_once}", tp * min(executor.generation_at_once, count))
    if ref.kind == "training":
        gpus = executor.train_gpus
        nodes = executor.train_nodes
        per_node = gpus // max(nodes, 1)
        where = f"{nodes} node{'s' if nodes > 1 else ''} x {per_node} GPU{'s' if per_node > 1 else ''}" if gpus else "1 process"
        return StageEstimate(ref.label, ref.kind, 1, where, gpus)
    return StageEstimate(ref.label, ref.kind, 1, "1 process, CPU", 0)


def _hours(ref: StageRef, process_seconds: float, executor: Executor, shards: int) -> tuple[float, float]:
    """(GPU-hours, hours of wall time) of a stage from its process-seconds."""
    if ref.kind == "generation":
        tp = executor.gpus_per_generation
        at_once = min(executor.generation_at_once, shards) if executor.load_per_shard else 1
        return tp * process_seconds / 3600, process_seconds / max(at_once, 1) / 3600
    if ref.kind == "training":
        return executor.train_gpus * process_seconds / 3600, process_seconds / 3600
    return 0.0, process_seconds / 3600


def _assumptions(spec: SelfTaughtRunSpec, inputs: Inputs, measured: Measurements) -> list[str]:
    """The lines that say what the numbers rest on."""
    assume = spec.estimate
    rates = rates_of(inputs.gpu, assume.throughput)
    lines = [
        f"GPU {inputs.gpu} ({inputs.gpu_from}): decode {rates.decode_tflops:g}, prefill {rates.prefill_tflops:g}, training "
        f"{rates.train_tflops:g} TFLOP/s per GPU; weights load at {rates.load_gb_per_second:g} GB/s after a {rates.start_seconds:g} s start "
        f"({_provenance(rates, assume.throughput)})",
    ]
    if measured.instructions is not None:
        lines.append(f"{measured.instructions:,} instructions (measured by categorize)")
    elif inputs.instructions.value is not None:
        lines.append(f"{inputs.instructions.value:,} instructions ({inputs.instructions.known_from})")
    else:
        lines.append(f"instructions: {inputs.instructions.known_from}")
    if measured.selected is None:
        caps = [f"totalCap {spec.select.total_cap:,}"] if spec.select.total_cap else []
        lines.append(f"select keeps {assume.selected_fraction:g} of them" + (f" ({', '.join(caps)})" if caps else ""))
    if evaluation_enabled(spec):
        source = "measured" if measured.evaluation_examples else inputs.evaluation_examples.known_from
        lines.append(f"evaluation examples: {source}")
    if evaluation_enabled(spec) and spec.evaluate.majority_vote and spec.evaluate.early_stop != "off":
        if measured.vote is not None:
            lines.append(f"majority vote: {measured.vote.samples:.1f} samples per example (measured by the newest evaluation)")
        else:
            lines.append(
                f"majority vote of {spec.evaluate.majority_vote} stopped {spec.evaluate.early_stop}ly: its samples right as often as the "
                "judge's (below), none unparsed"
            )
    if not spec.judge_stage:
        grpo = spec.train.grpo
        lines.append(f"GRPO: {grpo.group_size} judgments sampled per prompt, ~{min(assume.judgment_tokens, grpo.max_completion_tokens or spec.judge.max_tokens)} tokens each")
    elif measured.samples_per_item is None:
        lines.append(f"judge accuracy {assume.judge_accuracy:g} per sampled judgment, items spread around it (Beta, concentration {CONCENTRATION:g})")
    else:
        lines.append(f"judge: {measured.samples_per_item:.2f} samples per item, keep rate {measured.keep_rate:.3f} (measured by the newest judge)")
    lines.append(
        f"mean tokens: instruction {assume.instruction_tokens}, answer {min(assume.answer_tokens, spec.pairs.max_tokens)}, "
        f"judgment {min(assume.judgment_tokens, spec.judge.max_tokens)}; judge prompt ~{_JUDGE_PROMPT + assume.instruction_tokens + 2 * min(assume.answer_tokens, spec.pairs.max_tokens):,.0f}"
    )
    for what, size in (("seed", inputs.seed), ("generator", inputs.generator)):
        if what == "generator" and spec.models.generator is None:
            continue
        active = f", {_parameters(size.active)} active" if size.active != size.total else ""
        lines.append(f"{what} model {_parameters(size.total)} parameters{active} ({size.known_from})")
    if measured.seconds:
        lines.append(f"{len(measured.seconds)} finished stage(s) measured; stages still to run are scaled by their measured speed")
    return lines


def _provenance(rates: Rates, override: Throughput | None) -> str:
    """Where the rates come from: the kind's row (datasheet-derived, calibrated or measured), and
    which of them the spec replaced."""
    given = [] if override is None else [name for name, value in override.model_dump(by_alias=True).items() if value is not None]
    return rates.source + (f"; {', '.join(given)} from spec.estimate.throughput" if given else "")


def _parameters(billions: float) -> str:
    return f"{billions:.3g}B" if billions >= 1 else f"{billions * 1000:.3g}M"


def with_reuse(result: Estimate, reused: Iterable[str]) -> Estimate:
    """Pure: `result` with the stages labelled in `reused` costing nothing, what they would have
    cost kept as saved (the plan's and the status's "reused, saves N GPU-hours")."""
    labels = set(reused)
    rows = [
        replace(row, reused=True, saved_gpu_hours=row.gpu_hours, saved_hours=row.hours, gpu_hours=0.0, hours=0.0, prompt_tokens=0.0, generated_tokens=0.0)
        if row.label in labels and not row.reused
        else row
        for row in result.rows
    ]
    return replace(result, rows=rows)
