"""Every call the operator makes to the Kubernetes API, and nothing else: read a run, create a
stage's Job and Service, find why a Job failed, put the judge's server in place or remove it,
write the status, post events.

Responses are read raw (`_preload_content=False`) and parsed as JSON: the kubernetes client's
model classes would cost most of a reconcile's time for nothing we use.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from selftaught.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from selftaught.controller.decide import Waiting, all_ready, is_gang, parse_termination_message
from selftaught.controller.jobs import KUEUE_QUEUE, LABEL_RUN
from selftaught.errors import Failure, Reason, clip

#: container waiting reasons that mean "this pod will not start by itself"
STARTUP_PROBLEMS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "RunContainerError"}
)
#: Events that say why a scheduled pod stays ContainerCreating (an image pull shows ContainerCreating
#: too, with Pulling events: that is not a problem): a volume that does not mount or attach, a
#: sandbox whose network cannot be set up (a missing Multus network)
CREATING_PROBLEMS = ("FailedMount", "FailedAttachVolume", "FailedMapVolume", "FailedCreatePodSandBox")
#: how long a diagnosis of a Job's pods is reused: pods are not watched, so this bounds API calls
DIAGNOSIS_SECONDS = 20.0
HEALTHY_SECONDS = 3.0  # "nothing wrong yet" is looked at again sooner
STARTUP_GRACE_SECONDS = 3.0  # a Job's pods get this long before the operator lists them
PAGE = 500


class InvalidObject(Exception):
    """The API server refused an object as invalid (400/422): retrying the same object cannot help."""

log = logging.getLogger(__name__)


def api_message(error: ApiException) -> str:
    """The API server's own sentence (e.g. a quota or an admission webhook's refusal)."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def is_failed(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in conditions)


