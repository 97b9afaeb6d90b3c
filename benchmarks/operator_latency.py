"""Many runs at once against the emulated API server (tests/kube), in a namespace full of other
people's Jobs: how long from a stage Job's completion to the next stage's Job, and how much memory
the operator takes.

    python benchmarks/operator_latency.py [RUNS=200] [UNRELATED_JOBS=0]
    python benchmarks/operator_latency.py 1000 20000     # the big-cluster check

The operator runs as its own process (`selftaught operator`, KUBECONFIG pointing at the
emulator). A stand-in kubelet in this process watches Jobs; for each new one it writes the
stage's manifest to the run's (local) store and marks the Job Complete, as a real pod would.
Latency runs from a stage's completion (its manifest written, which is what a pod does just
before it exits; the Job is marked Complete right after) to the API server storing the run's
next Job. Targets: p99 < 250 ms and operator RSS < 300 MB at 1,000 runs with 20,000 unrelated Jobs.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.kube lives in the repository, not in the package

from kubernetes import client, watch  # noqa: E402

from selftaught.api.crd import crd  # noqa: E402
from selftaught.pipeline.table import StageRef  # noqa: E402
from selftaught.store import LocalStore  # noqa: E402
from selftaught.store.manifest import Manifest, write_manifest  # noqa: E402
from tests.kube import cluster as kube  # noqa: E402
from tests.kube.cluster import FakeCluster  # noqa: E402

NAMESPACE = "bench"
SUMMARIES = {
    "judge": {"tried": 100, "kept": 60, "keepRate": 0.6},
    "train": {"checkpoint": "file:///ckpt"},
    "evaluate": {"accuracy": 0.7, "overall": 0.7, "examples": 10},
}


def run_body(name: str, store: str) -> dict:
    return {
        "apiVersion": "selftaught.dev/v1alpha1",
        "kind": "SelfTaughtRun",
        "metadata": {"name": name},
        "spec": {
            "models": {"seed": {"source": "meta-llama/Meta-Llama-3-8B-Instruct"}},
            "data": {"instructions": {"source": "s3://data/instructions.jsonl"}},
            "storage": {"uri": store},
            "iterations": 1,
            "evaluate": {"baseline": False},
        },
    }


class ApiServerClock:
    """Times stage completions and, inside the emulated API server, the next Job's creation."""

    def __init__(self) -> None:
        self.completed: dict[str, float] = {}  # run → when its latest stage finished
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        original = kube.ClusterEmulator._store

        def store(emulator, res, kind, obj, old):
            run = (obj["metadata"].get("labels") or {}).get("selftaught.dev/run") if obj.get("kind") == "Job" else None
            if run and kind == "ADDED":
                with self.lock:
                    if run in self.completed:
                        self.latencies.append(time.perf_counter() - self.completed.pop(run))
            return original(emulator, res, kind, obj, old)

        kube.ClusterEmulator._store = store

    def stage_finished(self, run: str) -> None:
        with self.lock:
            self.completed[run] = time.perf_counter()


def _complete(job: dict) -> bool:  # for the progress report
    return any(c["type"] == "Complete" and c["status"] == "True" for c in (job.get("status") or {}).get("conditions", []))


