"""`spec.serve` on the test cluster: a succeeded run gets its judge's server (a Deployment and a
Service it owns), the endpoint in its status, a rollout only when the served checkpoint changes
(beside the old server or in its place, `serve.rollout`), a status that says what the ready pods
serve, and no server once serve is off or the run is gone.

The stages are fakes (tests/operator/fake_stage.py: iteration i's checkpoint is
s3://fake/iter-00i/train/checkpoint, every evaluation scores 0.7). Most tests here play the
Deployment controller by writing the Deployment's status, or run it with a stand-in server that
answers the probe (tests/kube/deployments.py); the last ones run the server pod for
real (tests/kube/deployments.py: vLLM's CPU build on the tiny model, fetched from S3 as a trained
checkpoint is) and calls it through its Service with the judge client."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import boto3
import kubernetes_validate
import pytest

from selftaught.cli import main
from tests.kube import DeploymentController, run_operator

from .conftest import HANDLERS, NAMESPACE, REPO, TERMINATION_MESSAGE_VARIABLE, run_object

RUNS = "selftaught.dev/v1alpha1/selftaughtruns"
RESYNC_SECONDS = 5  # conftest's SELFTAUGHT_RESYNC_SECONDS: also how often a starting server is looked at
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def status_of(cluster, name):
    return (cluster.get(RUNS, NAMESPACE, name) or {}).get("status") or {}


def settled(cluster, name, generation, timeout=60):
    """The run's status once it has finished at `generation`."""

    def done():
        obj = cluster.get(RUNS, NAMESPACE, name) or {}
        status = obj.get("status") or {}
        return status if status.get("observedGeneration") == generation and status.get("phase") in ("Succeeded", "Failed") else None

    return cluster.wait_for(done, timeout=timeout)


def serving_of(cluster, name, check, timeout=30):
    return cluster.wait_for(lambda: (s := status_of(cluster, name).get("serving")) and check(s) and s, timeout=timeout)


#: what runs in a server pod when the test is about what is around the server: it answers /health
STAND_IN = [sys.executable, "-c", textwrap.dedent(
    """
    import http.server, sys
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
    port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=")[1])
    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
    """
), "--port=8000"]  # fmt: skip


def stand_in_servers(cluster, tmp_path, **options):
    """The Deployment controller running the stand-in server in every pod."""
    return DeploymentController(
        cluster, cwd=REPO, log_dir=tmp_path / "server-logs", stand_in=STAND_IN, poll_interval=0.1, probe_interval=0.2, kill_grace=2, **options
    )  # fmt: skip


