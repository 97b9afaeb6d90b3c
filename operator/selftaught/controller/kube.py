"""Every call the operator makes to the Kubernetes API, and nothing else: read a run, create a
stage's Job and Service, find why a Job failed, write the status, post events.

Responses are read raw (`_preload_content=False`) and parsed as JSON: the kubernetes client's
model classes would cost most of a reconcile's time for nothing we use.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from selftaught.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from selftaught.controller.decide import parse_termination_message
from selftaught.controller.jobs import LABEL_RUN

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
        self.core = client.CoreV1Api(api)
        self._failures: dict[str, dict[str, Any]] = {}  # failed Job uid -> its termination message
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
        listed = self.batch.list_namespaced_job(namespace, label_selector=f"{LABEL_RUN}={run}", _preload_content=False)
        return json.loads(listed.data)["items"]

    def failure_of(self, job: dict[str, Any]) -> dict[str, Any] | None:
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
            self._failures[uid] = parse_termination_message(_termination_message(pods))
        return self._failures[uid]

    # -- writing ----------------------------------------------------------------------------------

    def create_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The created Job, or None when it exists already (names are deterministic: an earlier
        pass, or an earlier operator, made it)."""
        try:
            response = self.batch.create_namespaced_job(job["metadata"]["namespace"], job, _preload_content=False)
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return json.loads(response.data)

    def create_service(self, service: dict[str, Any]) -> None:
        try:
            self.core.create_namespaced_service(service["metadata"]["namespace"], service)
        except ApiException as error:
            if error.status != 409:
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
            "message": message[:1024],
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


def _termination_message(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated and terminated.get("exitCode"):
                return terminated.get("message") or f"exit code {terminated['exitCode']} ({terminated.get('reason')})"
    return None
