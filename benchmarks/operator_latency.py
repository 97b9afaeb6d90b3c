"""Many runs at once against the emulated API server (tests/kube), in a namespace full of other
people's Jobs: how long from a stage Job's completion to the next stage's Job, and how much memory
the operator takes.

    python -m benchmarks.operator_latency [RUNS=200] [UNRELATED_JOBS=0] [STAGE_SECONDS=0]
    python -m benchmarks.operator_latency 1000 20000 60  # the big-cluster check

(as a module, from the repository root: the emulator is the test cluster, imported from tests.kube)

With STAGE_SECONDS=0 every stage Job completes the moment it is created: a burst of hand-overs
as fast as the emulator can take them, which on a 2-core machine measures the emulator's queue
as much as the operator. With STAGE_SECONDS=S each stage lasts between S/2 and 3S/2 seconds
(uniformly drawn, seeded), so the runs hand over at about RUNS/S per second, all of them in
flight at once: a cluster with 1,000 live runs whose stages last a minute (real ones last
longer) sees ~17 hand-overs a second, and that is the latency a user waits for.

The operator runs as its own process (`selftaught operator`, KUBECONFIG pointing at the
emulator). A stand-in kubelet, also a process of its own, watches Jobs; for each new one it
writes the stage's manifest to the run's (local) store and marks the Job Complete, as a real pod
would. Latency runs from a stage's completion (its manifest written, which is what a pod does
just before it exits; the Job is marked Complete right after) to the API server storing the
run's next Job: the kubelet reports the first, the emulator's store the second, both on
`time.perf_counter()` (CLOCK_MONOTONIC, one clock for all processes of the machine), paired up
per run afterwards. Targets: p99 < 250 ms and operator RSS < 300 MB at 1,000 runs with 20,000
unrelated Jobs.

The emulator is one Python thread, and everything else in its process takes its GIL. Where a
real cluster does not make the API server wait, neither does this benchmark: the kubelet runs
on other machines there (here: its own process, not a thread beside the emulator); watching for
the runs to succeed reads the phases the emulator stores (listing 1,000 runs every 5 s stalled
the emulator for 0.35-3 s each time, and any hand-over in that window); and Python's cyclic
garbage collector does not run in the emulator's process while the runs go (the heap of the
set-up is frozen first): a real API server's collector runs beside it, while each of Python's full
collections stops the emulator for as long as it walks the heap, 170 ms for the set-up's 460,000
objects alone, and up to 1.3 s as the emulator's own history of the runs grew (measured, with the
hand-overs of that moment at the top of the latency table). Memory freed by reference counting is
freed as usual; the emulator keeps the newest 10 requests, not all, for the same reason.

Both latencies are printed: from the stage's manifest (the stricter one, with the kubelet's own
status write in it) and from the Job stored Complete, the issue's "Job complete".
"""

from __future__ import annotations

import bisect
import gc
import heapq
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, watch

from selftaught.api.crd import crd
from selftaught.pipeline.table import StageRef
from selftaught.store import LocalStore
from selftaught.store.manifest import Manifest, write_manifest

try:
    from tests.kube import ClusterEmulator, FakeCluster
