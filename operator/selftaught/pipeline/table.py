"""The one table of stages, and references to one stage of one iteration.

Every "which stages are there, which are sharded, which train, which image runs them" question
is answered here, so adding a stage is one row, not a hunt through both executors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selftaught.store import layout

StageName = Literal["categorize", "select", "pairs", "judge", "train", "evaluate"]
#: Which `spec.scheduling` section places a stage's pods, and so which GPUs it asks for.
StageKind = Literal["generation", "training", "data"]
Engine = Literal["vllm", "deepspeed"]
Image = Literal["generate", "train", "data"]


@dataclass(frozen=True)
class StageInfo:
    name: StageName
    kind: StageKind
    image: Image
    #: a map over `generation.shards` shards (one per Indexed-Job completion index), then a reduce
    sharded: bool
    engine: Engine | None
    #: the first iteration the stage runs in; None for the stages that run once, before iterating
    first_iteration: int | None = None
    #: what the stage reports per iteration: a manifest summary key (the same key in
    #: `status.iterations[]`), or (summary key, status key) where stages share a summary key
    reports: tuple[str | tuple[str, str], ...] = field(default=())
    #: the version of what the stage writes: bump it when a change of the stage's code changes its
    #: output (format or logic), so reuse across runs (`pipeline/lineage.py`) stops handing out
    #: outputs the old code wrote. Not the package's version: most releases change no output.
    version: int = 1

    @property
    def per_iteration(self) -> bool:
        return self.first_iteration is not None


#: In execution order within an iteration.
STAGES: tuple[StageInfo, ...] = (
    StageInfo("categorize", "generation", "generate", sharded=True, engine="vllm"),
    StageInfo("select", "data", "data", sharded=False, engine=None),
    StageInfo("pairs", "generation", "generate", sharded=True, engine="vllm"),
    StageInfo("judge", "generation", "generate", sharded=True, engine="vllm", first_iteration=1, reports=("tried", "kept", "keepRate", "truncated", ("tokensPerSecondPerGpu", "judgeTokensPerSecondPerGpu"))),
    StageInfo(
        "train", "training", "train", sharded=False, engine="deepspeed", first_iteration=1,
        reports=("checkpoint", "adapterOf", ("tokensPerSecondPerGpu", "trainTokensPerSecondPerGpu"), "reward", "trainAccuracy"),
    ),
    StageInfo(
        "evaluate", "generation", "generate", sharded=True, engine="vllm", first_iteration=0,
        reports=(
            "evaluated", ("examples", "evaluationExamples"), "accuracy", "accuracyInterval", "overall", "overallInterval", "positionConsistent",
            "bothOrders", "majorityVote", "voteSamplesPerExample", "voteTokensSaved",
        ),
    ),
)  # fmt: skip
BY_NAME: dict[str, StageInfo] = {info.name: info for info in STAGES}
ORDER: dict[str, int] = {info.name: index for index, info in enumerate(STAGES)}
STAGE_NAMES: tuple[str, ...] = tuple(BY_NAME)


@dataclass(frozen=True, order=True)
class StageRef:
    """One stage of one iteration (iteration 0 for the stages that run once, and the baseline)."""

    name: StageName
    iteration: int = 0

    def __post_init__(self) -> None:
        info = BY_NAME.get(self.name)
        if info is None:
            raise ValueError(f"unknown stage {self.name!r}; stages are {', '.join(STAGE_NAMES)}")
        if info.per_iteration and self.iteration < info.first_iteration:  # type: ignore[operator]
            raise ValueError(f"{self.name} needs an iteration >= {info.first_iteration}, got {self.iteration}")
        if not info.per_iteration and self.iteration != 0:
            raise ValueError(f"{self.name} has no iteration")

    @property
    def info(self) -> StageInfo:
        return BY_NAME[self.name]

    @property
    def sharded(self) -> bool:
        return self.info.sharded

    @property
    def kind(self) -> StageKind:
        return self.info.kind

    @property
    def label(self) -> str:
        """Human and Kubernetes friendly: `judge-1`, `categorize`."""
        return f"{self.name}-{self.iteration}" if self.info.per_iteration else self.name

    @property
    def prefix(self) -> str:
        return layout.stage_prefix(self.name, self.iteration if self.info.per_iteration else None)

    @property
    def manifest_key(self) -> str:
        return layout.manifest_key(self.prefix)

    def shard_manifest_key(self, shard: int) -> str:
        return layout.shard_marker_key(self.prefix, shard)

    @classmethod
    def parse(cls, label: str) -> StageRef:
        """`judge-1` -> StageRef("judge", 1); raises ValueError for anything else."""
        name, _, iteration = label.partition("-")
        return cls(name, int(iteration) if iteration else 0)  # type: ignore[arg-type]

    @classmethod
    def from_prefix(cls, prefix: str) -> StageRef | None:
        """The stage whose folder `prefix` is, if any (used when scanning the store)."""
        parsed = layout.parse_stage_prefix(prefix)
        if parsed is None or parsed[0] not in BY_NAME:
            return None
        name, iteration = parsed
        if BY_NAME[name].per_iteration != (iteration is not None):
            return None
        try:
            return cls(name, iteration or 0)  # type: ignore[arg-type]
        except ValueError:
            return None
