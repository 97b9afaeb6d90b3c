"""The judge's server (`spec.serve`): its Deployment and Service as plain dicts, and what to do
about them given what exists (pure; `serving_actor.py` observes and acts in a pass).

The server pod is a generation pod (`scheduling.generation`, the `generation` vLLM settings, the
model cache, the store's Secret) built by the same code as a stage's (`jobs.build_pod_spec`); it
runs `selftaught serve`, which fetches the checkpoint and becomes vLLM's OpenAI-compatible
server. The Deployment carries a hash of what it should be: an edit that leaves the hash alone
(more iterations whose best is the same checkpoint, a judge setting) never restarts a healthy
server; one that changes it (another checkpoint, other scheduling or vLLM settings) rolls it out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from selftaught.api.spec import API_GROUP, POD_DEFAULTS, ModelSource, SelfTaughtRun, merge_overrides
from selftaught.api.status import ServingStatus
from selftaught.controller.config import OperatorConfig
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
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD_SECONDS, "failureThreshold": failures}


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
    pod_spec = build_pod_spec(overrides, config, container, gpus=run.spec.generation.tensor_parallel, shm=True, restart_policy="Always")
    template = {"metadata": pod_metadata(overrides, pod_labels), "spec": pod_spec}
    template["metadata"].setdefault("annotations", {})[CHECKPOINT] = choice.model.source
    spec = {
        "replicas": run.spec.serve.replicas,
        "selector": {"matchLabels": labels},
        # a new checkpoint starts beside the old one, which serves until it is ready
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": template,
    }
    annotations = {HASH: _digest(spec), ITERATION: str(choice.iteration), CHECKPOINT: choice.model.source}
    if choice.score is not None:
        annotations[SCORE] = str(choice.score)
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


def served_choice(deployment: dict[str, Any]) -> Choice | None:
    """What an existing Deployment serves, from its annotations."""
    annotations = deployment["metadata"].get("annotations") or {}
    if ITERATION not in annotations or CHECKPOINT not in annotations:
        return None
    score = annotations.get(SCORE)
    return Choice(int(annotations[ITERATION]), ModelSource(source=annotations[CHECKPOINT]), float(score) if score else None)


def recorded_choice(run: SelfTaughtRun, serving: dict[str, Any] | None) -> Choice | None:
    """The choice `status.serving` recorded (a finished run's choice cannot change until it is
    edited; then the operator reads the store again)."""
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


def decide_serving(
    run: SelfTaughtRun, config: OperatorConfig, *, choice: Choice | None, problem: str | None, observed: dict[str, Any] | None, had_status: bool
) -> ServingAction:
    """What to do about the server. `choice`: what the succeeded run should serve (None while it
    runs, has failed, or has nothing to serve: `problem` says why); `observed`: its Deployment as
    the watch last saw it; `had_status`: `status.serving` is there (cleanup after serve is off)."""
    if not run.spec.serve.enabled:
        return ServingAction(delete=observed is not None or had_status)
    if choice is None:
        current = served_choice(observed) if observed is not None else None
        if current is None:  # nothing served yet
            return ServingAction(status=ServingStatus(message=problem or "waiting for the run to succeed"))
        note = f"{problem}; serving iteration {current.iteration} meanwhile" if problem else None
        return ServingAction(status=_status(run, current, observed, note))
    desired = build_deployment(run, choice, config)
    current_hash = ((observed or {}).get("metadata", {}).get("annotations") or {}).get(HASH)
    apply = desired if current_hash != desired["metadata"]["annotations"][HASH] else None
    return ServingAction(apply=apply, status=_status(run, choice, None if apply else observed, None))


def _status(run: SelfTaughtRun, choice: Choice, observed: dict[str, Any] | None, note: str | None) -> ServingStatus:
    """`observed`: the Deployment as it is now (None: being created or rolled out this pass)."""
    wanted = run.spec.serve.replicas
    state = (observed or {}).get("status") or {}
    ready = int(state.get("readyReplicas") or 0)
    stuck = next((c for c in state.get("conditions") or [] if c.get("type") == "Progressing" and c.get("status") == "False"), None)
    what = "the seed" if choice.iteration == 0 else f"iteration {choice.iteration}"
    if observed is None:
        message = f"starting the server of {what}"
    elif stuck is not None:
        message = f"{stuck.get('reason', 'NotProgressing')}: {stuck.get('message', '')}".strip()
    elif ready:
        message = f"serving {what}"
    else:
        message = f"starting the server of {what}: fetching and loading the checkpoint"
    return ServingStatus(
        endpoint=endpoint(run),
        model=run.metadata.name,
        iteration=choice.iteration,
        checkpoint=choice.model.source,
        score=choice.score,
        ready=ready > 0,
        replicas=f"{ready}/{wanted}",
        message=f"{message}; {note}" if note else message,
    )