except ModuleNotFoundError as missing:  # run as a file, the repository root is not on the path
    if missing.name != "tests":
        raise
    sys.exit("the test cluster is imported from tests.kube: run this from the repository root as `python -m benchmarks.operator_latency ...`")

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
    """Times stage completions (reported by the kubelet's process) and, inside the emulated API
    server, each Job's creation. Both are `time.perf_counter()`, CLOCK_MONOTONIC on Linux: one
    clock for every process of the machine."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, float]] = []  # (run, when one of its stages finished)
        self.completed: list[tuple[str, float]] = []  # (run, when the API server stored one of its Jobs Complete)
        self.created: dict[str, list[float]] = {}  # run -> when the API server stored each of its Jobs
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}  # "GET selftaughtruns" -> how many the API server served
        self.phases: dict[str, tuple[str | None, str | None]] = {}  # run -> (phase, message), as last stored
        original = ClusterEmulator._store
        handle = ClusterEmulator._handle

        async def count(emulator, request):
            verb = str(request.method).rpartition(".")[2] if request.name or str(request.method) != "method.GET" else "LIST"
            what = f"{verb} {request.resource.plural if request.resource else '-'}{'/' + request.subresource if request.subresource else ''}"
            self.requests[what] = self.requests.get(what, 0) + 1
            try:
                return await handle(emulator, request)
            except Exception as error:
                refused = f"{what} -> {getattr(error, 'status', None) or type(error).__name__}"
                self.requests[refused] = self.requests.get(refused, 0) + 1
                raise

        ClusterEmulator._handle = count

        def store(emulator, res, kind, obj, old):
            if obj.get("kind") == "SelfTaughtRun" and kind != "DELETED":
                status = obj.get("status") or {}
                with self.lock:
                    self.phases[obj["metadata"]["name"]] = (status.get("phase"), status.get("message"))
            run = (obj["metadata"].get("labels") or {}).get("selftaught.dev/run") if obj.get("kind") == "Job" else None
            if run and kind == "ADDED":
                when = time.perf_counter()
                with self.lock:
                    self.created.setdefault(run, []).append(when)
            elif run and kind == "MODIFIED" and _complete(obj) and not (old and _complete(old)):
                when = time.perf_counter()
                with self.lock:
                    self.completed.append((run, when))
            return original(emulator, res, kind, obj, old)

        ClusterEmulator._store = store

    def listen(self, finished: multiprocessing.Queue) -> None:
        """Collect the kubelet process's reports of finished stages (until a None)."""
        while (item := finished.get()) is not None:
            with self.lock:
                self.finished.append(item)

    def jobs(self) -> int:
        with self.lock:
            return sum(len(times) for times in self.created.values())

    def handovers(self) -> int:
        """Jobs that followed another Job of their run."""
        with self.lock:
            return sum(len(times) - 1 for times in self.created.values())

    def latencies(self, since: str = "finished") -> list[tuple[float, float]]:
        """(when, how long): for each finished stage (its manifest written; or, with since="completed",
        its Job stored Complete), the time until the API server stored its run's next Job."""
        with self.lock:
            starts = list(self.finished if since == "finished" else self.completed)
            created = {run: sorted(times) for run, times in self.created.items()}
        latencies = []
        for run, when in starts:
            times = created.get(run, [])
            i = bisect.bisect_right(times, when)
            if i < len(times):
                latencies.append((when, times[i] - when))
        return latencies


def _p99(ordered: list[float]) -> float:
    return ordered[int(0.99 * (len(ordered) - 1))]


def _complete(job: dict) -> bool:
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or [])


