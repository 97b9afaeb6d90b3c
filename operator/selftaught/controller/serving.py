"""The judge's server (`spec.serve`): its Deployment and Service as plain dicts, and what to do
about them given what exists (pure; `serving_actor.py` observes and acts in a pass).

The server pod is a generation pod (`scheduling.generation`, the `generation` vLLM settings, the
model cache, the store's Secret) built by the same code as a stage's (`jobs.build_pod_spec`); it
runs `selftaught serve`, which fetches the checkpoint and becomes vLLM's OpenAI-compatible
server. The Deployment carries a hash of what it should be: an edit that leaves the hash alone
(more iterations whose best is the same checkpoint, a judge setting) never restarts a healthy
server; one that changes it (another checkpoint, other scheduling or vLLM settings) rolls it out,
beside the old server (`serve.rollout: surge`) or in its place (`recreate`). Each pod carries the
iteration and checkpoint it serves, so `status.serving` says what the *ready* pods serve: the old
iteration while the new one's pod waits for a GPU, not the one the Deployment asks for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from selftaught.api.spec import API_GROUP, POD_DEFAULTS, ModelSource, SelfTaughtRun, merge_overrides
from selftaught.api.status import ServingStatus
from selftaught.controller.config import OperatorConfig
from selftaught.controller.decide import Waiting
from selftaught.controller.jobs import KUEUE_QUEUE, LABEL_RUN, MANAGED_BY, SERVICE_PREFIX, bounded_name, build_pod_spec, pod_env, pod_metadata
from selftaught.pipeline.served import SERVE_PORT, SERVE_VARIABLE, Choice, serve_document, served_model

COMPONENT = "serve"
HASH = f"{API_GROUP}/serving-hash"
ITERATION = f"{API_GROUP}/iteration"
CHECKPOINT = f"{API_GROUP}/checkpoint"
SCORE = f"{API_GROUP}/score"
#: how long the server may take to answer /health after its start: fetching and loading a 70B
#: checkpoint takes minutes
STARTUP_SECONDS = 1800
PROBE_PERIOD_SECONDS = 10
#: a probe's answer may be slow while vLLM is busy with a long batch: 1 s (the default) restarts a
#: healthy server under load
PROBE_TIMEOUT_SECONDS = 5
#: when the Deployment reports ProgressDeadlineExceeded: the startup budget, plus half an hour for
#: scheduling and pulling a multi-GB vLLM image (the API server's default, 600 s, is below the
#: startup budget and called a loading server stuck)
PROGRESS_DEADLINE_SECONDS = STARTUP_SECONDS + 1800
STRATEGIES = {
    # the old server serves until the new one is ready: a second set of GPUs meanwhile
    "surge": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
    # the old server stops first and its GPUs go to the new one: nothing served meanwhile
    "recreate": {"type": "Recreate"},
}


def serve_name(run_name: str) -> str:
    """The Deployment's and the Service's name: `<run>-judge`, a DNS-1035 label (a Service's name
    starts with a letter and has at most 63 characters)."""
    name = bounded_name(run_name, "judge", 63 - len(SERVICE_PREFIX))
    return name if name[0].isalpha() else SERVICE_PREFIX + name


def serve_labels(run_name: str) -> dict[str, str]:
    """Also the Service's selector and the Deployment's (which may never change)."""
    return {
        "app.kubernetes.io/name": "selftaught",
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_RUN: run_name,
    }


def endpoint(run: SelfTaughtRun) -> str:
    """The OpenAI-compatible base URL inside the cluster."""
    return f"http://{serve_name(run.metadata.name)}.{run.metadata.namespace}.svc:{SERVE_PORT}/v1"


def _probe(failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": failures,
    }


def build_deployment(run: SelfTaughtRun, choice: Choice, config: OperatorConfig) -> dict[str, Any]:
    """The server's Deployment; the caller adds the owner reference to the run."""
    overrides = merge_overrides(POD_DEFAULTS["generation"], run.spec.scheduling.generation)
    name, labels = serve_name(run.metadata.name), serve_labels(run.metadata.name)
    pod_labels = {**labels, **({KUEUE_QUEUE: overrides.queue_name} if overrides.queue_name else {})}
    served = served_model(run, choice)
    container = {
        "name": "serve",
        "image": overrides.image or config.generate_image,
        "command": ["python", "-m", "selftaught", "serve", "--host=0.0.0.0", f"--port={SERVE_PORT}"],
        "env": pod_env(run, {"name": SERVE_VARIABLE, "value": serve_document(served)}, overrides, indexed=False),
        "ports": [{"name": "http", "containerPort": SERVE_PORT}],
        # up when vLLM answers /health; until then (fetching, loading) no traffic and no restart
        "startupProbe": _probe(STARTUP_SECONDS // PROBE_PERIOD_SECONDS),
        "readinessProbe": _probe(3),
        "livenessProbe": _probe(6),
    }
    pod_spec = build_pod_spec(overrides, config, container, kind="generation", gpus=run.spec.generation.tensor_parallel, shm=True, restart_policy="Always")
    template = {"metadata": pod_metadata(overrides, pod_labels), "spec": pod_spec}
    served_annotations = {ITERATION: str(choice.iteration), CHECKPOINT: choice.model.source}
    if choice.score is not None:
        served_annotations[SCORE] = str(choice.score)
    template["metadata"].setdefault("annotations", {}).update(served_annotations)  # what each pod serves
    spec = {
        "replicas": run.spec.serve.replicas,
        "selector": {"matchLabels": labels},
        "strategy": STRATEGIES[run.spec.serve.rollout],
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        "template": template,
    }
    annotations = {HASH: _digest(spec), **served_annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": run.metadata.namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def build_service(run: SelfTaughtRun) -> dict[str, Any]:
    """The server's stable address; the caller adds the owner reference to the run."""
    labels = serve_labels(run.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": serve_name(run.metadata.name), "namespace": run.metadata.namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": SERVE_PORT, "targetPort": "http"}]},
    }


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def served_choice(obj: dict[str, Any]) -> Choice | None:
    """What a Deployment is to serve, or what a server pod serves, from its annotations."""
    annotations = obj["metadata"].get("annotations") or {}
    if ITERATION not in annotations or CHECKPOINT not in annotations:
        return None
    score = annotations.get(SCORE)
    return Choice(int(annotations[ITERATION]), ModelSource(source=annotations[CHECKPOINT]), float(score) if score else None)


