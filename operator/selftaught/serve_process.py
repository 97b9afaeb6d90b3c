"""`selftaught serve`: the judge's server on this machine. For a run file or a run's folder in its
store it chooses the checkpoint (`pipeline/served.py`); a server pod gets the operator's choice
in `SELFTAUGHT_SERVE`. Either way the checkpoint is fetched as stages fetch models (the model
cache, `engines/models.py`), then this process becomes vLLM's OpenAI-compatible server."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from selftaught.api.load import load_run
from selftaught.engines.generation import cpu_environment
from selftaught.engines.models import resolve_model
from selftaught.engines.server import server_command
from selftaught.pipeline.scan import iteration_summaries, scan
from selftaught.pipeline.served import ALL_ITERATIONS, ServedModel, choose, served_model
from selftaught.views.overview import open_run


def served_from_run(target: str, *, iteration: int | None = None, endpoint: str | None = None) -> ServedModel:
    """What to serve of the run in `target` (a run file, or `<storage.uri>/<namespace>/<name>`):
    `iteration`, else the run's `serve.iteration`, else its best evaluated checkpoint."""
    if Path(target).is_file():
        run, store = open_run(load_run(Path(target)))
    else:
        run, store = open_run(None, target, endpoint=endpoint)
        if endpoint:  # the store's address as given here, where the recorded one may not reach
            storage = run.spec.storage.model_copy(update={"endpoint": endpoint})
            run = run.model_copy(update={"spec": run.spec.model_copy(update={"storage": storage})})
    summaries = iteration_summaries(scan(store), limit=ALL_ITERATIONS)
    wanted = iteration if iteration is not None else run.spec.serve.iteration
    return served_model(run, choose(summaries, run.spec.models.seed, wanted))


def describe(served: ServedModel) -> str:
    what = "the seed" if served.iteration == 0 else f"iteration {served.iteration}"
    return f"{what} of run {served.name} ({served.model.source})"


def exec_server(served: ServedModel, *, host: str, port: int, say: Callable[[str], None] = print) -> NoReturn:
    """Fetch the checkpoint, then replace this process with vLLM's server (signals reach it, and
    in a pod it is the container's main process)."""
    path = resolve_model(served.model, served.storage)
    environ = dict(os.environ)
    command = server_command(path, served.generation, name=served.name, host=host, port=port, on_cpu=cpu_environment(environ))
    say(f"serving {describe(served)} as model {served.name!r} at http://{host}:{port}/v1 (ready when GET /health answers)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environ)