def test_a_succeeded_run_serves_its_best_checkpoint_and_rolls_out_only_a_new_one(cluster, fake_stages, make_run, tmp_path):
    run = make_run(storage=str(tmp_path / "store"), evaluate={"baseline": False}, serve={"enabled": True}, scheduling={"generation": {"tolerations": [GPU_TOLERATION]}})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "served"), NAMESPACE)
        assert settled(cluster, "served", 1)["phase"] == "Succeeded"
        # the pass that creates the Deployment says "starting"; the next, seeing it, says what it waits for
        serving = serving_of(cluster, "served", lambda s: s.get("endpoint") and s["message"].endswith("checkpoint"))
        deployment = cluster.get(DEPLOYMENTS, NAMESPACE, "served-judge")
        service = cluster.get(SERVICES, NAMESPACE, "served-judge")
        assert not serving["ready"] and serving["replicas"] == "0/1"

        with stand_in_servers(cluster, tmp_path):  # now its pods run
            assert serving_of(cluster, "served", lambda s: s["ready"])["replicas"] == "1/1"

            # a second iteration that is no better: the healthy server is left as it is
            cluster.patch(RUNS, NAMESPACE, "served", {"spec": {"iterations": 2}})
            settled(cluster, "served", 2)
            assert "evaluate-2" in status_of(cluster, "served")["attempts"]
            kept = cluster.get(DEPLOYMENTS, NAMESPACE, "served-judge")
            assert kept["metadata"]["generation"] == 1 and status_of(cluster, "served")["serving"]["iteration"] == 1

            # asking for iteration 2 rolls its checkpoint out
            cluster.patch(RUNS, NAMESPACE, "served", {"spec": {"serve": {"iteration": 2}}})
            rolled = cluster.wait_for(lambda: (d := cluster.get(DEPLOYMENTS, NAMESPACE, "served-judge")) and d["metadata"]["generation"] == 2 and d, timeout=30)
            second = serving_of(cluster, "served", lambda s: s["iteration"] == 2)
    obj = cluster.get(RUNS, NAMESPACE, "served")

    assert serving == {
        "endpoint": f"http://served-judge.{NAMESPACE}.svc:8000/v1",
        "model": "served",
        "iteration": 1,
        "checkpoint": "s3://fake/iter-001/train/checkpoint",
        "score": 0.7,
        "ready": False,
        "replicas": "0/1",
        "message": "starting the server of iteration 1: fetching and loading the checkpoint",
    }
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    kubernetes_validate.validate(service, "1.33", strict=True)
    for child in (deployment, service):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("SelfTaughtRun", obj["metadata"]["uid"], True)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "selftaught", "serve", "--host=0.0.0.0", "--port=8000"]
    env = {e["name"]: e for e in container["env"]}
    served = json.loads(env["SELFTAUGHT_SERVE"]["value"])
    assert (served["name"], served["iteration"], served["model"]["source"]) == ("served", 1, "s3://fake/iter-001/train/checkpoint")
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # generation.tensorParallel
    assert pod["tolerations"] == [GPU_TOLERATION]  # placed like the generation stages
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]

    assert rolled["spec"]["template"]["metadata"]["annotations"]["selftaught.dev/checkpoint"] == "s3://fake/iter-002/train/checkpoint"
    assert second["checkpoint"] == "s3://fake/iter-002/train/checkpoint" and second["endpoint"] == serving["endpoint"]
    reasons = [e["reason"] for e in cluster.list("v1/events", NAMESPACE) if e["involvedObject"]["name"] == "served"]
    assert reasons.count("ServingStarted") == 1 and reasons.count("ServingUpdated") == 1


def test_serve_off_removes_the_server_and_deleting_the_run_deletes_it(cluster, fake_stages, make_run, tmp_path):
    run = make_run(storage=str(tmp_path / "store"), evaluate={"baseline": False}, serve={"enabled": True})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "judged"), NAMESPACE)
        cluster.wait_for(lambda: cluster.get(DEPLOYMENTS, NAMESPACE, "judged-judge"), timeout=60)

        cluster.patch(RUNS, NAMESPACE, "judged", {"spec": {"serve": {"enabled": False}}})
        cluster.wait_for(lambda: cluster.get(DEPLOYMENTS, NAMESPACE, "judged-judge") is None and cluster.get(SERVICES, NAMESPACE, "judged-judge") is None, timeout=30)
        cluster.wait_for(lambda: status_of(cluster, "judged").get("observedGeneration") == 2 and "serving" not in status_of(cluster, "judged"), timeout=30)

        # a Deployment deleted by hand comes back while serve is on
        cluster.patch(RUNS, NAMESPACE, "judged", {"spec": {"serve": {"enabled": True}}})
        first = cluster.wait_for(lambda: cluster.get(DEPLOYMENTS, NAMESPACE, "judged-judge"), timeout=30)
        cluster.delete(DEPLOYMENTS, NAMESPACE, "judged-judge")
        again = cluster.wait_for(lambda: (d := cluster.get(DEPLOYMENTS, NAMESPACE, "judged-judge")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d, timeout=30)
        assert again["metadata"]["annotations"]["selftaught.dev/checkpoint"] == "s3://fake/iter-001/train/checkpoint"

        cluster.delete(RUNS, NAMESPACE, "judged")
        cluster.wait_for(lambda: cluster.get(DEPLOYMENTS, NAMESPACE, "judged-judge") is None and cluster.get(SERVICES, NAMESPACE, "judged-judge") is None, timeout=30)


def test_a_run_that_fails_serves_nothing_and_says_why(cluster, fake_stages, make_run, tmp_path):
    run = make_run(storage=str(tmp_path / "store"), evaluate={"baseline": False}, serve={"enabled": True}, retries={"perStage": 0})
    fake_stages.fail_next("broken-categorize", exit_code=3, message='{"reason": "InvalidInput", "message": "bad line", "permanent": true}')
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "broken"), NAMESPACE)
        assert settled(cluster, "broken", 1)["phase"] == "Failed"
        serving = serving_of(cluster, "broken", lambda s: s.get("message"))
    assert serving == {"ready": False, "message": "the run failed: nothing new is served until it succeeds"}
    assert cluster.get(DEPLOYMENTS, NAMESPACE, "broken-judge") is None