class Kube:
    def __init__(self, api: client.ApiClient | None = None):
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self._failures: dict[str, Failure | None] = {}  # failed Job uid -> what its pod told
        self._diagnoses: dict[str, tuple[float, Waiting | None]] = {}  # Job uid -> (when, what)
        self._events: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._post_events, name="selftaught-events", daemon=True).start()

    def stop(self) -> None:
        self._events.put(None)

    # -- reading ----------------------------------------------------------------------------------

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(response.data)

    def list_jobs(self, namespace: str, run: str) -> list[dict[str, Any]]:
        """The run's stage Jobs (when no watch-fed index is at hand)."""
        items: list[dict[str, Any]] = []
        token = None
        while True:  # paginated: a namespace may hold many Jobs
            listed = json.loads(
                self.batch.list_namespaced_job(
                    namespace, label_selector=f"{LABEL_RUN}={run}", limit=PAGE, _continue=token, _preload_content=False
                ).data
            )
            items += listed["items"]
            token = (listed.get("metadata") or {}).get("continue")
            if not token:
                return items

    def failure_of(self, job: dict[str, Any]) -> Failure | None:
        """Why a failed Job failed, from its newest failed pod's termination message (the stage's
        own reason and message). Read once per Job: a failed Job's pods never change."""
        if not is_failed(job):
            return None
        meta = job["metadata"]
        uid = meta.get("uid", meta["name"])
        if uid not in self._failures:
            listed = self.core.list_namespaced_pod(
                meta["namespace"], label_selector=f"batch.kubernetes.io/job-name={meta['name']}", _preload_content=False
            )
            pods = sorted(json.loads(listed.data)["items"], key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
            failed = next(c for c in (job.get("status") or {}).get("conditions") or [] if c.get("type") == "Failed")
            by_disruption = failed.get("reason") == "PodFailurePolicy" and "DisruptionTarget" in (failed.get("message") or "")
            if by_disruption:  # the evicted pod itself may be gone already: the condition says it
                self._failures[uid] = _disruption(pods) or Failure.of(Reason.DISRUPTED, failed.get("message", ""))
            else:
                self._failures[uid] = parse_termination_message(*_termination(pods))
        failure = self._failures[uid]
        if len(self._failures) > 10_000:  # bounded: old entries are for Jobs long gone
            for key in list(self._failures)[:5_000]:
                del self._failures[key]
        return failure

    def waiting_of(self, job: dict[str, Any]) -> Waiting | None:
        """Why an active Job's pods are not running: held by Kueue, or pods that cannot start
        (unschedulable, an image that does not pull, a missing Secret, pod creation refused)."""
        meta, status = job["metadata"], job.get("status") or {}
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or []):
            return None
        if (job.get("spec") or {}).get("suspend"):
            queue_name = (meta.get("labels") or {}).get(KUEUE_QUEUE)
            return Waiting("Queued", f"held by Kueue in queue {queue_name}" if queue_name else "the Job is suspended", queued=True)
        started = status.get("startTime")
        if all_ready(job) or not started:
            return None  # running (every rank of a gang), or not started by the Job controller yet: nothing to diagnose
        if time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() < STARTUP_GRACE_SECONDS:
            return None  # pods are being created and pulled: give them a moment before asking
        uid = meta.get("uid", meta["name"])
        cached = self._diagnoses.get(uid)
        if cached and time.monotonic() - cached[0] < (DIAGNOSIS_SECONDS if cached[1] else HEALTHY_SECONDS):
            return cached[1]
        listed = self.core.list_namespaced_pod(meta["namespace"], label_selector=f"batch.kubernetes.io/job-name={meta['name']}", _preload_content=False)
        pods = json.loads(listed.data)["items"]
        waiting = _pod_problem(pods) or self._creating_problem(meta["namespace"], pods)
        if waiting is not None and is_gang(job) and waiting.pod:
            waiting = _rank(waiting, job, pods)
        if waiting is None and not pods:
            waiting = self._failed_create(meta["namespace"], meta["name"])
        self._diagnoses[uid] = (time.monotonic(), waiting)
        if len(self._diagnoses) > 10_000:  # bounded: old entries are for Jobs long finished
            for key in list(self._diagnoses)[:5_000]:
                del self._diagnoses[key]
        return waiting

    def server_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The judge's server pods (selected by `labels`): which are ready, and what they serve."""
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        listed = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return json.loads(listed.data)["items"]

    def _creating_problem(self, namespace: str, pods: list[dict[str, Any]]) -> Waiting | None:
        """A scheduled pod that stays ContainerCreating says why only in Events on the pod (the
        kubelet's FailedMount or FailedCreatePodSandBox, the attach/detach controller's
        FailedAttachVolume): the newest of them, named with its pod."""
        for pod in pods:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if not any(((c.get("state") or {}).get("waiting") or {}).get("reason") == "ContainerCreating" for c in statuses):
                continue
            name = pod["metadata"]["name"]
            listed = self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}", _preload_content=False
            )
            problems = [e for e in json.loads(listed.data)["items"] if e.get("reason") in CREATING_PROBLEMS and e.get("type") == "Warning"]
            if problems:
                latest = max(problems, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
                return Waiting(latest["reason"], f"pod {name} is stuck in ContainerCreating: {latest.get('message', '')}", since=_created(pod), pod=name)
        return None

    def _failed_create(self, namespace: str, job: str) -> Waiting | None:
        """The Job controller could not create pods (quota, Pod Security, a missing service
        account): it says so only in Events on the Job."""
        listed = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Job,involvedObject.name={job}", _preload_content=False
        )
        refused = [e for e in json.loads(listed.data)["items"] if e.get("reason") == "FailedCreate"]
        if not refused:
            return None
        latest = max(refused, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return Waiting("FailedCreate", latest.get("message", "the Job controller cannot create its pods"))

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; gone already is fine."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    # -- writing ----------------------------------------------------------------------------------

    def create_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The created Job, or None when it exists already (names are deterministic: an earlier
        pass, or an earlier operator, made it)."""
        try:  # strict: a typo in an override is an error, not a silently dropped field
            response = self.batch.create_namespaced_job(job["metadata"]["namespace"], job, field_validation="Strict", _preload_content=False)
        except ApiException as error:
            if error.status == 409:
                return None
            if error.status in (400, 422):
                raise InvalidObject(api_message(error)) from None
            raise
        return json.loads(response.data)

    def create_service(self, service: dict[str, Any]) -> None:
        try:
            self.core.create_namespaced_service(service["metadata"]["namespace"], service, field_validation="Strict")
        except ApiException as error:
            if error.status in (400, 422):
                raise InvalidObject(api_message(error)) from None
            if error.status != 409:
                raise

    def create_deployment(self, deployment: dict[str, Any]) -> bool:
        """Whether it was created (False: it exists; the watch will show it)."""
        try:
            self.apps.create_namespaced_deployment(deployment["metadata"]["namespace"], deployment, field_validation="Strict", _preload_content=False)
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status in (400, 422):
                raise InvalidObject(api_message(error)) from None
            raise
        return True

    def replace_deployment(self, deployment: dict[str, Any], resource_version: str | None) -> None:
        """Put `deployment` in place of the one there (a PUT: a field the new one drops is gone,
        which a merge patch would keep). A stale `resource_version` is a 409: read again, retry."""
        meta = deployment["metadata"]
        body = {**deployment, "metadata": {**meta, **({"resourceVersion": resource_version} if resource_version else {})}}
        try:
            self.apps.replace_namespaced_deployment(meta["name"], meta["namespace"], body, field_validation="Strict", _preload_content=False)
        except ApiException as error:
            if error.status in (400, 422):
                raise InvalidObject(api_message(error)) from None
            raise

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a Deployment and (in the background) its pods; gone already is fine."""
        try:
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    def delete_service(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_service(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of `.status`; returns the run as stored afterwards."""
        response = self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}, _preload_content=False
        )
        return json.loads(response.data)

    def post_event(self, run: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """An Event on the run. Posted from a thread: events are a courtesy (the status has the
        truth) and must not delay the next Job."""
        meta = run["metadata"]
        now = datetime.now(UTC).isoformat()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": clip(message, 1024),
            "type": kind,
            "source": {"component": "selftaught-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._events.put((meta["namespace"], body))

    def _post_events(self) -> None:
        while (item := self._events.get()) is not None:
            namespace, body = item
            try:
                self.core.create_namespaced_event(namespace, body)
            except Exception as error:  # best effort, see post_event
                log.warning("could not post event %s in %s: %s", body["reason"], namespace, error)


def _termination(pods: list[dict[str, Any]]) -> tuple[str | None, int | None, str | None, str | None, str | None]:
    """(termination message, exit code, container reason, pod reason, pod message) of the newest
    pod that failed: a container's exit, or a pod the kubelet failed without one (its admission
    refused it, a node-pressure eviction: `status.reason` and `status.message`)."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated and terminated.get("exitCode"):
                return terminated.get("message"), terminated["exitCode"], terminated.get("reason"), status.get("reason"), status.get("message")
        if status.get("phase") == "Failed" and status.get("reason"):
            return None, None, None, status["reason"], status.get("message")
    return None, None, None, None, None


def _disruption(pods: list[dict[str, Any]]) -> Failure | None:
    """A pod ended by a node drain, preemption or eviction (its DisruptionTarget condition)."""
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
                why = condition.get("reason") or "disrupted"
                return Failure.of(Reason.DISRUPTED, f"pod {pod['metadata']['name']} was disrupted ({why}): {condition.get('message', '')}".strip())
    return None


def _crash_loop(pods: list[dict[str, Any]]) -> Waiting | None:
    """A server container the kubelet keeps restarting, with how it last ended (a stage's crash
    fails its Job instead, and is read from the failed pod)."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            if ((container.get("state") or {}).get("waiting") or {}).get("reason") != "CrashLoopBackOff":
                continue
            ended = (container.get("lastState") or {}).get("terminated") or {}
            said = [line for line in (ended.get("message") or "").splitlines() if line.strip()][-3:]
            message = f"pod {pod['metadata']['name']}: the server exited with code {ended.get('exitCode', '?')} ({ended.get('reason', 'Error')})"
            message += f", restarted {container.get('restartCount', 0)} times"
            return Waiting("CrashLoopBackOff", message + (": " + " / ".join(line.strip() for line in said) if said else ""))
    return None


def _rank(waiting: Waiting, job: dict[str, Any], pods: list[dict[str, Any]]) -> Waiting:
    """A gang's waiting pod named by its rank, with how many ranks are ready: the rest hold their
    GPUs in torch's rendezvous meanwhile."""
    pod = next(p for p in pods if p["metadata"]["name"] == waiting.pod)
    rank = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-completion-index", "?")
    ranks = (job.get("spec") or {}).get("parallelism") or 1
    ready = (job.get("status") or {}).get("ready") or 0
    message = f"rank {rank} of {ranks} (pod {waiting.pod}) is not running, {ready} ranks ready and waiting for it: {waiting.message}"
    return Waiting(waiting.reason, message, since=waiting.since, pod=waiting.pod)


def server_problem(pods: list[dict[str, Any]]) -> Waiting | None:
    """Why server pods are not ready, when it is not just loading: they cannot start (no node has
    room, an image that cannot be pulled, ...), or the server keeps exiting."""
    return _pod_problem(pods) or _crash_loop(pods)


def _created(pod: dict[str, Any]) -> float | None:
    stamp = pod["metadata"].get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def _pod_problem(pods: list[dict[str, Any]]) -> Waiting | None:
    for pod in pods:
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and condition.get("reason") == "Unschedulable":
                return Waiting("Unschedulable", condition.get("message") or "no node fits the pod", since=_created(pod), pod=pod["metadata"]["name"])
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STARTUP_PROBLEMS:
                return Waiting(waiting["reason"], waiting.get("message") or waiting["reason"], since=_created(pod), pod=pod["metadata"]["name"])
    return None