class StandInKubelet:
    """Runs every stage Job: marks it active and ready (with STAGE_SECONDS > 0), then completes it
    after writing what the stage would have written. Runs in its own process (`kubelet_process`)."""

    def __init__(self, api: client.ApiClient, store_root: str, finished: Callable[[tuple[str, float]], None], stage_seconds: float = 0.0):
        self.batch = client.BatchV1Api(api)
        self.store_root = store_root
        self.finished = finished
        self.stage_seconds = stage_seconds
        self.due: list[tuple[float, str, dict]] = []  # (when, name, job) of the Jobs still "running"
        self.wakeup = threading.Condition()
        self.durations = random.Random(0)

    def run(self) -> None:
        if self.stage_seconds:
            threading.Thread(target=self._finish_due, daemon=True).start()
        stage_jobs = "app.kubernetes.io/managed-by=selftaught-operator"
        for event in watch.Watch().stream(self.batch.list_namespaced_job, NAMESPACE, label_selector=stage_jobs, deserialize=False):
            if event["type"] != "ADDED":
                continue
            job = event["object"]  # plain JSON: client models would cost more than the rest together
            if not self.stage_seconds:
                self._finish(job)
                continue
            self._start(job)
            seconds = self.stage_seconds * self.durations.uniform(0.5, 1.5)
            with self.wakeup:
                heapq.heappush(self.due, (time.monotonic() + seconds, job["metadata"]["name"], job))
                self.wakeup.notify()

    def _finish_due(self) -> None:
        while True:
            with self.wakeup:
                while not self.due or self.due[0][0] > time.monotonic():
                    self.wakeup.wait(timeout=max(0.0, self.due[0][0] - time.monotonic()) if self.due else None)
                _, _, job = heapq.heappop(self.due)
            self._finish(job)

    def _start(self, job: dict) -> None:
        """The pod is scheduled and Ready: the Job controller counts it active and ready, as a
        real one does a moment after the kubelet reports it (one status write, one event)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {"status": {"startTime": now, "active": 1, "ready": 1}}
        self.batch.patch_namespaced_job_status(job["metadata"]["name"], NAMESPACE, status, _preload_content=False)

    def _finish(self, job: dict) -> None:
        labels = job["metadata"]["labels"]
        run, ref = labels["selftaught.dev/run"], StageRef.parse(labels["selftaught.dev/stage"])
        store = LocalStore(Path(self.store_root) / NAMESPACE / run)
        self.finished((run, time.perf_counter()))
        write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration, seconds=1.0, summary=SUMMARIES.get(ref.name, {})))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {"status": {"active": 0, "ready": 0, "succeeded": 1, "completionTime": now, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]}}  # fmt: skip
        self.batch.patch_namespaced_job_status(job["metadata"]["name"], NAMESPACE, status, _preload_content=False)


def kubelet_process(host: str, store_root: str, stage_seconds: float, finished: multiprocessing.Queue) -> None:
    """The stand-in kubelet, in a process of its own: a real one runs on other machines, and in
    the emulator's process it would take the emulator's GIL for its own work."""
    configuration = client.Configuration()
    configuration.host = host
    StandInKubelet(client.ApiClient(configuration), store_root, finished.put, stage_seconds).run()


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
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}},
        },
    }


def main(runs: int = 200, unrelated: int = 0, stage_seconds: float = 0.0) -> None:
    # The emulator is Python: schema checks on every write (the tests' job) and kmock's full request
    # history (matched on every request) would make it, not the operator, what this measures.
    clock = ApiServerClock()
    with tempfile.TemporaryDirectory() as store_root, FakeCluster(namespaces=(NAMESPACE,), validate=None, request_history=10) as cluster:
        cluster.install_crd(crd())
        for i in range(unrelated):
            cluster.create("batch/v1/jobs", unrelated_job(i), NAMESPACE)
        # The emulator holds every object in this process's heap, and Python's full collections
        # walk all of them (0.2 s for 20,000 Jobs) while holding the GIL: a stop of the
        # world a real API server (Go, concurrent GC) does not have. The set-up is never freed.
        gc.collect()
        gc.freeze()
        gc.disable()  # until the runs are done (see the docstring)
        metrics_port = _free_port()
        env = dict(
            os.environ,
            KUBECONFIG=str(cluster.kubeconfig),
            SELFTAUGHT_METRICS_PORT=str(metrics_port),
            SELFTAUGHT_HEALTH_PORT="0",
            SELFTAUGHT_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        )
        env.pop("AWS_ENDPOINT_URL", None)
        log = open(Path(store_root) / "operator.log", "w")  # noqa: SIM115 (open for the operator process's life; a pipe nobody reads would block it)
        operator = subprocess.Popen(
            [sys.executable, "-m", "selftaught", "operator", "--namespace", NAMESPACE], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        time.sleep(5)  # Kopf starts its watches
        idle_rss = rss_mb(operator.pid)[0]
        finished: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        kubelet = multiprocessing.get_context("spawn").Process(
            target=kubelet_process, args=(cluster.url, store_root, stage_seconds, finished), daemon=True
        )
        kubelet.start()
        threading.Thread(target=clock.listen, args=(finished,), daemon=True).start()
        started = time.perf_counter()
        clock.requests.clear()
        for i in range(runs):
            cluster.create("selftaughtruns", run_body(f"run-{i:03d}", store_root), NAMESPACE)
        expected = runs * 5  # categorize, select, pairs, judge-1, train-1, evaluate-1: 5 hand-overs
        patience = 120 + 3 * 1.5 * stage_seconds  # this long without any progress: something is stuck, say so
        succeeded, last_change, last_seen, last_print = 0, time.monotonic(), (0, 0), time.monotonic()
        while succeeded < runs and time.monotonic() - last_change < patience and operator.poll() is None:
            time.sleep(5)
            with clock.lock:
                phases = sorted(clock.phases.items())
            succeeded = sum(phase == "Succeeded" for _, (phase, _) in phases)
            handovers = clock.handovers()
            if (handovers, succeeded) != last_seen:
                last_seen, last_change = (handovers, succeeded), time.monotonic()
            if time.monotonic() - last_print >= 30:
                last_print = time.monotonic()
                waiting = [(name, message) for name, (phase, message) in phases if phase != "Succeeded"]
                print(f"... {handovers}/{expected} hand-overs, {succeeded}/{runs} runs Succeeded; e.g. {waiting[:2]}", flush=True)
        elapsed = time.perf_counter() - started
        gc.enable()
        rss, peak = rss_mb(operator.pid)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        reconcile = {line.split()[0]: float(line.split()[1]) for line in scraped.splitlines() if line.startswith("selftaught_reconcile_seconds_")}
        operator.terminate()
        operator.wait(timeout=30)
        kubelet.terminate()
        finished.put(None)
        log.close()
        warnings = [line for line in (Path(store_root) / "operator.log").read_text().splitlines() if " ERROR " in line]
        if warnings:
            print(f"operator logged {len(warnings)} errors, first: {warnings[0]}")
        timed = clock.latencies()
        values = sorted(latency for _, latency in timed)
        p50 = statistics.median(values)
        p99 = _p99(values)
        from_complete = sorted(latency for _, latency in clock.latencies(since="completed"))
        p99_complete = _p99(from_complete) if from_complete else None
        pace = f"stages of {stage_seconds / 2:g}-{1.5 * stage_seconds:g} s" if stage_seconds else "every stage done at once (a burst)"
        print(
            f"{runs} runs, {clock.jobs()} Jobs (+{unrelated} unrelated), {pace}: {len(values)} hand-overs in {elapsed:.1f}s "
            f"({len(values) / elapsed:.1f}/s); {succeeded}/{runs} runs Succeeded"
        )
        print(
            f"stage finished (manifest written) -> next Job created: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms (target p99 < 250 ms)"
        )
        if from_complete:
            print(
                f"Job stored Complete -> next Job created: p50 {statistics.median(from_complete) * 1000:.0f} ms, "
                f"p99 {p99_complete * 1000:.0f} ms, max {from_complete[-1] * 1000:.0f} ms"
            )
        slow = sorted(when - started for when, latency in timed if latency >= p99)
        if slow:  # all at once (a storm: what else happened then?) or spread out (the machine's noise)
            print(f"the slowest 1% started at (s into the run): {', '.join(f'{t:.0f}' for t in slow[:: max(1, len(slow) // 25)])}")
        served = {what: n for what, n in sorted(clock.requests.items(), key=lambda item: -item[1]) if n >= runs // 10}
        print(
            f"API requests per run (all its Jobs): {sum(clock.requests.values()) / runs:.1f}; by kind: "
            + ", ".join(f"{what} {n / runs:.1f}" for what, n in served.items())
        )
        count, total = reconcile["selftaught_reconcile_seconds_count"], reconcile["selftaught_reconcile_seconds_sum"]
        print(
            f"operator: {count:.0f} reconciles ({count / runs:.1f} per run), {1000 * total / count:.1f} ms each on average (its own work incl. API calls)"
        )
        print(f"operator RSS: idle {idle_rss:.0f} MB, after {rss:.0f} MB, peak {peak:.0f} MB (target < 300 MB)")
        print(
            json.dumps(
                {
                    "p50_ms": round(p50 * 1000),
                    "p99_ms": round(p99 * 1000),
                    "rss_mb": round(rss),
                    "peak_rss_mb": round(peak),
                    "p99_from_complete_ms": round(p99_complete * 1000) if p99_complete is not None else None,
                }
            )
        )


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(int(arguments[0]) if arguments else 200, int(arguments[1]) if len(arguments) > 1 else 0, float(arguments[2]) if len(arguments) > 2 else 0.0)
