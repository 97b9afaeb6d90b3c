"""`SelfTaughtRun` v1alpha1: the one document that both `selftaught run` and the operator read.

Every field carries a description because the CRD schema (and so `kubectl explain`) and the
configuration reference are generated from these models. Defaults are the paper's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

from selftaught.api.benchmarks import BENCHMARKS, HELD_OUT, BenchmarkName
from selftaught.api.benchmarks import names as benchmark_names
from selftaught.method.categories import CATEGORIES, REASONING_CATEGORIES

API_GROUP = "selftaught.dev"
API_VERSION = "v1alpha1"
KIND = "SelfTaughtRun"
PLURAL = "selftaughtruns"



class Model(BaseModel):
    """Base for all spec models: camelCase on the wire, unknown fields are errors (typos surface)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _field(default: Any = ..., description: str = "", **kwargs: Any) -> Any:
    return Field(default, description=description, **kwargs)


def _either(items: list[str]) -> str:
    """`a`, `a or b`, `a, b or c` (for descriptions)."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


class ModelSource(Model):
    """Where a model comes from."""

    source: str = _field(
        description="A Hugging Face model id (`meta-llama/Meta-Llama-3-70B-Instruct`), a local "
        "path, or an `s3://bucket/prefix/` holding an HF checkpoint. Downloaded once per pod or "
        "process and cached.",
        min_length=1,
    )
    revision: str | None = _field(None, description="Hub revision (branch, tag or commit) to pin.")


def iteration_model(seed: ModelSource, iteration: int, checkpoint: Callable[[int], str]) -> ModelSource:
    """M(`iteration`), the judge after that many iterations: M(0) is the seed, M(i) the checkpoint
    that train-i wrote (`checkpoint(i)`: its URI, read from the store or from what the run
    reported). The one rule behind the model a judge stage samples (M(i-1)), the one evaluate-i
    scores (M(i)), the one train-i starts from (`train_base`) and the one a server serves."""
    return seed if iteration == 0 else ModelSource(source=checkpoint(iteration))


class Models(Model):
    seed: ModelSource = _field(
        description="The seed instruction-tuned LLM: judge M(0), and the model every iteration is "
        "fine-tuned from (unless train.initFrom is `previous`)."
    )
    generator: ModelSource | None = _field(
        None,
        description="Model that categorizes instructions and writes the response pairs. Defaults "
        "to the seed (the paper used Mixtral 8x22B-Instruct here).",
    )
    hf_token_secret: str | None = _field(
        None,
        description="Name of a Secret with key `HF_TOKEN`, for gated Hub models (operator only; "
        "locally the HF_TOKEN environment variable is used).",
    )


class DataSource(Model):
    source: str = _field(
        description="JSONL file or prefix (local path or `s3://`), or a Hugging Face dataset as "
        "`hf://datasets/<id>` (loaded with `datasets`, streamed).",
        min_length=1,
    )
    field: str = _field(
        "instruction",
        description="Field that holds the instruction text; dots index into nested records, "
        "e.g. `conversation.0.content` for WildChat.",
    )
    id_field: str | None = _field(
        None, description="Field with a stable record id; by default a hash of the text."
    )
    split: str = _field("train", description="Dataset split (Hugging Face datasets only).")
    limit: int | None = _field(None, ge=1, description="Read at most this many records.")
    on_bad_record: Literal["fail", "skip"] = _field(
        "fail",
        description="A malformed line, a record without the field, or one whose prompt does not fit "
        "the model's context: `fail` stops the stage with an error naming the file and line; `skip` "
        "counts it in the stage manifest (and the run's status) and goes on.",
    )


class EvaluationData(Model):
    source: str | None = _field(
        None,
        description="An evaluation set in the format of `evaluate.benchmark` (JSONL file, folder, `s3://` "
        f"or `hf://datasets/<id>`): {_either([f'{b.title} ({b.record})' for b in BENCHMARKS.values()])}. When empty, a "
        "fraction of the generated pairs is held out instead and scored as custom subsets.",
    )
    split: str = _field(
        "train",
        description="Dataset split, for `hf://datasets/...` only ("
        + ", ".join(f"{b.title}'s {'is ' if i == 0 else ''}`{b.hub_split}`" for i, b in enumerate(BENCHMARKS.values()))
        + ").",
    )
    held_out_fraction: float = _field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Fraction of generated pairs kept out of training for evaluation when no "
        "evaluation source is given.",
    )
    on_bad_record: Literal["fail", "skip"] = _field(
        "fail", description="A malformed evaluation record, or one whose judge prompt does not fit the "
        "model's context: `fail` stops with its file and line; `skip` counts it and goes on."
    )


class Data(Model):
    instructions: DataSource = _field(description="Unlabeled user instructions.")
    evaluation: EvaluationData = _field(
        default_factory=EvaluationData, description="Held-out evaluation pairs."
    )
    decontaminate: Literal["drop", "warn", "off"] = _field(
        "drop",
        description="Instructions that match a prompt of `data.evaluation.source` (the same text up to case, "
        "punctuation and spacing, or a near duplicate: word 3-grams with Jaccard similarity >= 0.6, or 80% of the "
        "prompt's inside the instruction): a judge trained on the prompts it is scored on reports a number that "
        "means nothing. `drop` leaves them out of training (in `select`, counted in its manifest, the plan, the "
        "status and the report); `warn` counts them and keeps them; `off` does not look (docs/evaluation.md).",
    )


class Storage(Model):
    uri: str = _field(
        description="Root of the run store: `s3://bucket/prefix` or a local path. The run lives "
        "under `<uri>/<namespace>/<name>/`.",
        min_length=1,
    )
    endpoint: str | None = _field(
        None,
        description="S3 endpoint URL for MinIO, Ceph RGW or other S3-compatible stores: the run store's, and that of "
        "any `s3://` model or data source in the same bucket.",
    )
    source_endpoint: str | None = _field(
        None,
        description="S3 endpoint URL for `s3://` model and data sources in other buckets than the run store's "
        "(`endpoint` is never used for them). Empty: AWS S3's default endpoint (or `AWS_ENDPOINT_URL_S3` where set), "
        "so set it when your data or models are in another bucket of a MinIO or Ceph server.",
    )
    region: str | None = _field(None, description="S3 region.")
    timeout_seconds: int = _field(
        120,
        ge=5,
        le=3600,
        description="How long one call to an S3 store or source may wait for an answer, retries included, before the "
        "stage or command fails with StorageUnavailable naming the endpoint. Long enough to ride out a MinIO restart or "
        "a brief network cut; short enough that a store that accepts connections but never answers (a proxy that "
        "swallows requests, a wedged server) is reported within minutes instead of hanging every call. A call that "
        "has waited 5 s says what it is waiting for.",
    )
    credentials_secret: str | None = _field(
        None,
        description="Name of a Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and "
        "optionally `AWS_SESSION_TOKEN`) mounted into every Job as environment variables. Leave "
        "empty for IRSA / workload identity.",
    )

    @field_validator("uri")
    @classmethod
    def _bucket_named(cls, value: str) -> str:
        """`s3://` alone or `s3:///x` would reach boto3 as a bucket-less request: say so here."""
        if value.startswith("s3:") and not (value.startswith("s3://") and urlparse(value).netloc):
            raise ValueError(f"{value!r} names no bucket: write s3://<bucket>/<prefix>")
        return value

    @field_validator("endpoint", "source_endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        """boto3 wants a URL; `minio:9000` would fail deep inside it with no field named."""
        if value is None:
            return value
        url = urlparse(value)
        if url.scheme not in {"http", "https"}:
            raise ValueError(f"{value!r} is not a URL: add http:// or https:// (e.g. http://{value.split('://')[-1]})")
        if not url.netloc:
            raise ValueError(f"{value!r} names no host (e.g. http://minio:9000)")
        return value


class _ShownAs(type):
    """docs/gen_reference.py names a field's type with `str(type)`: show `quantity`, `duration`."""

    def __str__(cls) -> str:
        return cls.__name__.lower()


