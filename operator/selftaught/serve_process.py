"""`selftaught serve`: the judge's server on this machine. For a run file or a run's folder in its
store it chooses the checkpoint (`pipeline/served.py`); a server pod gets the operator's choice
in `SELFTAUGHT_SERVE`. Either way the checkpoint is fetched as stages fetch models (the model
cache, `engines/models.py`), then this process becomes vLLM's OpenAI-compatible server.

A LoRA checkpoint (`train.lora`) is served as what it is, an adapter on its base: vLLM loads the
base once and the adapter beside it (`--lora-modules`), never merged. Several iterations' adapters
can share one server, each answering to its own name (`iteration_name`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from selftaught.api.load import load_run
from selftaught.engines.adapters import read_adapter, vllm_max_rank
from selftaught.engines.generation import cpu_environment
from selftaught.engines.models import LocalCheckpoint, resolve_checkpoint
from selftaught.engines.server import server_command
from selftaught.errors import InvalidInput
from selftaught.pipeline.scan import iteration_summaries, scan
from selftaught.pipeline.served import ALL_ITERATIONS, ServedIteration, ServedModel, choose, iteration_name, served_model
from selftaught.views.overview import open_run


def served_from_run(target: str, *, iteration: int | None = None, iterations: Sequence[int] = (), endpoint: str | None = None) -> ServedModel:
    """What to serve of the run in `target` (a run file, or `<storage.uri>/<namespace>/<name>`):
    `iteration` (or the first of `iterations`, the others served beside it), else the run's
    `serve.iteration`, else its best evaluated checkpoint."""
    if Path(target).is_file():
        run, store = open_run(load_run(Path(target)))
    else:
        run, store = open_run(None, target, endpoint=endpoint)
        if endpoint:  # the store's address as given here, where the recorded one may not reach
            storage = run.spec.storage.model_copy(update={"endpoint": endpoint})
            run = run.model_copy(update={"spec": run.spec.model_copy(update={"storage": storage})})
    summaries = iteration_summaries(scan(store), limit=ALL_ITERATIONS)
    wanted = [iteration] if iteration is not None else list(dict.fromkeys(iterations))
    first = wanted[0] if wanted else run.spec.serve.iteration
    served = served_model(run, choose(summaries, run.spec.models.seed, first))
    beside = [ServedIteration(iteration=i, model=choose(summaries, run.spec.models.seed, i).model) for i in wanted[1:]]
    return served.model_copy(update={"beside": beside}) if beside else served


def describe(served: ServedModel) -> str:
    what = "the seed" if served.iteration == 0 else f"iteration {served.iteration}"
    return f"{what} of run {served.name} ({served.model.source})"


@dataclass(frozen=True)
class ServerPlan:
    """What one vLLM server holds: a model, the names it answers to, and LoRA adapters on it by name."""

    model: Path
    names: list[str]
    adapters: dict[str, Path]
    max_lora_rank: int = 16


def server_plan(served: ServedModel, local: Sequence[tuple[int, LocalCheckpoint]]) -> ServerPlan:
    """Names for what `served` serves, resolved here (`local`: each iteration's checkpoint, the
    chosen one first). The chosen checkpoint answers to the run's name, as it always has. A LoRA
    adapter is served on its base, which answers to `<run>-iteration-0` (the seed). Served with
    others, each iteration also answers to `<run>-iteration-<i>`; all must be adapters of one base."""
    (chosen, first), *others = local
    for iteration, checkpoint in others:
        if checkpoint.base != first.base:
            what = "a full model" if checkpoint.adapter is None else f"an adapter of {checkpoint.base}"
            raise InvalidInput(
                f"iteration {iteration} is {what}, not a LoRA adapter of {first.base}: vLLM serves one model per server, with "
                "LoRA adapters of it beside; serve the iterations of a train.lora run together, or one at a time"
            )
    if first.adapter is None:
        names = [served.name] + ([iteration_name(served.name, chosen)] if others else [])
        adapters: dict[str, Path] = {}
    else:
        names = [iteration_name(served.name, 0)]  # a run's adapters are adapters of its seed
        adapters = {served.name: first.adapter}
    for iteration, checkpoint in local if others else ():
        if checkpoint.adapter is not None:
            adapters[iteration_name(served.name, iteration)] = checkpoint.adapter
    rank = max((read_adapter(path).rank for path in adapters.values()), default=1)
    return ServerPlan(first.base, names, adapters, vllm_max_rank(rank))


def exec_server(served: ServedModel, *, host: str, port: int, say: Callable[[str], None] = print) -> NoReturn:
    """Fetch the checkpoints (a LoRA adapter and its base), then replace this process with vLLM's
    server (signals reach it, and in a pod it is the container's main process)."""
    wanted = [(served.iteration, served.model), *((other.iteration, other.model) for other in served.beside or ())]
    plan = server_plan(served, [(iteration, resolve_checkpoint(model, served.storage)) for iteration, model in wanted])
    environ = dict(os.environ)
    command = server_command(
        plan.model, served.generation, name=plan.names, host=host, port=port, on_cpu=cpu_environment(environ),
        adapters=plan.adapters, max_lora_rank=plan.max_lora_rank,
    )  # fmt: skip
    say(f"serving {describe(served)} as model {served.name!r} at http://{host}:{port}/v1 (ready when GET /health answers)")
    if plan.adapters:
        say(f"  base {plan.model} as {', '.join(plan.names)}; LoRA adapters: {', '.join(plan.adapters)}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environ)