def wanted_choice(run: SelfTaughtRun, deployment: dict[str, Any] | None, serving: dict[str, Any] | None) -> Choice | None:
    """A finished run's choice (it cannot change until the run is edited; then the operator reads
    the store again): what its Deployment asks for, else what `status.serving` recorded. Not the
    status alone: during a rollout it names the old iteration, which still serves."""
    if deployment is not None and (asked := served_choice(deployment)) is not None:
        model = run.spec.models.seed if asked.iteration == 0 else asked.model
        return Choice(asked.iteration, model, asked.score)
    if not serving or serving.get("iteration") is None or not serving.get("checkpoint"):
        return None
    iteration = int(serving["iteration"])
    model = run.spec.models.seed if iteration == 0 else ModelSource(source=serving["checkpoint"])
    return Choice(iteration, model, serving.get("score"))


@dataclass
class ServingAction:
    #: the Deployment to create (none exists) or to put in place of the one that does
    apply: dict[str, Any] | None = None
    #: remove the Deployment and the Service
    delete: bool = False
    status: ServingStatus | None = None
    #: the server does not yet serve what it should (starting, rolling out, stuck): its pods are not
    #: watched, so look at them again soon
    unsettled: bool = False


def decide_serving(
    run: SelfTaughtRun,
    config: OperatorConfig,
    *,
    choice: Choice | None,
    problem: str | None,
    observed: dict[str, Any] | None,
    had_status: bool,
    pods: list[dict[str, Any]] | None = None,
    waiting: Waiting | None = None,
) -> ServingAction:
    """What to do about the server. `choice`: what the succeeded run should serve (None while it
    runs, has failed, or has nothing to serve: `problem` says why); `observed`: its Deployment as
    the watch last saw it; `had_status`: `status.serving` is there (cleanup after serve is off);
    `pods`: its pods now; `waiting`: why those not ready cannot start, if they cannot."""
    if not run.spec.serve.enabled:
        return ServingAction(delete=observed is not None or had_status)
    if choice is None:
        current = served_choice(observed) if observed is not None else None
        if current is None:  # nothing served yet
            return ServingAction(status=ServingStatus(message=problem or "waiting for the run to succeed"))
        note = f"{problem}; serving iteration {current.iteration} meanwhile" if problem else None
        status, settled = _status(run, current, observed, pods or [], waiting, note)
        return ServingAction(status=status, unsettled=observed is not None and not settled)
    desired = build_deployment(run, choice, config)
    current_hash = ((observed or {}).get("metadata", {}).get("annotations") or {}).get(HASH)
    apply = desired if current_hash != desired["metadata"]["annotations"][HASH] else None
    status, settled = _status(run, choice, None if apply else observed, pods or [], waiting, None)
    return ServingAction(apply=apply, status=status, unsettled=apply is None and observed is not None and not settled)