#: A duration as Kubernetes objects write one (Go's `time.ParseDuration`, Flux's `interval: 10m`).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class Duration(metaclass=_ShownAs):
    """A span of time: a number of seconds (`600`) or a string of numbers with units `h`, `m`,
    `s`, `ms` as Kubernetes objects write durations (`10m`, `90s`, `1h30m`). Kept as written (the
    spec's snapshot and `kubectl get` show what the user wrote); `duration_seconds` reads it. In
    the CRD, `x-kubernetes-int-or-string`, like a resource quantity."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @staticmethod
    def _validate(value: Any) -> int | float | str:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and (value == "0" or re.match(DURATION_PATTERN, value)):
            return value
        raise ValueError(f"{value!r} is not a duration: seconds, or a string such as 90s, 10m or 1h30m")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"x-kubernetes-int-or-string": True}


def duration_seconds(value: int | float | str) -> float:
    """The seconds a `Duration` says (`10m` -> 600.0)."""
    if not isinstance(value, str):
        return float(value)
    return float(sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value)))


class Generation(Model):
    """vLLM settings shared by the generation stages."""

    tensor_parallel: int = _field(
        1, ge=1, description="vLLM tensor-parallel size; also the GPUs requested per pod."
    )
    shards: int = _field(
        1,
        ge=1,
        le=10000,
        description="Shards per generation stage: one completion index each; resuming restarts "
        "only unfinished shards.",
    )
    parallelism: int = _field(1, ge=1, description="Generation pods running at once.")
    max_model_len: int | None = _field(
        None, ge=128, description="Context length given to vLLM; the model's own by default."
    )
    gpu_memory_utilization: float = _field(
        0.9, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may take."
    )
    dtype: str = _field("auto", description="Weights dtype for vLLM (`auto`, `bfloat16`, ...).")
    enforce_eager: bool = _field(
        False, description="Disable CUDA graphs / torch.compile: slower steps, faster start."
    )
    enable_prefix_caching: bool = _field(
        True, description="Reuse the KV cache of the shared judge-prompt prefix across samples."
    )
    batch_size: int = _field(
        4096,
        ge=1,
        description="Requests handed to vLLM per call; bounds memory while vLLM batches inside.",
    )
    save_every: Duration = _field(
        "30s",
        description="How often a generation shard saves the answers it has so far into the store (`_saved/`, "
        "also every 1,000 requests), e.g. `30s`, `2m` or seconds; `0`: only when it is stopped (SIGTERM) or fails. "
        "A shard that is preempted, loses its node or crashes replays them and generates only the rest, so at most "
        "this much of its generation plus the engine call in flight (`batchSize` requests) is lost. 30 s is far "
        "inside a spot notice (2 minutes on AWS) and costs well under 1 % of generation time.",
    )
    max_num_seqs: int | None = _field(
        None, ge=1, description="vLLM's `max_num_seqs`: sequences in one engine step; vLLM's default when unset."
    )
    max_num_batched_tokens: int | None = _field(
        None,
        ge=16,
        description="vLLM's `max_num_batched_tokens`: tokens in one engine step; vLLM's default when unset.",
    )
    enable_chunked_prefill: bool = _field(
        True,
        description="Split long prompts across engine steps so decoding never stalls behind a prefill "
        "(always off on vLLM's CPU build, see engines/generation.py).",
    )


class Categorize(Model):
    max_tokens: int = _field(64, ge=8, description="Tokens for the category answer.")
    temperature: float = _field(0.0, ge=0.0, description="0 = greedy.")


class Select(Model):
    categories: list[str] = _field(
        default_factory=lambda: list(REASONING_CATEGORIES),
        description="Categories to keep (names from the 15-category template).",
        min_length=1,
    )
    min_complexity: int = _field(
        1, ge=1, le=10, description="Drop instructions rated below this complexity (1-10)."
    )
    per_category_cap: int | None = _field(
        None, ge=1, description="At most this many instructions per category, for balance."
    )
    total_cap: int | None = _field(
        None, ge=1, description="At most this many instructions in total (paper: ~20K)."
    )
    deduplicate: bool = _field(
        True, description="Drop instructions whose normalised text was already seen."
    )

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; choose from {list(CATEGORIES)}")
        return value


class Pairs(Model):
    max_tokens: int = _field(
        2048, ge=8, description="Tokens per generated response; a response cut off here is dropped (counted as `truncated`)."
    )
    temperature: float = _field(
        0.7, ge=0.0, description="Sampling temperature for responses (the official code's data generation: 0.7)."
    )
    top_p: float = _field(0.9, gt=0.0, le=1.0, description="Nucleus sampling for responses (the official code's: 0.9).")


class Judge(Model):
    samples: int = _field(
        15, ge=1, le=256, description="N: most judgments sampled per example and order."
    )
    adaptive: bool = _field(
        True,
        description="Sample in rounds and stop for an example once it has a correct judgment; "
        "`false` always samples all N.",
    )
    first_round: int = _field(
        1,
        ge=1,
        description="Samples in an item's first adaptive round when nothing is known about it (iteration 1, "
        "or a pair the previous iteration did not judge); with `schedule: doubling`, every item's.",
    )
    schedule: Literal["fitted", "doubling"] = _field(
        "fitted",
        description="How adaptive rounds are sized. `fitted`: each item's next round is the fewest samples in "
        "expectation within the rounds left, from what the shard's earlier rounds say of the judge's accuracy "
        "and, from iteration 2, how many samples the same pair needed in the previous iteration "
        "(docs/architecture.md, Judging). `doubling`: firstRound, then twice as many each round.",
    )
    rounds: int | None = _field(
        None,
        ge=1,
        description="Most rounds an item takes part in under `schedule: fitted` (the last draws what is left of "
        "N); each round is a pass over the shard. Default: as many as doubling from firstRound takes (4 for N = 15).",
    )
    temperature: float = _field(0.7, ge=0.0, description="Sampling temperature.")
    top_p: float = _field(0.9, gt=0.0, le=1.0, description="Nucleus sampling.")
    max_tokens: int = _field(2048, ge=8, description="Tokens per judgment; a judgment cut off here is never kept (counted as `truncated`).")
    orders: Literal["both", "random"] = _field(
        "both",
        description="`both` judges each pair with the chosen answer first and second (official "
        "code); `random` judges one random order per pair.",
    )
    balance: bool = _field(True, description="Truncate the larger of the A- and B-wins sets.")
    format: Literal["pairwise", "pointwise", "pairwise+pointwise"] = _field(
        "pairwise",
        description="What the judge learns: `pairwise` (the paper: which of two answers is better, [[A]]/[[B]]); "
        "`pointwise` (rate one answer 1-10 with a reason, RewardBench's rating prompt; a rating of each answer is "
        "kept when the chosen one is rated strictly higher); `pairwise+pointwise` (both, mixed: one model for both "
        "uses). A pointwise judge is evaluated in rating mode (docs/methods.md).",
    )


class Dpo(Model):
    """Preference optimisation over judgments (TRL's DPOTrainer)."""

    beta: float = _field(
        0.1, gt=0.0, description="How far the judge may move from the reference model (the model trained from); higher stays closer."
    )
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm", "apo_zero"] = _field(
        "sigmoid", description="TRL's `loss_type`: `sigmoid` is DPO (Rafailov et al. 2023), `ipo` IPO, `robust` rDPO, ..."
    )
    nll_weight: float = _field(
        0.0,
        ge=0.0,
        description="Add the SFT loss on the chosen judgment with this weight (> 0: DPO + NLL, as in iterative "
        "reasoning preference optimisation, Pang et al. 2024); 0: DPO alone.",
    )


