"""Where each stage's outputs and done-markers live inside a run's store.

```
run.json                                        spec snapshot
lease.json                                      who runs the run now (the local runner)
categorize/attempt-3f9c…/shard-00000.jsonl      one file per shard, under the attempt that wrote it
categorize/_shards/00000.json                   shard done-marker (counts, sha256, seconds, which file)
categorize/_manifest.json                       stage done-marker (names the winning attempt)
categorize/_progress/00000.json                 how far a running shard is (done, total, tokens; rewritten every few seconds)
categorize/_saved/00000/attempt-…/part-00000.jsonl  what a running shard's engine has answered so far, saved as it goes
categorize/_disruptions/<pod or local-…>.json   a disruption of the stage: its cause and the work it cost (store/disruptions.py)
categorize/_failures/local-….json               a failed attempt of the local runner: reason, message, its log (store/failures.py)
categorize/_logs/local-…[-shard-00000].log      a local stage process's log, one per process, never overwritten
select/attempt-…/selected.jsonl
pairs/attempt-…/train.jsonl  pairs/attempt-…/heldout.jsonl
iter-001/judge/attempt-…/sft.jsonl              the kept, balanced judgments (train.method: sft)
iter-001/judge/attempt-…/dpo.jsonl              a right and a wrong judgment per item, balanced (train.method: dpo)
iter-001/judge/attempt-…/judged.jsonl           samples drawn and correct per item tried (sizes iter-002's rounds)
iter-001/train/attempt-…/checkpoint/            HF checkpoint (safetensors, tokenizer, chat template)
iter-001/train/attempt-…/resume/checkpoint-120/ the full training state a retry continues from (the
                                                Trainer's checkpoint, _complete.json last); never published
iter-001/evaluate/attempt-…/metrics.json        iter-000/evaluate is the seed judge's baseline
report/index.html                               the run's report, plots inside
tracking/mlflow-…/logged/stage.judge-1.json     what was logged to a tracking server, and what could not be (failed.json)
```
Every stage process writes under its own attempt folder and publishes by creating the done-marker
only if it does not exist yet (a conditional write): of two processes of one stage (an orphan and
its replacement, an old pod that outlived its Job) exactly one wins, the loser removes its own
folder, and the winner's outputs are never touched by anyone else. Readers resolve an output
through the marker (`published_key`); stores written before attempts existed have no attempt in
their markers and keep their outputs at the stage folder's top.
Keys are built from a stage's name and, for the stages of an iteration, its number; which stages
have iterations is the pipeline's stage table's business, not the store's.
"""

from __future__ import annotations

MANIFEST = "_manifest.json"
SHARD_MARKERS = "_shards"
#: progress objects of a running stage, one per shard: outside every attempt folder, so the
#: stale-attempt cleanup never removes them and a retry overwrites its predecessor's
PROGRESS = "_progress"
#: a running shard's finished engine requests, saved as it goes (`stages/shard_resume.py`), one
#: folder per shard and in it one per attempt: the next attempt of the shard finds every earlier
#: attempt's parts with one listing, and two attempts never write the same part
SAVED = "_saved"
#: one record per disruption of a stage (a reclaimed node, a drain, a preemption, a stopped
#: `selftaught run`), written by whichever executor saw it: outside every attempt folder too
DISRUPTIONS = "_disruptions"
#: the local runner's record of each failed attempt of a stage (`store/failures.py`)
FAILURES = "_failures"
#: the log of each stage process the local runner started, one object per process
LOGS = "_logs"
REPORT = "report/index.html"
#: what of the run was logged to its tracking servers (views/tracking/ledger.py)
TRACKING = "tracking/"


def stage_prefix(name: str, iteration: int | None = None) -> str:
    """`categorize`, or `iter-001/judge` for a stage of an iteration."""
    return name if iteration is None else f"iter-{iteration:03d}/{name}"


def parse_stage_prefix(prefix: str) -> tuple[str, int | None] | None:
    """The inverse of `stage_prefix`, or None for a key that is not a stage folder."""
    parts = prefix.split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 2 and parts[0].startswith("iter-") and parts[0][5:].isdigit():
        return parts[1], int(parts[0][5:])
    return None