def pod_ready(pod: dict[str, Any]) -> bool:
    """Ready and not on its way out: the Service sends it requests."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _serves(pod: dict[str, Any], choice: Choice) -> bool:
    served = served_choice(pod)
    if served is None:  # a pod from before pods said their iteration: its checkpoint tells
        return ((pod["metadata"].get("annotations") or {}).get(CHECKPOINT)) == choice.model.source
    return served.iteration == choice.iteration and served.model.source == choice.model.source


def _name(choice: Choice) -> str:
    return "the seed" if choice.iteration == 0 else f"iteration {choice.iteration}"


def _status(
    run: SelfTaughtRun, choice: Choice, observed: dict[str, Any] | None, pods: list[dict[str, Any]], waiting: Waiting | None, note: str | None
) -> tuple[ServingStatus, bool]:
    """What the ready pods serve, and whether that is all `choice` asks for. `choice`: what the Deployment asks for; `observed`: the
    Deployment as it is now (None: being created or rolled out this pass)."""
    wanted = run.spec.serve.replicas
    ready = [pod for pod in pods if pod_ready(pod)]
    current = [pod for pod in ready if _serves(pod, choice)]
    older = [served for pod in ready if not _serves(pod, choice) and (served := served_choice(pod)) is not None]
    state = (observed or {}).get("status") or {}
    stuck = next((c for c in state.get("conditions") or [] if c.get("type") == "Progressing" and c.get("status") == "False"), None)
    served, count = choice, len(current)
    if waiting is not None:
        why = f"the server cannot start: {waiting.reason}: {waiting.message}"
    elif stuck is not None:
        why = f"{stuck.get('reason', 'NotProgressing')}: {stuck.get('message', '')}".strip()
    else:
        why = "fetching and loading the checkpoint"
    if current:
        message = f"serving {_name(choice)}"
    elif older:  # a surge rollout: the old server still answers while the new one starts
        served, count = older[0], sum(1 for c in older if c.iteration == older[0].iteration)
        message = f"serving {_name(served)}; rolling out {_name(choice)}: {why}"
    elif observed is None:
        message = f"starting the server of {_name(choice)}"
    elif waiting is not None or stuck is not None:
        message = why
    else:
        message = f"starting the server of {_name(choice)}: {why}"
    status = ServingStatus(
        endpoint=endpoint(run),
        model=run.metadata.name,
        iteration=served.iteration,
        checkpoint=served.model.source,
        score=served.score,
        ready=count > 0,
        replicas=f"{count}/{wanted}",
        message=f"{message}; {note}" if note else message,
    )
    return status, len(current) >= wanted