class GrpoRewards(Model):
    """The reward of one sampled judgment: the weighted sum of these terms (TRL's `reward_weights`)."""

    correct: float = _field(
        1.0,
        ge=0.0,
        description="Weight of verdict correctness, J1's reward (Whitehouse et al. 2025): 1 when the verdict names the "
        "chosen answer, else 0 (an unreadable verdict is not correct). Pointwise: 1 when the chosen answer's rating is "
        "strictly higher than the rejected one's (the k-th rating of each answer in a group make one sample).",
    )
    format: float = _field(
        0.0,
        ge=0.0,
        description="Weight of a readable verdict (`[[A]]` or `[[B]]`, exactly one; a 1-10 rating at the very end), the "
        "format reward of DeepSeek-R1 (Guo et al. 2025). 0 by default, as in J1, whose reward is the verdict alone.",
    )
    consistency: float = _field(
        0.0,
        ge=0.0,
        description="Weight of J1's position-consistency reward: 1 only when the judgment and the same-numbered judgment "
        "of the pair in the other order (both orders are in the same batch) are both correct. Needs judge.format "
        "pairwise and judge.orders both; 0 (off) by default, J1's ablation of it against correctness alone.",
    )

    @model_validator(mode="after")
    def _some_reward(self) -> GrpoRewards:
        if self.correct == self.format == self.consistency == 0:
            raise ValueError("every reward weight is 0: nothing to learn (set correct > 0)")
        return self


class Grpo(Model):
    """Online RL of the judge with TRL's GRPOTrainer (docs/methods.md): each step samples a group of judgments per
    prompt from the model being trained and moves it toward the better ones in its group."""

    group_size: int = _field(
        8,
        ge=2,
        le=256,
        description="Judgments sampled per prompt (one pair in one order, or one answer to rate) at each step; each is "
        "rewarded against its group's mean. TRL GRPOConfig's `num_generations` default (8); GRPO needs at least 2.",
    )
    max_completion_tokens: int | None = _field(
        None,
        ge=8,
        description="Tokens per sampled judgment (TRL's `max_completion_length`; its default is 512). Unset: "
        "judge.maxTokens, the budget a judgment has when judged and evaluated. A cut judgment usually has no verdict "
        "and so no reward.",
    )
    beta: float = _field(
        0.001,
        ge=0.0,
        description="KL coefficient against the model trained from (a frozen reference copy): 0.001 is DeepSeek-R1's, "
        "the value TRL's GRPOConfig documentation cites; 0 (TRL's own default) loads no reference model.",
    )
    learning_rate: float = _field(
        1.0e-6, gt=0.0, description="Peak learning rate: TRL GRPOConfig's default (1e-6), as `train.learningRate`'s."
    )
    steps: int | None = _field(
        None,
        ge=1,
        description="Optimizer steps per iteration. Unset: one pass over the training pairs (every prompt sampled "
        "groupSize times once).",
    )
    temperature: float = _field(
        1.0,
        gt=0.0,
        description="Sampling temperature of the rollouts: TRL GRPOConfig's default (1.0), sampling the policy as it is.",
    )
    rewards: GrpoRewards = _field(default_factory=GrpoRewards, description="The reward terms and their weights.")


#: The linear layers of a Llama-, Qwen- or Mistral-style decoder: attention and MLP, every one.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: "LoRA Without Regret" (Schulman et al., Thinking Machines 2025): LoRA's best learning rate is
#: about 10x full fine-tuning's, across model sizes and datasets
LORA_LEARNING_RATE_FACTOR = 10.0