#: fetching the tiny model and starting vLLM's CPU build: about a minute on 2 idle cores
SERVER_STARTUP_SECONDS = 420


def upload_folder(folder: Path, uri: str, endpoint: str) -> None:
    """Put a model folder where a train stage leaves its checkpoint."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_the_server_of_a_finished_run_answers_the_judge_client_through_its_service(cluster, fake_stages, make_run, tiny_model, bucket, s3_server, tmp_path, capsys):
    checkpoint = f"{bucket}/trained/iter-001/checkpoint"
    upload_folder(tiny_model, checkpoint, s3_server)
    fake_stages.extra_env["FAKE_CHECKPOINT"] = checkpoint  # what the (fake) train stage reports
    run = make_run(storage=bucket, endpoint=s3_server, evaluate={"baseline": False}, serve={"enabled": True})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"id": "sum", "instruction": "What is 12 times 12?", "response_a": "12 times 12 is 144.", "response_b": "12 times 12 is 124."}) + "\n"
    )

    def local_paths(deployment, index, env):  # what a node's volumes would be, on this machine
        return {**env, "HOME": str(tmp_path / "server-home"), "SELFTAUGHT_CACHE": str(tmp_path / "server-cache"), "HF_HOME": str(tmp_path / "server-cache" / "hf")}

    servers = DeploymentController(
        cluster, cwd=REPO, log_dir=tmp_path / "server-logs", rewrite_env=local_paths, termination_message_env=TERMINATION_MESSAGE_VARIABLE,
        extra_env={"PYTHONPATH": str(REPO / "operator"), "AWS_DEFAULT_REGION": "us-east-1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    with servers:
        with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
            cluster.create(RUNS, run_object(run, "served"), NAMESPACE)
            assert settled(cluster, "served", 1)["phase"] == "Succeeded"
            try:
                serving = serving_of(cluster, "served", lambda s: s["ready"], timeout=SERVER_STARTUP_SECONDS)
            except TimeoutError:
                pytest.fail(f"the server never became ready; its pods said:\n{servers.logs('served-judge')[-6000:]}")
        # the operator's runner holds sys.stdout while it runs; the server needs no operator
        url = servers.url(serving["endpoint"])  # the Service's address, as a client in the cluster calls it
        with pytest.raises(SystemExit) as ended:
            main(["judge", "--endpoint", url, "--max-tokens", "24", str(pairs)])
        out, err = capsys.readouterr()
        (pod,) = cluster.list("v1/pods", NAMESPACE, label_selector="app.kubernetes.io/component=serve")

    assert ended.value.code == 0, err
    assert serving["checkpoint"] == checkpoint and serving["replicas"] == "1/1" and serving["message"] == "serving iteration 1"
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["id"] == "sum" and len(result["verdicts"]) == 2 and all(v in ("A", "B") for v in result["verdicts"]), result
    assert "judged 1 pair" in err
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] and container["restartCount"] == 0  # it came up once, and stayed up
    said = servers.logs("served-judge")
    assert f"serving iteration 1 of run served ({checkpoint})" in said


def test_a_server_that_keeps_crashing_is_reported_with_what_it_said(cluster, fake_stages, make_run, bucket, s3_server, tmp_path):
    missing = f"{bucket}/trained/never-written"
    fake_stages.extra_env["FAKE_CHECKPOINT"] = missing  # a checkpoint the server cannot fetch
    run = make_run(storage=bucket, endpoint=s3_server, evaluate={"baseline": False}, serve={"enabled": True})
    servers = DeploymentController(
        cluster, cwd=REPO, log_dir=tmp_path / "server-logs", retry_interval=1, termination_message_env=TERMINATION_MESSAGE_VARIABLE,
        extra_env={"PYTHONPATH": str(REPO / "operator"), "AWS_DEFAULT_REGION": "us-east-1", "SELFTAUGHT_CACHE": str(tmp_path / "server-cache")},
    )  # fmt: skip
    with servers, run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "crashing"), NAMESPACE)
        assert settled(cluster, "crashing", 1)["phase"] == "Succeeded"  # the run did its work; its server did not
        serving = serving_of(cluster, "crashing", lambda s: "cannot start" in (s.get("message") or ""), timeout=90)
        time.sleep(2 * RESYNC_SECONDS)  # looked at again: still one event
    assert not serving["ready"] and serving["replicas"] == "0/1"
    assert serving["message"].startswith("the server cannot start: CrashLoopBackOff: pod crashing-judge-"), serving
    assert "the server exited with code 2 (Error), restarted" in serving["message"] and missing in serving["message"], serving
    events = [e for e in cluster.list("v1/events", NAMESPACE) if e["involvedObject"]["name"] == "crashing" and e["reason"] == "ServingNotStarting"]
    assert len(events) == 1 and events[0]["type"] == "Warning" and "CrashLoopBackOff" in events[0]["message"]


def test_a_rollout_that_waits_for_a_gpu_says_the_old_iteration_serves_and_recreate_frees_the_gpu(cluster, fake_stages, make_run, tmp_path):
    run = make_run(storage=str(tmp_path / "store"), iterations=2, evaluate={"baseline": False}, serve={"enabled": True})
    one_gpu = [{"name": "gpu-node", "allocatable": {"nvidia.com/gpu": "1"}}]  # room for one server
    with stand_in_servers(cluster, tmp_path, nodes=one_gpu), run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "scarce"), NAMESPACE)
        assert settled(cluster, "scarce", 1)["phase"] == "Succeeded"
        first = serving_of(cluster, "scarce", lambda s: s["ready"])
        # iteration 2 surges beside iteration 1: its pod waits for a second GPU the node does not have
        cluster.patch(RUNS, NAMESPACE, "scarce", {"spec": {"serve": {"iteration": 2}}})
        rolling = serving_of(cluster, "scarce", lambda s: "rolling out" in s["message"] and "cannot start" in s["message"])
        surged = cluster.get(DEPLOYMENTS, NAMESPACE, "scarce-judge")
        # recreate: iteration 1's server stops and its GPU goes to iteration 2's
        cluster.patch(RUNS, NAMESPACE, "scarce", {"spec": {"serve": {"rollout": "recreate"}}})
        second = serving_of(cluster, "scarce", lambda s: s["iteration"] == 2 and s["ready"])
        recreated = cluster.get(DEPLOYMENTS, NAMESPACE, "scarce-judge")
        pods = cluster.list("v1/pods", NAMESPACE, label_selector="app.kubernetes.io/component=serve")

    assert (first["iteration"], first["message"]) == (1, "serving iteration 1")
    # what the ready pod serves, not what the Deployment asks for
    assert (rolling["iteration"], rolling["checkpoint"], rolling["ready"], rolling["replicas"]) == (1, "s3://fake/iter-001/train/checkpoint", True, "1/1")
    assert rolling["message"].startswith(
        "serving iteration 1; rolling out iteration 2: the server cannot start: Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    ), rolling
    assert surged["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert recreated["spec"]["strategy"] == {"type": "Recreate"}
    assert (second["checkpoint"], second["replicas"], second["message"]) == ("s3://fake/iter-002/train/checkpoint", "1/1", "serving iteration 2")
    (pod,) = pods
    assert pod["metadata"]["annotations"]["selftaught.dev/iteration"] == "2"
    # a loading server is not called stuck before its startup budget, nor restarted for one slow answer
    (container,) = recreated["spec"]["template"]["spec"]["containers"]
    startup = container["startupProbe"]
    assert recreated["spec"]["progressDeadlineSeconds"] > startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    assert {container[probe]["timeoutSeconds"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")} == {5}
    events = [e for e in cluster.list("v1/events", NAMESPACE) if e["involvedObject"]["name"] == "scarce" and e["reason"] == "ServingNotStarting"]
    assert len(events) == 1 and "Insufficient nvidia.com/gpu" in events[0]["message"]