def manifest_key(prefix: str) -> str:
    return f"{prefix}/{MANIFEST}"


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.jsonl"


def shard_marker_key(prefix: str, shard: int) -> str:
    return f"{prefix}/{SHARD_MARKERS}/{shard:05d}.json"


def progress_key(prefix: str, shard: int) -> str:
    return f"{prefix}/{PROGRESS}/{shard:05d}.json"


def saved_folder(prefix: str, shard: int) -> str:
    """Where every attempt of shard `shard` saves its finished requests."""
    return f"{prefix}/{SAVED}/{shard:05d}"


def saved_part_key(prefix: str, shard: int, attempt: str, number: int) -> str:
    return f"{saved_folder(prefix, shard)}/{attempt}/part-{number:05d}.jsonl"


def is_saved(prefix: str, key: str) -> bool:
    """Whether `key` is a saved part of a shard of the stage at `prefix`."""
    return key.startswith(f"{prefix}/{SAVED}/")


def disruption_key(prefix: str, name: str) -> str:
    return f"{prefix}/{DISRUPTIONS}/{name}.json"


def failure_key(prefix: str, name: str) -> str:
    return f"{prefix}/{FAILURES}/{name}.json"


def log_key(prefix: str, name: str) -> str:
    return f"{prefix}/{LOGS}/{name}.log"


ATTEMPT_PREFIX = "attempt-"


def output_key(prefix: str, attempt: str | None, name: str) -> str:
    """Where an attempt of the stage at `prefix` writes `name`."""
    return f"{prefix}/{attempt}/{name}" if attempt else f"{prefix}/{name}"


#: a train attempt's checkpoints of its full state, for the next attempt to continue from
RESUME = "resume"


def resume_folder(prefix: str, attempt: str) -> str:
    """Where an attempt of the train stage at `prefix` keeps the checkpoints it resumes from."""
    return output_key(prefix, attempt, RESUME)


def published_folder(uri: str) -> tuple[str, str, str] | None:
    """(the stage's folder, the attempt, the output's name) of the URI or path of an output folder
    a stage published (`<stage folder>/attempt-…/checkpoint`), whose marker is the stage folder's
    `_manifest.json`; None for any other folder."""
    parts = uri.rstrip("/").split("/")
    if len(parts) < 3 or not parts[-2].startswith(ATTEMPT_PREFIX) or not parts[-1]:
        return None
    return "/".join(parts[:-2]), parts[-2], parts[-1]


def attempt_of(prefix: str, key: str) -> str | None:
    """The attempt folder `key` lies in, if it lies in one of the stage at `prefix`."""
    head = key.removeprefix(f"{prefix}/").split("/", 1)[0]
    return head if key.startswith(f"{prefix}/") and head.startswith(ATTEMPT_PREFIX) else None


RUN_SNAPSHOT = "run.json"
LEASE = "lease.json"
CATEGORIZED = manifest_key(stage_prefix("categorize"))

# The outputs later stages read, as (stage folder, name): resolve with `manifest.published_key`.
SELECTED = (stage_prefix("select"), "selected.jsonl")
PAIRS_TRAIN = (stage_prefix("pairs"), "train.jsonl")
PAIRS_HELDOUT = (stage_prefix("pairs"), "heldout.jsonl")


def sft_output(iteration: int) -> tuple[str, str]:
    return stage_prefix("judge", iteration), "sft.jsonl"


def judged_output(iteration: int) -> tuple[str, str]:
    """Every item the judge tried, with the samples it drew and how many were correct."""
    return stage_prefix("judge", iteration), "judged.jsonl"


def checkpoint_output(iteration: int) -> tuple[str, str]:
    return stage_prefix("train", iteration), "checkpoint"


def preference_output(iteration: int) -> tuple[str, str]:
    """`train.method: dpo`: per kept item, a correct and an incorrect judgment of it."""
    return stage_prefix("judge", iteration), "dpo.jsonl"


def metrics_output(iteration: int) -> tuple[str, str]:
    return stage_prefix("evaluate", iteration), "metrics.json"
