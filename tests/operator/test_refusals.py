"""A Job the API server forbids (403: an admission webhook such as Gatekeeper, a used-up
`count/jobs` quota): the run says so in a condition and ONE event, tries again later and later
(no attempt spent), and goes on by itself once the policy or the quota lets the Job through."""

from __future__ import annotations

from tests.kube import DenyingWebhook, ObjectCountQuota, run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, events_of, finished, quick, status_of


def refused(cluster, name, text):
    return cluster.wait_for(lambda: text in status_of(cluster, name).get("message", "") and status_of(cluster, name), timeout=60)


def test_a_job_an_admission_webhook_denies_is_said_once_retried_with_growing_backoff_and_runs_once_allowed(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path, retries={"perStage": 0, "backoffSeconds": 1})
    with DenyingWebhook(cluster) as webhook, run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "denied"), NAMESPACE)
        first = refused(cluster, "denied", "refused 1x")
        third = refused(cluster, "denied", "refused 3x")  # tries 1 s, then 2 s, then 4 s apart
        assert "next try in 4s" in third["message"] or "next try in 3s" in third["message"]
        webhook.denying = False  # the team label policy is fixed
        status = finished(cluster, "denied", timeout=90)
    assert condition({"status": first}, "Reconciling")["reason"] == "JobRefused"
    assert 'admission webhook "validation.gatekeeper.sh" denied the request: [require-team-label]' in first["message"]
    assert status["phase"] == "Succeeded" and status["attempts"]["categorize"]["attempts"] == 1  # refusals spend no attempt
    assert [e["reason"] for e in events_of(cluster, "denied")].count("JobRefused") == 1  # not one per try
    assert len(webhook.denied) <= 6  # backed off: not one try per resync (every 5 s here) or per status echo


def test_a_used_up_job_quota_is_named_and_the_run_goes_on_when_the_quota_frees(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path, retries={"backoffSeconds": 1})
    with ObjectCountQuota(cluster, NAMESPACE, hard=10, used=10) as quota, run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "quota"), NAMESPACE)
        waiting = refused(cluster, "quota", "exceeded quota")
        quota.hard = 100  # another team's Jobs finished
        status = finished(cluster, "quota", timeout=90)
    assert "count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10" in waiting["message"]
    assert condition({"status": waiting}, "Reconciling")["reason"] == "JobRefused"
    assert status["phase"] == "Succeeded"
