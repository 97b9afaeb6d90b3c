"""What a stage start costs the API server: the pass that creates a stage's Job says in the same
status write that the stage runs, and the watch's echo of that create costs no pass; any later
change of the Job does. And the status is written in one place, whatever the pass."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

from selftaught.controller.config import OperatorConfig
from selftaught.controller.kube import Kube
from selftaught.controller.reconciler import Reconciler

NAMESPACE = "ml"


class RecordingKube(Kube):
    """The API calls of a pass, answered as an API server would, and counted."""

    def __init__(self, run: dict[str, Any]):
        super().__init__()
        self.run, self.jobs, self.status_writes, self.rv, self.deleted = run, {}, 0, 100, []

    def _version(self) -> str:
        self.rv += 1
        return str(self.rv)

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.run)

    def create_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        if job["metadata"]["name"] in self.jobs:
            return None
        created = copy.deepcopy(job)
        created["metadata"].update(uid=f"uid-{job['metadata']['name']}", resourceVersion=self._version())
        self.jobs[job["metadata"]["name"]] = created
        return copy.deepcopy(created)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status_writes += 1
        merged = {**(self.run.get("status") or {}), **status}
        self.run = {**self.run, "status": {key: value for key, value in merged.items() if value is not None}}
        self.run["metadata"] = {**self.run["metadata"], "resourceVersion": self._version()}
        return copy.deepcopy(self.run)

    def post_event(self, run: dict[str, Any], kind: str, reason: str, message: str) -> None:
        pass

    def delete_deployment(self, namespace: str, name: str) -> None:
        self.deleted.append(name)

    def delete_service(self, namespace: str, name: str) -> None:
        self.deleted.append(name)


def _run(tmp_path) -> dict[str, Any]:
    return {
        "apiVersion": "selftaught.dev/v1alpha1",
        "kind": "SelfTaughtRun",
        "metadata": {"name": "r1", "namespace": NAMESPACE, "uid": "run-uid", "generation": 1, "resourceVersion": "1"},
        "spec": {
            "models": {"seed": {"source": "meta-llama/Meta-Llama-3-8B-Instruct"}},
            "data": {"instructions": {"source": "s3://bucket/instructions.jsonl"}},
            "storage": {"uri": str(tmp_path / "store")},
        },
    }


def test_a_stage_start_is_one_status_write_and_the_echo_of_its_job_costs_no_pass(tmp_path):
    kube = RecordingKube(_run(tmp_path))
    reconciler = Reconciler(OperatorConfig(), kube=kube, jobs=lambda namespace, run: [copy.deepcopy(job) for job in kube.jobs.values()])
    passes = []
    work = reconciler.queue._work
    reconciler.queue._work = lambda key, fresh: passes.append(key) or work(key, fresh)
    try:
        reconciler.intake.run_changed(kube.get_run(NAMESPACE, "r1"))
        assert len(passes) == 1 and list(kube.jobs) == ["r1-categorize-0"]
        assert kube.status_writes == 1 and kube.run["status"]["message"] == "categorize running (0/1 shards)"

        job = kube.jobs["r1-categorize-0"]
        reconciler.intake.job_changed(NAMESPACE, "r1", copy.deepcopy(job), "ADDED")  # the watch's echo of the create
        assert len(passes) == 1

        job["status"] = {"startTime": "2026-01-01T00:00:00Z", "active": 1, "ready": 1}
        job["metadata"]["resourceVersion"] = kube._version()
        reconciler.intake.job_changed(NAMESPACE, "r1", copy.deepcopy(job), "MODIFIED")  # its pod runs
        assert len(passes) == 2 and kube.status_writes == 1  # nothing the status did not say already
    finally:
        reconciler.stop()


def test_one_method_writes_the_status():
    """Every pass, the finished run's server pass too, writes through `Reconciler._write_status`."""
    controller = Path(__file__).resolve().parents[2] / "operator" / "selftaught" / "controller"
    writers = []
    for path in controller.glob("*.py"):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                calls = [n for n in ast.walk(function) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(".patch_status")]
                writers += [f"{path.name}:{function.name}"] * len(calls)
    assert writers == ["reconciler.py:_write_status"]


def test_a_finished_runs_server_pass_writes_through_it_and_its_echo_costs_no_pass(tmp_path):
    """serve turned off after the run succeeded: the server goes, `status.serving` with it, in one
    write whose echo starts no pass; the next pass has nothing to write."""
    run = _run(tmp_path)
    run["status"] = {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "message": "6 stages done",
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "6 stages done"}],
        "serving": {"iteration": 0, "checkpoint": "meta-llama/Meta-Llama-3-8B-Instruct", "ready": True, "message": "serving the seed"},
    }
    kube = RecordingKube(run)
    reconciler = Reconciler(OperatorConfig(), kube=kube, jobs=lambda namespace, run: [])
    passes = []
    work = reconciler.queue._work
    reconciler.queue._work = lambda key, fresh: passes.append(key) or work(key, fresh)
    try:
        reconciler.intake.run_changed(kube.get_run(NAMESPACE, "r1"))
        assert len(passes) == 1 and kube.deleted == ["r1-judge", "r1-judge"]
        assert kube.status_writes == 1 and "serving" not in kube.run["status"] and kube.run["status"]["phase"] == "Succeeded"

        reconciler.intake.run_changed(kube.get_run(NAMESPACE, "r1"))  # the watch's echo of that write
        assert len(passes) == 1
        reconciler.intake.reconcile(NAMESPACE, "r1", fresh=True)
        assert len(passes) == 2 and kube.status_writes == 1
    finally:
        reconciler.stop()
