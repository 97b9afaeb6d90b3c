"""Prometheus metrics of the operator (scraped through the chart's ServiceMonitor).

Defined once per process, here, not in the handler module, which tests load repeatedly."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RUNS = Gauge("selftaught_runs", "SelfTaughtRuns by phase.", ["phase"])
STAGE_SECONDS = Histogram(
    "selftaught_stage_duration_seconds",
    "Compute seconds of finished stages (from their manifests).",
    ["stage"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
)
JOB_FAILURES = Counter("selftaught_job_failures_total", "Stage Jobs that failed.", ["stage", "reason"])
RETRIES = Counter("selftaught_stage_retries_total", "Stage Jobs re-created after a failure.", ["stage"])
JOBS_CREATED = Counter("selftaught_jobs_created_total", "Stage Jobs created.", ["stage"])
DISRUPTIONS = Counter("selftaught_stage_disruptions_total", "Disruptions of stage pods (spot reclaims, drains, preemptions), by cause.", ["stage", "cause"])
REDONE_GPU_SECONDS = Counter("selftaught_redone_gpu_seconds_total", "GPU-seconds of work that disruptions made stages do again.", ["stage"])
KEPT = Gauge("selftaught_examples_kept", "Judgments kept for training, per iteration.", ["namespace", "run", "iteration"])
ACCURACY = Gauge("selftaught_judge_accuracy", "Evaluation accuracy per iteration.", ["namespace", "run", "iteration"])
RECONCILE_SECONDS = Histogram(
    "selftaught_reconcile_seconds", "Time to reconcile one run.", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
)

_started: set[int] = set()


def serve(port: int) -> None:
    if port and port not in _started:
        start_http_server(port)
        _started.add(port)
