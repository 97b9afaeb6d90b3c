"""`SelfTaughtRun` status, per the Kubernetes API conventions. Small and bounded whatever the
dataset: the full history lives in the store, never in etcd."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from selftaught.api.spec import Model


#: the run's phase (`status.phase`), derived from its conditions for display (no docstring: the
#: CRD's schema of the field is its enum and the field's own description, as for a Literal)
class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: the run does nothing more until it is edited."""
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class Condition(Model):
    type: str = Field(description="Succeeded, Ready, Reconciling, Stalled, Suspended or SpecAccepted.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason a program can match.")
    message: str = Field("", description="What happened, for a human.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="Generation this condition describes.")


class StageProgress(Model):
    stage: str = Field(description="The stage, e.g. judge-2.")
    shards_done: int = Field(0, description="Finished shards.")
    shards: int = Field(1, description="All shards of the stage.")
    attempt: int = Field(0, description="Retry number of the stage's current Job (0 = first try).")
    job: str | None = Field(None, description="Name of the stage's current Job.")
    waiting: str | None = Field(
        None, description="Why the Job's pods are not running: queued in Kueue, or a startup problem such as ImagePullBackOff."
    )


class IterationSummary(Model):
    iteration: int = Field(description="0 is the seed judge's baseline evaluation.")
    tried: int | None = Field(None, description="Items (pair x order) the judge annotated.")
    kept: int | None = Field(None, description="Items with a correct judgment kept for training.")
    keep_rate: float | None = Field(None, description="kept / tried.")
    truncated: int | None = Field(None, description="Sampled judgments cut off at judge.maxTokens (never kept).")
    evaluated: str | None = Field(
        None, description="What the judge was evaluated on: a benchmark (RewardBench, RewardBench 2, JudgeBench), `held-out pairs` or `custom set`."
    )
    evaluation_examples: int | None = Field(None, description="Examples the judge was evaluated on (n of its accuracy).")
    accuracy: float | None = Field(None, description="Mean per-example score on the evaluation set (1 right, 0 wrong, 0.5 unparseable).")
    accuracy_interval: list[float] | None = Field(
        None, description="95% interval of `accuracy` [low, high] (Wilson's, over its examples).", min_length=2, max_length=2
    )
    overall: float | None = Field(
        None, description="The benchmark's overall score as its official scorer computes it (RewardBench: mean of four sections)."
    )
    overall_interval: list[float] | None = Field(
        None, description="95% interval of `overall` [low, high] (a bootstrap over examples where it weights subsets).", min_length=2, max_length=2
    )
    position_consistent: float | None = Field(None, description="Correct in both response orders.")
    both_orders: float | None = Field(None, description="Accuracy over both response orders of the pairs judged in both (the mean of each order's).")
    majority_vote: float | None = Field(None, description="Accuracy of the majority verdict over k samples.")
    vote_samples_per_example: float | None = Field(
        None, description="Samples the majority vote drew per example (at most evaluate.majorityVote; fewer when it stopped once decided)."
    )
    vote_tokens_saved: int | None = Field(
        None, description="Tokens the majority vote did not generate by stopping once decided (evaluate.earlyStop), at its samples' mean length."
    )
    checkpoint: str | None = Field(None, description="URI of this iteration's checkpoint.")
    adapter_of: str | None = Field(
        None, description="train.lora: the checkpoint is a LoRA adapter of this model (the seed), loaded on it to judge, evaluate and serve."
    )
    reward: float | None = Field(None, description="train.method grpo: the mean reward of the judgments sampled while training.")
    train_accuracy: float | None = Field(
        None, description="train.method grpo: the fraction of the judgments sampled while training whose verdict was right."
    )
    judge_tokens_per_second_per_gpu: float | None = Field(
        None, description="The judge stage's generated tokens per second per GPU, while generating."
    )
    train_tokens_per_second_per_gpu: float | None = Field(
        None, description="The train stage's trained tokens (prompt + judgment) per second per GPU."
    )


class StageFailure(Model):
    attempt: int = Field(description="The attempt (0 = first try) that failed.")
    reason: str = Field(description="CamelCase reason, e.g. ImagePullBackOff, NoTrainingData, JobDeleted.")
    message: str = Field("", description="What happened, for a human.")
    at: str | None = Field(None, description="When the failure was seen (RFC 3339).")
    permanent: bool = Field(False, description="Retrying with the same spec cannot help.")
    generation: int = Field(0, description="The run's metadata.generation when it failed.")


class Disruption(Model):
    """One disruption of a stage's pods and the work it cost (docs/spot.md); the store keeps the
    same record under `<stage>/_disruptions/`."""

    cause: str = Field(description="NodeLost, NodeShutdown, Eviction, Preemption, KueuePreemption or Stopped (docs/spot.md).")
    reason: str = Field(
        "",
        description="What the cluster said: the pod's DisruptionTarget reason (DeletionByTaintManager, DeletionByPodGC, "
        "TerminationByKubelet, EvictionByEvictionAPI, PreemptionByScheduler), Kueue's Stopped, or the stage's own Disrupted.",
    )
    message: str = Field("", description="The disrupting component's message.")
    at: str | None = Field(None, description="When it happened (RFC 3339).")
    job: str | None = Field(None, description="The stage's Job (its attempt) whose pods were stopped.")
    node: str | None = Field(None, description="The node the pods ran on.")
    pods: list[str] = Field(
        default_factory=list, description="The pods it stopped: each is counted once, and pods stopped together (a node's shards) are one disruption."
    )
    shards: list[int] = Field(default_factory=list, description="Their shards (completion indexes).")
    redone: float | None = Field(None, description="Steps or samples done again: done minus the newest saved state's; absent when unknown.")
    unit: str | None = Field(None, description="steps (training) or samples (generation).")
    seconds: float = Field(0.0, description="Work lost, in seconds: since the newest saved state (else since work began) to the last progress.")
    gpus: int = Field(0, description="The GPUs whose work was lost (a pod's, or a multi-node training Job's in all).")
    gpu_seconds: float = Field(0.0, description="seconds times gpus, summed over the pods it stopped.")
    saved: bool = Field(False, description="Whether a saved state (a checkpoint, a shard's written items) bounded the loss.")


class StageAttempts(Model):
    attempts: int = Field(0, description="Jobs created for the stage so far.")
    disruptions: int = Field(
        0,
        description="Disruptions of the stage's pods (a reclaimed or lost node, a drain, a preemption, Kueue, a stage stopped on "
        "SIGTERM); past retries.disruptionsPerStage the run fails with TooManyDisruptions.",
    )
    disrupted_attempts: int | None = Field(
        None, description="Attempts ended by a disruption (a multi-node training Job, a stage stopped on SIGTERM): they spend no retry."
    )
    lost_gpu_seconds: float | None = Field(None, description="GPU-seconds of work the stage's disruptions made it do again.")
    disrupted: list[Disruption] | None = Field(
        None, description="Each disruption counted, oldest first (at most retries.disruptionsPerStage + 1)."
    )
    termination_grace_period_seconds: int | None = Field(
        None, description="The terminationGracePeriodSeconds of the latest Job's pods: how long a stage may save after SIGTERM."
    )
    grace_period_basis: str | None = Field(
        None, description="Where that grace period comes from: the spec, the time the stage took to save before, or the default."
    )
    created_at: str | None = Field(None, description="When the latest Job was created (RFC 3339).")
    last_failure: StageFailure | None = Field(None, description="The stage's latest failed attempt.")


class RunDisruptions(Model):
    count: int = Field(0, description="Disruptions of all stages.")
    gpu_seconds: float = Field(0.0, description="GPU-seconds of work they made the run do again.")
    causes: dict[str, int] = Field(default_factory=dict, description="How many of each cause (docs/spot.md).")
    message: str | None = Field(None, description="The same, in one line.")


class RunProgress(Model):
    stage: str = Field(description="The running stage shown (of several, the one with the most time left).")
    percent: float | None = Field(
        None,
        description="How much of the stage is done, 0-100: of its generated samples (judge: of its judge.samples budget per item, "
        "an item kept early counting its unused samples as done) or of its training steps.",
    )
    done: int = Field(0, description="Units done (samples or steps).")
    total: int | None = Field(None, description="Units in all; unstarted shards are taken to be as big as the started ones.")
    unit: str = Field("samples", description="samples (generation) or steps (training).")
    shards_done: int = Field(0, description="Finished shards.")
    shards: int = Field(1, description="All shards of the stage.")
    tokens_per_second: float | None = Field(None, description="Generated tokens per second of the running shards together.")
    reward: float | None = Field(None, description="A GRPO train stage: the mean reward of its newest sampled judgments.")
    accuracy: float | None = Field(
        None, description="A GRPO train stage: the fraction of its newest sampled judgments whose verdict is right (training pairs)."
    )
    eta_seconds: int | None = Field(None, description="Seconds left at the running shards' rate, as of updatedAt.")
    eta: str | None = Field(None, description="etaSeconds for people, e.g. 1h02m (a printer column).")
    updated_at: str | None = Field(None, description="When the stage last wrote progress (RFC 3339).")


class RunCompletion(Model):
    """The whole run at a glance, for `kubectl get selftaughtruns`."""

    stages: str = Field(description="Finished stages of all, e.g. 4/10.")
    percent: float | None = Field(
        None, description="How much of the run is done, 0-100, of its stage times added up (finished stages measured, running ones by their progress)."
    )
    progress: str | None = Field(None, description="percent for people, e.g. 37% (a printer column).")
    eta_seconds: int | None = Field(
        None,
        description="Seconds the whole run has left: the longest chain of stages still to run, each estimated (a running one "
        "by its own progress); stages that can run at once count once.",
    )
    eta: str | None = Field(None, description="etaSeconds for people, e.g. 2h10m (a printer column).")


class RunEstimate(Model):
    gpu: str = Field(description="GPU kind whose throughput table prices the run (spec.estimate.gpu).")
    gpu_hours: float | None = Field(None, description="GPU-hours of the whole run: measured for finished stages, estimated for the rest.")
    remaining_gpu_hours: float | None = Field(None, description="GPU-hours of the stages not finished yet.")
    hours: float | None = Field(None, description="Hours of the stages' running times added up (stages that can overlap are counted apart).")
    generated_tokens: int | None = Field(None, description="Tokens the run generates in all.")
    judge_tokens_fixed_n: int | None = Field(
        None, description="Tokens the judge stages would generate sampling judge.samples every time (adaptive sampling saves the difference)."
    )
    vote_tokens_all_k: int | None = Field(
        None,
        description="Tokens the evaluate stages would generate drawing all evaluate.majorityVote samples of every vote (stopping "
        "votes once decided saves the difference).",
    )
    measured_stages: int = Field(0, description="Finished stages whose measured numbers the estimate uses.")
    reused: list[str] = Field(
        default_factory=list, description="Stages linked from an earlier run with the same stage key instead of run (spec.reuse)."
    )
    saved_gpu_hours: float | None = Field(None, description="GPU-hours the reused stages would have cost.")
    message: str | None = Field(None, description="What the estimate rests on, or why there is none yet.")


class ServingStatus(Model):
    """The judge's server as the operator last saw it (docs/serving.md)."""

    endpoint: str | None = Field(
        None, description="The OpenAI-compatible base URL inside the cluster (`selftaught judge --endpoint`; `kubectl port-forward` from outside)."
    )
    model: str | None = Field(None, description="The model name the server answers to (the run's name).")
    iteration: int | None = Field(None, description="The iteration whose checkpoint is served (0: the seed).")
    checkpoint: str | None = Field(None, description="URI of the served checkpoint.")
    score: float | None = Field(None, description="That iteration's evaluation: the benchmark's overall score, else accuracy.")
    ready: bool = Field(False, description="Whether a server pod answers its readiness probe (vLLM's /health).")
    replicas: str | None = Field(None, description="Ready server pods out of those wanted, e.g. 1/1.")
    message: str | None = Field(None, description="What the server is doing, or why nothing is served.")


class SelfTaughtRunStatus(Model):
    observed_generation: int | None = Field(None, description="The metadata.generation last reconciled.")
    phase: Phase | None = Field(None, description="Derived from the conditions, for display.")
    stage: str | None = Field(None, description="The stage the run is at (derived).")
    iteration: int | None = Field(None, description="The iteration the run is at (derived).")
    message: str | None = Field(None, description="One line on what is happening.")
    latest_accuracy: float | None = Field(None, description="Accuracy of the newest evaluated judge.")
    latest_overall: float | None = Field(
        None, description="The benchmark's overall score (as its official scorer computes it) of the newest evaluated judge."
    )
    store: str | None = Field(None, description="URI of the run's folder in the store.")
    report: str | None = Field(
        None,
        description="URI of the run's HTML report (plots and numbers): the stage process that finishes the run writes it there "
        "(`selftaught report` renders it again).",
    )
    started_at: str | None = Field(None, description="When the operator first saw the run.")
    completed_at: str | None = Field(None, description="When the run succeeded or failed.")
    store_unreachable_since: str | None = Field(
        None, description="Since when the operator cannot reach the store (cleared when it can)."
    )
    tracking: list[str] | None = Field(
        None,
        description="What the run's tracking servers (`spec.tracking`) have not got, one sentence per server: how many "
        "items, which, and the error. The next stage to finish tries again; `selftaught track` logs them after the fact.",
    )
    ignored_fields: list[str] | None = Field(
        None, description="Spec fields this operator version does not know and ignores (a CRD newer than the operator)."
    )
    completion: RunCompletion | None = Field(None, description="How much of the whole run is done and how long it has left.")
    progress: RunProgress | None = Field(None, description="How far the running stage is, and how long it has left.")
    serving: ServingStatus | None = Field(None, description="The judge's server (`spec.serve`): its endpoint and whether it is ready.")
    estimate: RunEstimate | None = Field(
        None, description="What the run costs: estimated when the spec is accepted, corrected with each finished stage (docs/cost.md)."
    )
    disruptions: RunDisruptions | None = Field(
        None, description="What disrupted the run's pods and the work that cost, over all stages (status.attempts.<stage> has each)."
    )
    stages_done: int | None = Field(None, description="Finished stages.")
    stages_total: int | None = Field(None, description="All stages of the run.")
    active: list[StageProgress] = Field(default_factory=list, description="Stages running now.")
    attempts: dict[str, StageAttempts] = Field(
        default_factory=dict,
        description="Per stage: the Jobs created (each an attempt, counted at creation so retries stay bounded "
        "even when Jobs vanish) and the last failure.",
    )
    iterations: list[IterationSummary] = Field(
        default_factory=list, description="The newest 10 iterations' numbers; the store has all."
    )
    skipped: dict[str, int] | None = Field(
        None,
        description="Input records each finished stage skipped under onBadRecord: skip (malformed lines, records "
        "without the field, prompts too long for the model's context), by stage; the stage's manifest in the store "
        "keeps the first reasons with file and line.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard conditions, one per type.",
        # a map keyed by type, as metav1.Condition lists are: server-side apply merges by type
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
