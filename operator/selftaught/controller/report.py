"""What the operator tells people besides the status: Kubernetes Events for what changed since
it last looked, and Prometheus metrics. Events are announced once per operator process: a
restarted operator does not repeat the story of stages that finished before it started."""

from __future__ import annotations

import threading
from typing import Any

from selftaught.api.status import Phase
from selftaught.controller import metrics
from selftaught.controller.decide import JobView, Waiting
from selftaught.controller.kube import Kube
from selftaught.controller.status import Observation

RunKey = tuple[str, str]


class Reporter:
    def __init__(self, kube: Kube):
        self.kube = kube
        self._lock = threading.Lock()
        self._announced: dict[RunKey, set[str]] = {}  # stages whose success was announced
        self._failed_jobs: set[str] = set()  # failed Job uids already announced
        self._waits: set[tuple[str, str]] = set()  # (Job uid, waiting reason) already announced
        self._phases: dict[RunKey, str] = {}
        self._counts: dict[str, int] = dict.fromkeys(Phase, 0)  # kept with _phases: no O(runs) count per pass
        for value in Phase:
            metrics.RUNS.labels(value).set(0)

    def event(self, run: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.kube.post_event(run, kind, reason, message)

    def changes(self, run: dict[str, Any], seen: Observation, jobs: list[JobView], iterations: list[dict[str, Any]]) -> None:
        """Events and metrics for stages that finished and Jobs that failed since last time."""
        meta = run["metadata"]
        key = (meta["namespace"], meta["name"])
        done = {ref.label: (ref, manifest) for ref, manifest in (seen.progress.manifests.items() if seen.progress else ())}
        with self._lock:
            first_look = key not in self._announced
            announced = self._announced.setdefault(key, set(done) if first_look else set())
            new = sorted(set(done) - announced)
            announced.update(new)
            failed = [view for view in jobs if view.failure is not None and view.uid not in self._failed_jobs]
            self._failed_jobs.update(view.uid for view in failed)
            waits = [view for view in jobs if view.waiting and (view.uid, view.waiting.reason) not in self._waits]
            self._waits.update((view.uid, view.waiting.reason) for view in waits)  # type: ignore[union-attr]
            for announced_set in (self._failed_jobs, self._waits):  # bounded however long the operator runs
                if len(announced_set) > 50_000:
                    announced_set.clear()
        for label in new:
            ref, manifest = done[label]
            if manifest.reused is not None:  # linked from an earlier run (StageReused said so): nothing ran here
                continue
            metrics.STAGE_SECONDS.labels(ref.name).observe(manifest.seconds)
            summary = ", ".join(f"{k} {v}" for k, v in manifest.summary.items())
            self.event(run, "Normal", "StageSucceeded", f"{label}: {summary}")
        if not first_look:
            for view in failed:
                metrics.JOB_FAILURES.labels(view.stage.split("-")[0], view.failure.reason).inc()  # type: ignore[union-attr]
                self.event(run, "Warning", "StageFailed", f"{view.stage} (Job {view.name}): {view.failure}")
        for view in waits:  # one event per Job and reason, not one per resync
            waiting = view.waiting
            if waiting.queued:  # type: ignore[union-attr]
                self.event(run, "Normal", "StageQueued", f"{view.stage} (Job {view.name}): {waiting.message}")  # type: ignore[union-attr]
            else:
                self.event(run, "Warning", "StageNotStarting", f"{view.stage} (Job {view.name}): {waiting.reason}: {waiting.message}")  # type: ignore[union-attr]
        for row in iterations:
            labels = (meta["namespace"], meta["name"], str(row["iteration"]))
            if row.get("kept") is not None:
                metrics.KEPT.labels(*labels).set(row["kept"])
            if row.get("accuracy") is not None:
                metrics.ACCURACY.labels(*labels).set(row["accuracy"])

    def server_waiting(self, run: dict[str, Any], deployment: dict[str, Any], waiting: Waiting) -> None:
        """One event per server Deployment and reason, however often the operator looks."""
        key = (deployment["metadata"].get("uid", deployment["metadata"]["name"]), waiting.reason)
        with self._lock:
            if key in self._waits:
                return
            self._waits.add(key)
        self.event(run, "Warning", "ServingNotStarting", f"the judge's server {deployment['metadata']['name']}: {waiting.reason}: {waiting.message}")

    def job_created(self, run: dict[str, Any], stage: str, label: str, attempt: int, job: str) -> None:
        metrics.JOBS_CREATED.labels(stage).inc()
        if attempt:
            metrics.RETRIES.labels(stage).inc()
            self.event(run, "Warning", "StageRetrying", f"{label}: attempt {attempt + 1}, Job {job}")
        else:
            self.event(run, "Normal", "StageStarted", f"{label}: Job {job}")

    def phase(self, namespace: str, name: str, phase: str | None) -> None:
        """The runs-by-phase gauge; called on every pass, so it costs O(1), not O(runs)."""
        if not phase:
            return
        with self._lock:
            old = self._phases.get((namespace, name))
            if old == phase:
                return
            self._phases[(namespace, name)] = phase
            self._move(old, phase)

    def _move(self, old: str | None, new: str | None) -> None:
        for value, step in ((old, -1), (new, 1)):
            if value is not None:
                self._counts[value] = self._counts.get(value, 0) + step
                metrics.RUNS.labels(value).set(self._counts[value])

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._lock:
            self._announced.pop(key, None)
            self._move(self._phases.pop(key, None), None)
        for labels in list(metrics.KEPT._metrics):  # prometheus_client has no removal by label prefix
            if labels[:2] == key:
                metrics.KEPT.remove(*labels)
                metrics.ACCURACY.remove(*labels)