class Lora(Model):
    """Low-rank adapters (LoRA, Hu et al. 2021) with PEFT, as TRL takes them (`peft_config`): the seed's weights
    stay frozen, only the adapters train, and each iteration's checkpoint is its adapter (megabytes), which vLLM
    loads on the seed without merging (docs/methods.md)."""

    rank: int = _field(
        16, ge=1, le=512, description="The adapters' rank r (TRL's `lora_r` default, 16; vLLM serves ranks up to 512)."
    )
    alpha: int = _field(32, ge=1, description="LoRA's alpha: the update is scaled by alpha / rank (TRL's default, 32: a scale of 2).")
    dropout: float = _field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input (TRL's default, 0.05).")
    target_modules: list[str] = _field(
        default_factory=lambda: list(LORA_TARGETS),
        min_length=1,
        description="The modules that get an adapter, by name: by default every linear layer of a Llama-, Qwen- or "
        "Mistral-style decoder's attention and MLP (" + ", ".join(LORA_TARGETS) + "); adapting every layer, the MLP "
        "included, is what lets LoRA match full fine-tuning (QLoRA, Dettmers et al. 2023; LoRA Without Regret, 2025). "
        "`[all-linear]` is PEFT's name for every linear layer but the output head, for other architectures.",
    )
    learning_rate: float | None = _field(
        None,
        gt=0.0,
        description="Peak learning rate of the adapters. Unset: 10x the method's full fine-tuning rate "
        "(train.learningRate, or train.grpo.learningRate), the ratio LoRA Without Regret (Thinking Machines 2025) found "
        "best across sizes.",
    )
    quantize: Literal["none", "nf4"] = _field(
        "none",
        description="`nf4`: hold the frozen base in 4 bits (QLoRA, Dettmers et al. 2023: NormalFloat4, double "
        "quantization, bfloat16 compute) through bitsandbytes, a quarter of its bf16 memory: an 8B judge trains on one "
        "24 GB GPU. GPUs only (bitsandbytes is in the gpu extra and the train image); a CPU run refuses it. Generation "
        "and serving load the base as `generation.dtype` says.",
    )

    @field_validator("target_modules")
    @classmethod
    def _all_linear_alone(cls, value: list[str]) -> list[str]:
        if "all-linear" in value and len(value) > 1:
            raise ValueError("`all-linear` already names every linear layer: give it alone, or list module names")
        return value

    def learning_rate_for(self, full: float) -> float:
        """The adapters' learning rate where full fine-tuning would use `full`."""
        return self.learning_rate if self.learning_rate is not None else full * LORA_LEARNING_RATE_FACTOR


class Train(Model):
    method: Literal["sft", "dpo", "grpo"] = _field(
        "sft",
        description="`sft` (the paper): fine-tune on one correct judgment per item. `dpo`: preference "
        "optimisation on pairs of judgments of the same item, chosen = a correct verdict, rejected = a wrong "
        "or unparseable one (the judge stage then samples until it has one of each, or N). `grpo`: online RL "
        "(J1, Whitehouse et al. 2025) with TRL's GRPOTrainer: the train stage samples groups of judgments of the "
        "training pairs from the judge it trains and rewards the correct verdicts; no judge stage runs, and each "
        "iteration continues from M(i-1); docs/methods.md.",
    )
    dpo: Dpo = _field(default_factory=Dpo, description="Settings of `method: dpo`.")
    grpo: Grpo = _field(default_factory=Grpo, description="Settings of `method: grpo`.")
    init_from: Literal["seed", "previous"] = _field(
        "seed",
        description="`seed` fine-tunes the seed at every iteration (paper); `previous` continues "
        "from the last iteration's checkpoint. `method: grpo` always continues from it (its rollouts are the "
        "current judge's). With `lora`: `seed` trains a fresh adapter on the seed each iteration, `previous` "
        "continues training the previous iteration's adapter (the base is always the seed).",
    )
    lora: Lora | None = _field(
        None,
        description="Train low-rank adapters on the frozen seed instead of every weight (`lora: {}` for the defaults): "
        "the optimizer state is the adapters' alone, so a 70B judge trains on one node of 8 x 80 GB and, with "
        "`quantize: nf4` (QLoRA), an 8B judge on one 24 GB GPU; each iteration's checkpoint is its adapter plus the "
        "name of its base (PEFT's adapter_config.json), megabytes in the store. Judge, evaluate and the server load "
        "the seed once and the adapter through vLLM's LoRA support; `selftaught export` writes a merged model. "
        "Unset: full fine-tuning.",
    )
    zero_stage: Literal[0, 1, 2, 3] = _field(3, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = _field(False, description="ZeRO optimizer-state offload to CPU.")
    learning_rate: float = _field(1.0e-6, gt=0.0, description="Peak learning rate (of every weight; `lora.learningRate` is the adapters').")
    min_lr_ratio: float = _field(
        0.2, ge=0.0, le=1.0, description="Final learning rate as a fraction of the peak (cosine)."
    )
    warmup_steps: int = _field(100, ge=0, description="Linear warm-up steps.")
    epochs: float = _field(2.0, gt=0.0, description="Passes over the kept judgments.")
    micro_batch_size: int = _field(1, ge=1, description="Sequences per GPU per step.")
    gradient_accumulation: int = _field(8, ge=1, description="Micro-batches per optimizer step.")
    max_seq_len: int = _field(
        4096,
        ge=64,
        description="Examples longer than this many tokens (prompt + judgment) are dropped, not truncated "
        "(a cut judgment would lose its verdict); the train stage reports how many as `tooLong`.",
    )
    weight_decay: float = _field(0.1, ge=0.0, description="AdamW weight decay.")
    bf16: bool = _field(True, description="bfloat16 mixed precision.")
    gradient_checkpointing: bool | None = _field(
        None,
        description="Recompute activations in the backward pass (about a third more compute, far less "
        "memory). Unset: on only when the memory estimate without it does not fit the GPU "
        "(docs/speed.md); off on CPU.",
    )
    packing: bool = _field(
        False,
        description="Pack several examples into each sequence of up to `maxSeqLen` tokens (position ids "
        "restart per example, no attention across them). A micro batch is then `microBatchSize` packed "
        "sequences, so an optimizer step covers more examples: fewer, larger steps. Off: a micro batch is "
        "`microBatchSize` examples, laid end to end without padding.",
    )
    fused_kernels: bool | None = _field(
        None,
        description="Liger's fused RMSNorm, RoPE and SwiGLU kernels. Unset: on when a GPU and "
        "`liger-kernel` are present (the train image has it). The loss never materialises the "
        "tokens x vocabulary logits either way (TRL's fused LM head).",
    )
    compile: bool = _field(
        False,
        description="`torch.compile` the model: fewer, larger kernels; the first steps pay for compiling.",
    )
    nodes: int = _field(1, ge=1, description="Training nodes; >1 makes a multi-node Indexed Job.")
    gpus_per_node: int = _field(8, ge=1, description="Processes (GPUs) per training node.")
    seed: int = _field(42, description="Training seed.")
    checkpoint_every: Duration = _field(
        "10m",
        description="How often the train stage saves its full state (weights, optimizer, scheduler, random "
        "generators, position in the data) into the store while it trains, e.g. `10m`, `90s`, `1h` or seconds; "
        "`0`: never. A train stage that is preempted, loses a node or crashes continues from the newest one, so "
        "at most this much of its GPU time is lost. 10 minutes keeps that small where GPUs are reclaimed often (spot) "
        "while a checkpoint costs little of it: the steps wait only while DeepSpeed writes the state to local disk "
        "(seconds), the upload runs beside training. A graceful stop (SIGTERM: a pod deleted or drained, Ctrl-C) "
        "saves one at the next step end whatever this says.",
    )

    @property
    def checkpoint_seconds(self) -> float | None:
        """Seconds between periodic checkpoints; None: only a graceful stop saves one."""
        return duration_seconds(self.checkpoint_every) or None


class Evaluate(Model):
    benchmark: BenchmarkName = _field(
        "rewardbench",
        description="How the evaluation set is read and scored, exactly as the benchmark's official "
        "scorer does (docs/evaluation.md): " + ", ".join(f"`{b.name}` ({b.scoring})" for b in BENCHMARKS.values()) + ".",
    )
    mode: Literal["auto", "pairwise", "rating"] = _field(
        "auto",
        description="How a pair is judged: `pairwise` (one [[A]]/[[B]] verdict), or `rating` (each answer rated "
        "1-10 on its own, the higher wins, a tie or an unreadable rating scores 0.5: RewardBench's rating mode). "
        "`auto`: rating for a `judge.format: pointwise` judge, else pairwise. "
        + " and ".join(BENCHMARKS[name].title for name in benchmark_names("rated")) + " is always rated.",
    )
    baseline: bool = _field(True, description="Also evaluate the seed judge (iteration 0).")
    max_tokens: int = _field(2048, ge=8, description="Tokens per judgment (greedy).")
    position_consistency: bool = _field(
        True,
        description="Also judge the swapped order and report position-consistent accuracy "
        f"(`{'`, `'.join(benchmark_names('pairwise'))}`; `{'`, `'.join(benchmark_names('both orders'))}` always judges both orders).",
    )
    majority_vote: int = _field(
        0,
        ge=0,
        le=256,
        description="k > 0 also samples k judgments (temperature 0.7, top-p 0.9) and scores the "
        "most common verdict (paper: 32).",
    )
    early_stop: Literal["exact", "approximate", "off"] = _field(
        "exact",
        description="How a majority vote stops before k samples: `exact` as soon as the samples left cannot change its "
        "verdict (counting unparsed samples and ties as the scorer does), the same score as drawing all k; `approximate` "
        "also when the posterior probability that they change it is below `flipRisk` (saves more, may differ from the "
        "full vote); `off` always draws k (docs/evaluation.md).",
    )
    flip_risk: float = _field(
        0.01,
        gt=0,
        lt=0.5,
        description="`earlyStop: approximate`: stop a vote when the probability that its remaining samples change its verdict "
        "is below this.",
    )


#: The GPU kinds the estimate has a throughput table for (`views/estimate.py`).
GpuKind = Literal["H100", "H200", "B200", "A100", "L40S", "L4", "cpu"]


class ModelSize(Model):
    """A model's size, in billions of parameters."""

    total: float = _field(description="All parameters, in billions (70 for a 70B model).", gt=0)
    active: float | None = _field(
        None, gt=0, description="Parameters used per token, in billions, for a mixture of experts (39 for Mixtral-8x22B); the total when unset."
    )


class Throughput(Model):
    """Per-GPU rates of one GPU kind; a field left unset keeps the kind's default (docs/cost.md)."""

    decode_tflops: float | None = _field(
        None, gt=0, description="Effective TFLOP/s per GPU while vLLM generates (a generated token costs 2 x active parameters)."
    )
    prefill_tflops: float | None = _field(
        None, gt=0, description="Effective TFLOP/s per GPU while vLLM reads prompts (a prompt token costs 2 x active parameters)."
    )
    train_tflops: float | None = _field(
        None, gt=0, description="Effective TFLOP/s per GPU while training (a token costs 6 x parameters, x 4/3 with gradient checkpointing)."
    )
    load_gb_per_second: float | None = _field(
        None, gt=0, description="GB of weights a process loads per second (training also saves and uploads its checkpoint at this rate)."
    )
    start_seconds: float | None = _field(
        None, ge=0, description="Seconds a stage process takes to start before it loads weights (vLLM's engine, the training launcher)."
    )


class Estimate(Model):
    """The assumptions of the cost estimate that `selftaught plan` prints and the operator writes
    into `status.estimate`. They change nothing that runs; docs/cost.md explains each."""

    gpu: GpuKind | None = _field(
        None,
        description="GPU kind whose throughput table prices the run. Default: the `nvidia.com/gpu.product` node selector of "
        "`scheduling.generation` if it names one, else H100; `selftaught run` uses the machine's own (cpu without GPUs).",
    )
    throughput: Throughput | None = _field(None, description="Rates that replace the GPU kind's defaults.")
    instructions: int | None = _field(
        None,
        ge=1,
        description="Records in `data.instructions`, where they cannot be counted (a Hugging Face dataset, an `s3://` prefix: "
        "the operator never reads your data). Default: `data.instructions.limit`, or counted by `selftaught plan` and "
        "`selftaught run` in a local file. After categorize the measured count is used.",
    )
    evaluation_examples: int | None = _field(
        None,
        ge=1,
        description="Examples in `data.evaluation.source` where they cannot be counted. Default: counted in a local file, else the "
        "benchmark's size (" + ", ".join(f"{b.title} {b.examples:,}" for b in BENCHMARKS.values()) + ").",
    )
    selected_fraction: float = _field(
        0.3, gt=0.0, le=1.0, description="Fraction of the categorized instructions that select keeps, before `select.totalCap`."
    )
    judge_accuracy: float = _field(
        0.7,
        gt=0.0,
        lt=1.0,
        description="Mean probability that one sampled judgment is right. Items vary around it (a Beta distribution of "
        "concentration 2, as benchmarks/sampling.py simulates); it sets how many samples adaptive judging draws and how many "
        "items it keeps. After judge-1 the measured samples per item are used.",
    )
    instruction_tokens: int = _field(150, ge=1, description="Mean tokens of an instruction.")
    answer_tokens: int = _field(500, ge=1, description="Mean tokens of a generated answer (at most `pairs.maxTokens`).")
    judgment_tokens: int = _field(
        400, ge=1, description="Mean tokens of a judgment (at most `judge.maxTokens` and `evaluate.maxTokens`)."
    )
    seed_size: ModelSize | None = _field(
        None,
        description="Size of `models.seed`. Default: read from a local checkpoint's safetensors headers by `selftaught plan`, "
        "else taken from its name (`70B`, `8x22B`), else 8B.",
    )
    generator_size: ModelSize | None = _field(None, description="Size of `models.generator`, found as `seedSize` is.")


#: A Kubernetes quantity as a string: `500m`, `4`, `64Gi`, `1.5e3`.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][0-9]+)?$"
#: Label and annotation keys: an optional DNS-subdomain prefix and `/`, then a name of at most 63.
_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
#: Pod labels the operator sets or the Job controller owns: a run may not set them.
RESERVED_LABELS = frozenset({"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "job-name", "controller-uid"})
RESERVED_LABEL_PREFIXES = (f"{API_GROUP}/", "batch.kubernetes.io/")
#: Environment variables the stage process depends on: a run may not set them.
RESERVED_ENV = frozenset({"SELFTAUGHT_RUN", "SELFTAUGHT_SERVE", "SELFTAUGHT_CACHE", "SELFTAUGHT_TERMINATION_MESSAGE_PATH", "JOB_COMPLETION_INDEX", "MASTER_ADDR"})
#: Capabilities a stage container may add; every other one stays dropped.
Capability = Literal["IPC_LOCK", "SYS_RESOURCE", "SYS_NICE"]


class Quantity(metaclass=_ShownAs):
    """A resource quantity as Kubernetes takes it: an integer (`cpu: 4`) or a string (`500m`,
    `64Gi`); in the CRD, `x-kubernetes-int-or-string`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @staticmethod
    def _validate(value: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and re.match(QUANTITY_PATTERN, value):
            return value
        raise ValueError(f"{value!r} is not a quantity: an integer or a string such as 500m, 4 or 64Gi")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"x-kubernetes-int-or-string": True}


class Resources(Model):
    """Quantities as in a pod: integers (`cpu: 4`) or strings (`500m`, `64Gi`). An emptyDir model
    cache adds its `cacheSize` to the `ephemeral-storage` request unless one is given. CPU or
    memory named in neither `requests` nor `limits` is requested at the stage kind's default
    (generation: 4 CPUs and 32Gi; training: 8 and 64Gi; data: 1 and 4Gi), so no stage pod is
    BestEffort, the first evicted when a node runs short."""

    requests: dict[str, Quantity] | None = _field(
        None, description="Minimum resources, e.g. `{cpu: 4, memory: 64Gi}`: integers or quantity strings."
    )
    limits: dict[str, Quantity] | None = _field(
        None, description="Maximum resources, e.g. `{memory: 64Gi}`: integers or quantity strings."
    )


class EnvVar(Model):
    """An environment variable of the stage container, as in a pod's `env`."""

    name: str = _field(
        description="Variable name. The ones the stage process depends on (`SELFTAUGHT_RUN`, "
        "`SELFTAUGHT_CACHE`, `SELFTAUGHT_TERMINATION_MESSAGE_PATH`, `JOB_COMPLETION_INDEX`, "
        "`MASTER_ADDR`) are refused; any other the operator sets (e.g. `HF_HOME`) is replaced.",
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
    )
    value: str | None = _field(None, description="The value.")
    value_from: dict[str, Any] | None = _field(
        None,
        description="A Kubernetes EnvVarSource (`secretKeyRef`, `configMapKeyRef`, `fieldRef`, "
        "`resourceFieldRef`) instead of a value.",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ENV:
            raise ValueError(f"{value} is set by the operator")
        return value

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


class CacheVolume(Model):
    """Exactly one volume source. No hostPath: the pods are created with the operator's rights, and
    the cache would outlive the run on the node."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    persistent_volume_claim: dict[str, Any] | None = _field(
        None,
        description="A PersistentVolumeClaim (`{claimName: ...}`): a shared (ReadWriteMany) cache "
        "downloads each model once for every pod; the choice for big models.",
    )
    ephemeral: dict[str, Any] | None = _field(
        None, description="A generic ephemeral volume (`{volumeClaimTemplate: ...}`): a fresh PVC per pod."
    )
    empty_dir: dict[str, Any] | None = _field(
        None, description="An emptyDir (`{medium, sizeLimit}`); `cacheSize` is its sizeLimit when it sets none."
    )
    csi: dict[str, Any] | None = _field(None, description="An inline CSI volume (`{driver, volumeAttributes}`).")

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheVolume:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of persistentVolumeClaim, ephemeral, emptyDir, csi")
        return self

    def source(self) -> dict[str, Any]:
        """The volume source as a pod's `volumes[]` entry has it, e.g. `{"emptyDir": {...}}`."""
        return self.model_dump(by_alias=True, exclude_none=True)


class StageSecurityContext(Model):
    """The ids a stage pod runs as. The rest is fixed: non-root, the RuntimeDefault seccomp profile,
    no privilege escalation, a read-only root file system, every capability dropped (see
    `capabilities`)."""

    run_as_user: int | None = _field(
        None, ge=1, description="UID; the operator's `SELFTAUGHT_RUN_AS_USER` (1000) when unset."
    )
    run_as_group: int | None = _field(None, ge=0, description="GID; the UID when unset.")
    fs_group: int | None = _field(
        None, ge=0, description="Group that owns the mounted volumes (/cache, /tmp); the GID when unset."
    )
    platform_assigned: bool = _field(
        False,
        description="Set no UID, GID or fsGroup and let the platform assign them: OpenShift's "
        "`restricted-v2` SCC picks them from the namespace's range. The stage images work under any "
        "UID (HOME=/tmp, USER and LOGNAME are set).",
    )

    @model_validator(mode="after")
    def _ids_or_platform(self) -> StageSecurityContext:
        if self.platform_assigned and {self.run_as_user, self.run_as_group, self.fs_group} != {None}:
            raise ValueError("platformAssigned leaves the ids to the platform: set no runAsUser, runAsGroup or fsGroup")
        return self


def _check_labels(value: dict[str, str] | None, *, what: str, values: bool) -> dict[str, str] | None:
    for key, item in (value or {}).items():
        if not _QUALIFIED_NAME.match(key) or len(key) > 317:
            raise ValueError(f"{what} key {key!r} is not a valid Kubernetes name ([prefix/]name)")
        if values and not _LABEL_VALUE.match(item):
            raise ValueError(f"{what} {key}: value {item!r} is not a valid label value (63 characters at most)")
    return value


class PodOverrides(Model):
    """Where and how a stage's pods run (operator only; ignored by `selftaught run`). A stage's own
    section (`scheduling.stages.<stage>`) replaces its kind's value field by field; fields left
    unset in both take the defaults shown in their descriptions."""

    image: str | None = _field(None, description="Container image; the operator's default if empty.")
    resources: Resources | None = _field(
        None, description="Container requests/limits; GPUs are added from the stage's settings."
    )
    node_selector: dict[str, str] | None = _field(None, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] | None = _field(None, description="Pod tolerations.")
    affinity: dict[str, Any] | None = _field(None, description="Pod affinity.")
    priority_class_name: str | None = _field(None, description="Pod priorityClassName.")
    runtime_class_name: str | None = _field(
        None, min_length=1, description="Pod runtimeClassName, e.g. `nvidia` where the GPU runtime is not the default."
    )
    scheduler_name: str | None = _field(
        None, min_length=1, description="Pod schedulerName, e.g. a gang or topology-aware scheduler."
    )
    service_account_name: str | None = _field(
        None,
        description="Pod serviceAccountName (e.g. one with IRSA / workload identity for S3). Its API "
        "token is not mounted.",
    )
    image_pull_secrets: list[str] | None = _field(None, description="Names of image pull Secrets.")
    queue_name: str | None = _field(
        None, description="Kueue LocalQueue: sets the `kueue.x-k8s.io/queue-name` label."
    )
    pod_labels: dict[str, str] | None = _field(
        None,
        description="Extra pod labels, e.g. `sidecar.istio.io/inject: \"false\"`. The operator's own "
        "(`selftaught.dev/*`, `app.kubernetes.io/name`, `component`, `managed-by`) and the Job "
        "controller's (`batch.kubernetes.io/*`, `job-name`, `controller-uid`) are refused.",
    )
    pod_annotations: dict[str, str] | None = _field(
        None,
        description="Pod annotations, e.g. `k8s.v1.cni.cncf.io/networks` (Multus: an InfiniBand "
        "network), `kueue.x-k8s.io/podset-preferred-topology`, `sidecar.istio.io/inject`.",
    )
    env: list[EnvVar] | None = _field(
        None, description="Extra environment variables of the stage container (e.g. `NCCL_IB_HCA`, `NCCL_DEBUG`)."
    )
    capabilities: list[Capability] | None = _field(
        None,
        description="Accepted for older runs and ignored: a capability added to a container does not "
        "reach the stage's non-root process (kubernetes/kubernetes#56374), so every capability stays "
        "dropped. RDMA's pinned memory needs the nodes' container runtime to give containers an "
        "unlimited memlock limit (docs/install.md).",
    )
    security_context: StageSecurityContext | None = _field(
        None, description="UID, GID and fsGroup of the pods, or none for the platform to assign."
    )
    active_deadline_seconds: int | None = _field(
        None,
        ge=1,
        description="Job activeDeadlineSeconds: an attempt running longer fails (`DeadlineExceeded`, "
        "retried; a retry runs only unfinished shards). Default: generation 86400 (1 day), "
        "training 604800 (7 days), data 21600 (6 hours).",
    )
    startup_timeout_seconds: int | None = _field(
        None,
        ge=1,
        description="How long a pod of a running attempt may stay unstarted (unschedulable, image "
        "pull, volume attach) before the operator fails the attempt. Default: 1800.",
    )
    ttl_seconds_after_finished: int | None = _field(
        None, ge=0, description="Job ttlSecondsAfterFinished (the store keeps the results)."
    )
    termination_grace_period_seconds: int | None = _field(
        None,
        ge=0,
        le=3600,
        description="The stage pods' terminationGracePeriodSeconds: how long a stage may save its work after SIGTERM "
        "(a drain, a spot reclaim notice, a preemption) before it is killed. Default: from how long the stage took to "
        "save in earlier attempts or iterations (1.5x + 10 s, at least 30 s, at most 600 s; 120 s for training and 30 s "
        "for the rest until a save was measured), shown in `status.attempts.<stage>.terminationGracePeriodSeconds`.",
    )
    model_cache_volume: CacheVolume | None = _field(
        None,
        description="The volume of the model cache at /cache: exactly one of persistentVolumeClaim "
        "(shared, the choice for big models), ephemeral, emptyDir or csi; an emptyDir of "
        "`cacheSize` by default.",
    )
    cache_size: str | None = _field(
        None,
        pattern=QUANTITY_PATTERN,
        description="Size of the model cache when it is an emptyDir (its sizeLimit, and the "
        "container's ephemeral-storage request): it must hold the stage's model (a 70B model in "
        "bf16 is ~140 GB). Default: 200Gi for generation and training, 20Gi for data. Use a "
        "persistentVolumeClaim in `modelCacheVolume` for big models.",
    )
    shm_size: str | None = _field(
        None, pattern=QUANTITY_PATTERN, description="Size of the memory-backed /dev/shm."
    )
    scratch_size: str | None = _field(
        None,
        pattern=QUANTITY_PATTERN,
        description="Size of the pod's /tmp (an emptyDir: its sizeLimit, added to the container's "
        "ephemeral-storage request). A train stage writes its resumable training state and its final "
        "checkpoint there before uploading them, so training pods get one sized from the seed by "
        "default: this node's share of the ZeRO state (16 bytes per trained parameter over the nodes) "
        "twice (the one a retry downloads to resume from and the one it saves), plus the final checkpoint (2 bytes per "
        "parameter), with a quarter more, at least 10Gi. Other pods: unsized unless set.",
    )

    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIXES):
                raise ValueError(f"pod label {key} is set by the operator or the Job controller")
        return _check_labels(value, what="pod label", values=True)

    @field_validator("pod_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_labels(value, what="pod annotation", values=False)


#: What a stage kind's pods get where neither the kind nor the stage sets a field.
#: CPU and memory requests of a stage kind's pods, for each resource the user's
#: `scheduling.<kind>.resources` names neither in its requests nor in its limits: a pod with no
#: requests is BestEffort, the first the kubelet evicts under node pressure. Requests only, no
#: limits: a pod may use more where the node has it, and is not killed for it.
DEFAULT_REQUESTS: dict[str, dict[str, str]] = {
    "generation": {"cpu": "4", "memory": "32Gi"},  # vLLM's engine, tokenizer and loading the weights
    "training": {"cpu": "8", "memory": "64Gi"},  # torchrun, data loaders, saving a checkpoint
    "data": {"cpu": "1", "memory": "4Gi"},  # select: reading and writing JSONL
}

POD_DEFAULTS: dict[str, PodOverrides] = {
    "generation": PodOverrides(active_deadline_seconds=24 * 3600, startup_timeout_seconds=1800, cache_size="200Gi"),
    "training": PodOverrides(active_deadline_seconds=7 * 24 * 3600, startup_timeout_seconds=1800, cache_size="200Gi"),
    "data": PodOverrides(active_deadline_seconds=6 * 3600, startup_timeout_seconds=1800, cache_size="20Gi"),
}


def merge_overrides(base: PodOverrides, *layers: PodOverrides | None) -> PodOverrides:
    """`base` with each layer's set fields on top, field by field (a later layer wins)."""
    update: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            update.update({name: getattr(layer, name) for name in PodOverrides.model_fields if getattr(layer, name) is not None})
    return base.model_copy(update=update)


class StageOverrides(Model):
    """Per-stage pod settings, merged field by field over the stage kind's defaults."""

    categorize: PodOverrides | None = _field(None, description="Overrides for categorize pods.")
    select: PodOverrides | None = _field(None, description="Overrides for the select pod.")
    pairs: PodOverrides | None = _field(None, description="Overrides for pairs pods.")
    judge: PodOverrides | None = _field(None, description="Overrides for judge pods.")
    train: PodOverrides | None = _field(None, description="Overrides for training pods.")
    evaluate: PodOverrides | None = _field(None, description="Overrides for evaluate pods.")


class Scheduling(Model):
    generation: PodOverrides = _field(
        default_factory=PodOverrides, description="Defaults for categorize, pairs, judge, evaluate."
    )
    training: PodOverrides = _field(default_factory=PodOverrides, description="Defaults for train.")
    data: PodOverrides = _field(default_factory=PodOverrides, description="Defaults for select.")
    stages: StageOverrides = _field(
        default_factory=StageOverrides, description="Per-stage overrides, merged over the above."
    )

    def for_stage(self, kind: str, stage: str) -> PodOverrides:
        """What a stage's pods get: the kind's defaults (`POD_DEFAULTS`), the kind's section, then
        the stage's own section, field by field."""
        return merge_overrides(POD_DEFAULTS[kind], getattr(self, kind), getattr(self.stages, stage))


class Serve(Model):
    """The trained judge as an OpenAI-compatible endpoint (docs/serving.md)."""

    enabled: bool = _field(
        False,
        description="Once the run has succeeded, run vLLM's OpenAI-compatible server on the chosen "
        "checkpoint: a Deployment and a Service owned by the run, its URL in `status.serving`. "
        "Turning it off removes them.",
    )
    iteration: int | None = _field(
        None,
        ge=0,
        description="The iteration whose checkpoint is served (0: the seed); by default the trained "
        "iteration with the best evaluation (the benchmark's overall score, else accuracy; the "
        "earliest of equals, so an iteration that only ties never restarts the server).",
    )
    replicas: int = _field(1, ge=1, le=64, description="Server pods; each takes `generation.tensorParallel` GPUs.")
    rollout: Literal["surge", "recreate"] = _field(
        "surge",
        description="How a new checkpoint replaces the served one. `surge`: the new server starts beside the "
        "old one, which serves until the new one is ready (no gap, but a second set of GPUs while it loads); "
        "`recreate`: the old server stops first and its GPUs go to the new one (no second set of GPUs; "
        "nothing is served while the new one loads). `status.serving` says which iteration the ready pods serve.",
    )


class Reuse(Model):
    """Lineage and reuse across runs (docs/experiments.md): each stage's output is keyed by the
    hash of everything it depends on, and a run may link an earlier run's output of the same key
    instead of computing it again."""

    enabled: bool = _field(
        False,
        description="Before running a stage, look its key up in `reuse.index` and link the output an earlier run "
        "published under it (hard links in a folder, S3's server-side copy), checked against that run's manifest; "
        "record every stage this run finishes there. The plan and the status say which stages were reused.",
    )
    index: str | None = _field(
        None,
        description="Where the index of stage keys lives, shared by the runs that reuse each other's outputs: a "
        "folder or an `s3://` prefix. Default: `_reuse/` under `storage.uri`, so runs in one store share it.",
    )


#: the environment variables `tracking.credentialsSecret` may hold, each optional: the ones MLflow's
#: client reads (basic auth or a bearer token) and W&B's API key
TRACKING_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY")


class MlflowTracking(Model):
    """An MLflow tracking server (docs/tracking.md), through MLflow's own client."""

    tracking_uri: str = _field(
        description="The tracking server: `http(s)://host:port` (`mlflow server`, a managed MLflow), or any URI "
        "MLflow's client takes (`databricks`, `file:///path`). Credentials come from `tracking.credentialsSecret` "
        "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN), never from the spec.",
        min_length=1,
    )
    experiment: str = _field("selftaught", min_length=1, description="The experiment the run is logged to (made if missing).")
    registered_model: str | None = _field(
        None,
        description="The model registry entry the best judge's checkpoint is registered under, once the run succeeds "
        "(a version whose source is the checkpoint's store URI, with the benchmark scores as tags); empty: the run's name.",
    )


class WandbTracking(Model):
    """A Weights & Biases project (docs/tracking.md), through the `wandb` client."""

    project: str = _field(description="The W&B project.", min_length=1)
    entity: str | None = _field(None, description="The W&B entity (user or team); empty: the API key's default.")
    mode: Literal["online", "offline"] = _field(
        "online",
        description="`offline` writes the run to a local folder (`WANDB_DIR`) for `wandb sync` instead of calling W&B.",
    )


class Tracking(Model):
    """Experiment tracking of the run in MLflow and/or W&B (docs/tracking.md). Logging never fails or
    stalls a run: what could not be logged is logged at the next stage's end or by `selftaught track`."""

    mlflow: MlflowTracking | None = _field(None, description="Log the run to an MLflow tracking server.")
    wandb: WandbTracking | None = _field(None, description="Log the run to Weights & Biases.")
    credentials_secret: str | None = _field(
        None,
        description="Name of a Secret whose keys become the stage pods' environment, each optional: "
        "`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`, `MLFLOW_TRACKING_TOKEN`, `WANDB_API_KEY`. "
        "Locally, the same variables of your environment.",
    )
    timeout_seconds: int = _field(
        10,
        ge=1,
        le=300,
        description="How long one call to a tracking server may wait (MLFLOW_HTTP_REQUEST_TIMEOUT, W&B's init "
        "timeout). A server that does not answer costs a stage at most this, once: the rest waits for the next try.",
    )


class Retries(Model):
    per_stage: int = _field(
        2, ge=0, le=20, description="Times a failed stage Job is recreated before the run fails."
    )
    backoff_seconds: int = _field(
        30, ge=0, description="Wait before the first retry; doubles with each retry."
    )
    disruptions_per_stage: int = _field(
        10,
        ge=0,
        le=100,
        description="Disruptions a stage may take before the run fails with `TooManyDisruptions` (operator only): a spot "
        "node reclaimed or lost, a drain, a preemption, Kueue evicting its Job, a stage stopped on SIGTERM. They spend no "
        "retry, and one that stops several pods at once (a node's shards, a Kueue preemption) counts once. 10 lets a "
        "long stage on spot nodes ride out a reclaim every hour or so, and stops one that is evicted again and again "
        "(node pressure, workloads of higher priority) instead of redoing its work forever (docs/spot.md).",
    )


class SelfTaughtRunSpec(Model):
    """What to train: models, data, store, the method's knobs and where pods run."""

    models: Models = _field(description="Seed judge and generator.")
    data: Data = _field(description="Instructions and evaluation pairs.")
    storage: Storage = _field(description="Where data, checkpoints and manifests live.")
    iterations: int = _field(5, ge=1, le=50, description="Judge-then-train iterations (paper: 5).")
    seed: int = _field(0, description="Seed for every random choice of the method.")
    suspend: bool = _field(
        False, description="Pause: no new stage starts; running Jobs finish. Unset to resume."
    )
    generation: Generation = _field(default_factory=Generation, description="vLLM settings.")
    categorize: Categorize = _field(default_factory=Categorize, description="Categorize stage.")
    select: Select = _field(default_factory=Select, description="Select stage.")
    pairs: Pairs = _field(default_factory=Pairs, description="Response-pair stage.")
    judge: Judge = _field(default_factory=Judge, description="Judgment-annotation stage.")
    train: Train = _field(default_factory=Train, description="Fine-tuning stage.")
    evaluate: Evaluate = _field(default_factory=Evaluate, description="Evaluation stage.")
    scheduling: Scheduling = _field(
        default_factory=Scheduling, description="Pod placement per stage (operator only)."
    )
    retries: Retries = _field(default_factory=Retries, description="Stage retry policy.")
    serve: Serve = _field(
        default_factory=Serve,
        description="Serve the trained judge once the run succeeds (operator only; `selftaught serve` locally). "
        "Its pods are placed like the generation stages (`scheduling.generation`) and use the `generation` vLLM settings.",
    )
    tracking: Tracking = _field(
        default_factory=Tracking,
        description="Experiment tracking in MLflow and/or W&B: parameters, stage figures, accuracy per iteration, training "
        "curves, the report, the best judge in the model registry (docs/tracking.md).",
    )
    estimate: Estimate = _field(
        default_factory=Estimate, description="Assumptions of the cost estimate (`selftaught plan`, `status.estimate`)."
    )
    reuse: Reuse = _field(
        default_factory=Reuse, description="Reuse stage outputs of earlier runs with the same inputs and settings (docs/experiments.md)."
    )

    @model_validator(mode="after")
    def _served_iteration_exists(self) -> SelfTaughtRunSpec:
        if self.serve.iteration is not None and self.serve.iteration > self.iterations:
            raise ValueError(f"serve.iteration {self.serve.iteration} is past the run's last iteration ({self.iterations})")
        return self

    @property
    def generator_model(self) -> ModelSource:
        return self.models.generator or self.models.seed

    @property
    def evaluation_mode(self) -> Literal["pairwise", "rating"]:
        """`evaluate.mode` with `auto` resolved from what the judge learns."""
        if self.evaluate.mode != "auto":
            return self.evaluate.mode
        return "rating" if self.judge.format == "pointwise" else "pairwise"

    def train_base(self, iteration: int) -> int:
        """The iteration whose model train-`iteration` fine-tunes: the seed's (0), or with
        `train.initFrom: previous` the one before it. GRPO always trains the one before it: the judge
        whose rollouts it learns from is the judge it updates (online, as J1 does)."""
        return iteration - 1 if self.train.init_from == "previous" or self.train.method == "grpo" else 0

    @property
    def judge_stage(self) -> bool:
        """Whether an iteration has a judge stage: not with `train.method: grpo`, which samples its
        own judgments inside the train stage."""
        return self.train.method != "grpo"

    @property
    def evaluation_benchmark(self) -> BenchmarkName:
        """The benchmark the evaluation set is read and scored as: `evaluate.benchmark`, or for the
        held-out pairs (no `data.evaluation.source`) RewardBench's format with the user's subsets."""
        return self.evaluate.benchmark if self.data.evaluation.source else HELD_OUT

    @model_validator(mode="after")
    def _both_orders_is_pairwise(self) -> SelfTaughtRunSpec:
        benchmark = BENCHMARKS[self.evaluation_benchmark]
        if benchmark.asks == "both orders" and self.evaluation_mode == "rating":
            others = [name for name in BENCHMARKS if name != benchmark.name and BENCHMARKS[name].asks != "both orders"]
            raise ValueError(
                f"evaluate.benchmark {benchmark.name} is scored on pairwise verdicts in both orders; a rating-mode evaluation "
                f"(evaluate.mode, or judge.format: pointwise) is not {benchmark.title}'s: use {' or '.join(others)} data"
            )
        return self

    @model_validator(mode="after")
    def _dpo_is_pairwise(self) -> SelfTaughtRunSpec:
        if self.train.method == "dpo" and self.judge.format != "pairwise":
            raise ValueError(
                f"train.method dpo learns from pairs of pairwise judgments; judge.format is {self.judge.format!r}: "
                "set judge.format: pairwise, or train.method: sft"
            )
        return self

    @model_validator(mode="after")
    def _grpo_rewards_fit_the_format(self) -> SelfTaughtRunSpec:
        if self.train.method != "grpo":
            return self
        if self.judge.format == "pairwise+pointwise":
            raise ValueError(
                "train.method grpo trains one judge format at a time; judge.format is 'pairwise+pointwise': "
                "set judge.format: pairwise or pointwise"
            )
        if self.train.grpo.rewards.consistency > 0 and (self.judge.format != "pairwise" or self.judge.orders != "both"):
            raise ValueError(
                "train.grpo.rewards.consistency rewards a pair judged right in both orders: it needs judge.format: pairwise "
                f"and judge.orders: both (they are {self.judge.format!r} and {self.judge.orders!r}); or set it to 0"
            )
        return self


#: An RFC 1123 label, what Kubernetes requires of a namespace (and what we require of a run's name,
#: which becomes part of Job, Service and pod names).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ObjectMeta(BaseModel):
    """The part of metadata a run uses; everything else is kept and ignored."""

    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str = "default"
    generation: int | None = None
    uid: str | None = None

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        """Both name the run's folder in the store (`<uri>/<namespace>/<name>/`): `../x` must never
        get that far."""
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"{value!r} is not a valid Kubernetes name: at most 63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (RFC 1123 label)"
            )
        return value


class SelfTaughtRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_version: Annotated[Literal["selftaught.dev/v1alpha1"], Field(alias="apiVersion")]
    kind: Literal["SelfTaughtRun"]
    metadata: ObjectMeta
    spec: SelfTaughtRunSpec
    status: dict[str, Any] | None = None
