"""A spot node reclaimed under a running stage: the Job's replacement pod waits for a node, and its
startup clock starts when it was created (as Kueue's recovery timeout runs from the last
PodsReady=False), not when the Job started, so a reclaim spends no retry."""

from __future__ import annotations

import time

from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, finished, quick, status_of


def test_the_replacement_after_a_reclaim_gets_the_whole_startup_timeout_and_spends_no_retry(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env.update(FAKE_STAGE_SECONDS="categorize=30", FAKE_STAGE_RESUME="1")  # the replacement finishes at once
    fake_stages.nodes = [{"name": "spot-1"}]
    run = quick(make_run, tmp_path, scheduling={"generation": {"startupTimeoutSeconds": 6}}, retries={"perStage": 0})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "spot"), NAMESPACE)
        cluster.wait_for(lambda: any(a.job == "spot-categorize-0" and a.pid for a in fake_stages.attempts), timeout=60)
        time.sleep(7)  # the Job started longer ago than the startup timeout
        assert fake_stages.lose_node("spot-1")  # reclaimed mid-stage: the replacement waits for a node
        waiting = cluster.wait_for(lambda: "Unschedulable" in status_of(cluster, "spot").get("message", "") and status_of(cluster, "spot"), timeout=30)
        fake_stages.nodes.append({"name": "spot-2"})  # the node pool scales up
        status = finished(cluster, "spot", timeout=90)
    assert waiting["phase"] == "Running", waiting
    assert status["phase"] == "Succeeded", status["message"]
    assert status["attempts"]["categorize"]["attempts"] == 1  # the reclaim spent no retry