class StandInKubelet(threading.Thread):
    """Completes every stage Job at once, after writing what the stage would have written."""

    def __init__(self, api: client.ApiClient, store_root: str, clock: ApiServerClock):
        super().__init__(daemon=True)
        self.batch = client.BatchV1Api(api)
        self.store_root = store_root
        self.clock = clock
        self.jobs = 0

    def run(self) -> None:
        stage_jobs = "app.kubernetes.io/managed-by=selftaught-operator"
        for event in watch.Watch().stream(self.batch.list_namespaced_job, NAMESPACE, label_selector=stage_jobs, deserialize=False):
            if event["type"] != "ADDED":
                continue
            job = event["object"]  # plain JSON: building client models here would starve the emulator
            labels = job["metadata"]["labels"]
            run, ref = labels["selftaught.dev/run"], StageRef.parse(labels["selftaught.dev/stage"])
            self.jobs += 1
            store = LocalStore(Path(self.store_root) / NAMESPACE / run)
            self.clock.stage_finished(run)
            write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration, seconds=1.0, summary=SUMMARIES.get(ref.name, {})))
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = {"status": {"succeeded": 1, "completionTime": now, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "lastTransitionTime": now}]}}  # fmt: skip
            self.batch.patch_namespaced_job_status(job["metadata"]["name"], NAMESPACE, status, _preload_content=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def unrelated_job(i: int) -> dict:
    """Someone else's Job: a big cluster is full of them, and the operator must not pay for them."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"other-{i:05d}", "labels": {"app": "someone-else"}},
        "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}},
    }


def main(runs: int = 200, unrelated: int = 0) -> None:
    # The emulator is Python: schema checks on every write (the tests' job) and kmock's full request
    # history (matched on every request) would make it, not the operator, what this measures.
    clock = ApiServerClock()
    with tempfile.TemporaryDirectory() as store_root, FakeCluster(namespaces=(NAMESPACE,), validate=None, request_history=10) as cluster:
        cluster.install_crd(crd())
        for i in range(unrelated):
            cluster.create("batch/v1/jobs", unrelated_job(i), NAMESPACE)
        metrics_port = _free_port()
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), SELFTAUGHT_METRICS_PORT=str(metrics_port), SELFTAUGHT_HEALTH_PORT="0", SELFTAUGHT_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
        env.pop("AWS_ENDPOINT_URL", None)
        log = open(Path(store_root) / "operator.log", "w")  # noqa: SIM115 (open for the operator process's life; a pipe nobody reads would block it)
        operator = subprocess.Popen([sys.executable, "-m", "selftaught", "operator", "--namespace", NAMESPACE], env=env, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(5)  # Kopf starts its watches
        idle_rss = rss_mb(operator.pid)[0]
        kubelet = StandInKubelet(cluster.api_client(), store_root, clock)
        kubelet.start()
        started = time.perf_counter()
        for i in range(runs):
            cluster.create("selftaughtruns", run_body(f"run-{i:03d}", store_root), NAMESPACE)
        expected = runs * 5  # categorize, select, pairs, judge-1, train-1, evaluate-1: 5 hand-overs
        deadline = time.monotonic() + 1200
        while len(clock.latencies) < expected and time.monotonic() < deadline and operator.poll() is None:
            time.sleep(0.5)
            if time.perf_counter() - started > 30 and int(time.perf_counter() - started) % 10 == 0:
                stuck = [(o["metadata"]["name"], (o.get("status") or {}).get("message")) for o in cluster.list("selftaughtruns", NAMESPACE)
                         if (o.get("status") or {}).get("phase") != "Succeeded"]
                jobs = {j["metadata"]["name"]: _complete(j) for j in cluster.list("batch/v1/jobs", NAMESPACE)}
                print(f"... {len(clock.latencies)}/{expected} hand-overs; not done: {stuck[:3]}; incomplete jobs: {[n for n, c in jobs.items() if not c][:5]}", flush=True)
        elapsed = time.perf_counter() - started
        finished = cluster.wait_for(
            lambda: sum((o.get("status") or {}).get("phase") == "Succeeded" for o in cluster.list("selftaughtruns", NAMESPACE)) == runs or None,
            timeout=120,
        )
        rss, peak = rss_mb(operator.pid)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        reconcile = {line.split()[0]: float(line.split()[1]) for line in scraped.splitlines() if line.startswith("selftaught_reconcile_seconds_")}
        operator.terminate()
        operator.wait(timeout=30)
        log.close()
        warnings = [line for line in (Path(store_root) / "operator.log").read_text().splitlines() if " ERROR " in line]
        if warnings:
            print(f"operator logged {len(warnings)} errors, first: {warnings[0]}")
        values = sorted(clock.latencies)
        p50 = statistics.median(values)
        p99 = values[int(0.99 * (len(values) - 1))]
        print(f"{runs} runs, {kubelet.jobs} Jobs (+{unrelated} unrelated), {len(values)} hand-overs in {elapsed:.1f}s; all Succeeded: {bool(finished)}")
        print(f"Job completed -> next Job created: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms (target p99 < 250 ms)")
        count, total = reconcile["selftaught_reconcile_seconds_count"], reconcile["selftaught_reconcile_seconds_sum"]
        print(f"operator: {count:.0f} reconciles, {1000 * total / count:.1f} ms each on average (its own work incl. API calls)")
        print(f"operator RSS: idle {idle_rss:.0f} MB, after {rss:.0f} MB, peak {peak:.0f} MB (target < 300 MB)")
        print(json.dumps({"p50_ms": round(p50 * 1000), "p99_ms": round(p99 * 1000), "rss_mb": round(rss), "peak_rss_mb": round(peak)}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
