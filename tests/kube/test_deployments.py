"""The test cluster's Deployment controller (tests/kube/deployments.py): servers run, answer through
their Service, restart, roll out and go away as a Deployment's pods do."""

from __future__ import annotations

import sys
import textwrap
import urllib.request

import pytest

from . import DeploymentController, FakeCluster

NAMESPACE = "default"
DEPLOYMENTS = "apps/v1/deployments"
SERVER = textwrap.dedent(
    """
    import argparse, http.server, os, pathlib, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--fail-first", default="")
    args = parser.parse_args()
    if args.fail_first and not pathlib.Path(args.fail_first).exists():
        pathlib.Path(args.fail_first).write_text("crashed once")
        sys.exit("cannot load the model: out of memory")
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ.get("ANSWER", "").encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
    http.server.HTTPServer(("127.0.0.1", args.port), Answer).serve_forever()
    """
)


@pytest.fixture
def cluster():
    with FakeCluster() as fake:
        yield fake


@pytest.fixture
def servers(cluster, tmp_path):
    with DeploymentController(
        cluster, cwd=tmp_path, log_dir=tmp_path / "logs", poll_interval=0.05, probe_interval=0.1, retry_interval=0.2, kill_grace=2
    ) as controller:
        yield controller


def deployment(name: str, answer: str, *extra_args: str, env: list | None = None) -> dict:
    labels = {"app": name}
    container = {
        "name": "server", "image": "python:3.12",
        "command": [sys.executable, "-c", SERVER, "--port=8000", *extra_args],
        "env": [{"name": "ANSWER", "value": answer}, *(env or [])],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }  # fmt: skip
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def service(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def ask(servers: DeploymentController, url: str) -> str:
    with urllib.request.urlopen(servers.url(url), timeout=5) as answer:
        return answer.read().decode()


def ready(cluster, name: str, generation: int = 1):
    def check():
        status = (cluster.get(DEPLOYMENTS, NAMESPACE, name) or {}).get("status") or {}
        return (
            status.get("observedGeneration") == generation
            and status.get("readyReplicas") == 1
            and not status.get("unavailableReplicas")
            and status.get("updatedReplicas") == status.get("replicas") == 1
            and status
        )

    return cluster.wait_for(check, timeout=30)


def test_a_deployments_server_becomes_ready_and_answers_through_its_service(cluster, servers):
    cluster.create(DEPLOYMENTS, deployment("judge", "verdict: A"), NAMESPACE)
    cluster.create("v1/services", service("judge"), NAMESPACE)
    status = ready(cluster, "judge")
    assert ask(servers, "http://judge.default.svc/v1/health") == "verdict: A"
    assert ask(servers, "http://judge.default.svc.cluster.local:80/") == "verdict: A"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewReplicaSetAvailable")}
    (pod,) = cluster.list("v1/pods", NAMESPACE, label_selector="app=judge")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Deployment" and "pod-template-hash" in pod["metadata"]["labels"]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    with pytest.raises(LookupError, match="no Service default/other"):
        servers.url("http://other.default.svc/")


def test_a_new_template_rolls_out_and_the_old_server_serves_until_the_new_one_is_ready(cluster, servers):
    cluster.create(DEPLOYMENTS, deployment("judge", "old"), NAMESPACE)
    cluster.create("v1/services", service("judge"), NAMESPACE)
    ready(cluster, "judge")
    (old,) = servers.pods
    cluster.patch(
        DEPLOYMENTS,
        NAMESPACE,
        "judge",
        {"spec": {"template": {"spec": {"containers": [deployment("judge", "new")["spec"]["template"]["spec"]["containers"][0]]}}}},
    )
    ready(cluster, "judge", generation=2)
    cluster.wait_for(lambda: not old.running, timeout=10)
    assert ask(servers, "http://judge.default.svc/") == "new"
    (new,) = servers.pods
    assert new.template_hash != old.template_hash and old.attempt.killed
    (pod,) = cluster.list("v1/pods", NAMESPACE, label_selector="app=judge")
    assert pod["metadata"]["name"] == new.name


def test_a_server_that_exits_is_restarted_in_the_same_pod(cluster, servers, tmp_path):
    cluster.create(DEPLOYMENTS, deployment("judge", "up", f"--fail-first={tmp_path / 'crashed'}"), NAMESPACE)
    ready(cluster, "judge")
    (pod,) = cluster.list("v1/pods", NAMESPACE, label_selector="app=judge")
    (container,) = pod["status"]["containerStatuses"]
    assert container["restartCount"] == 1 and container["ready"]
    assert container["lastState"]["terminated"] | {"startedAt": None, "finishedAt": None} == {
        "exitCode": 1, "reason": "Error", "message": "cannot load the model: out of memory", "startedAt": None, "finishedAt": None
    }  # fmt: skip


def test_a_missing_secret_keeps_the_pod_waiting_and_deleting_the_deployment_stops_its_server(cluster, servers):
    secret_env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}]
    cluster.create(DEPLOYMENTS, deployment("judge", "up", env=secret_env), NAMESPACE)

    def waiting():
        pods = cluster.list("v1/pods", NAMESPACE, label_selector="app=judge")
        state = pods and ((pods[0].get("status") or {}).get("containerStatuses") or [{}])[0].get("state", {}).get("waiting")
        return state if state and state.get("reason") == "CreateContainerConfigError" else None

    assert cluster.wait_for(waiting, timeout=10)["message"] == 'secret "hf-token" not found'
    assert cluster.get(DEPLOYMENTS, NAMESPACE, "judge")["status"]["conditions"][0]["status"] == "False"
    cluster.create("v1/secrets", {"metadata": {"name": "hf-token"}, "stringData": {"token": "t"}}, NAMESPACE)
    ready(cluster, "judge")
    (server,) = servers.pods
    cluster.delete(DEPLOYMENTS, NAMESPACE, "judge")
    cluster.wait_for(lambda: not server.running and not servers.pods, timeout=10)


def test_a_server_that_keeps_exiting_waits_longer_each_time_as_the_kubelet_backs_off(cluster):
    controller = DeploymentController(cluster, cwd=".", retry_interval=10)  # the kubelet's numbers: 10 s doubling to 5 min
    waits, previous = [], 0.0
    for _ in range(7):
        previous = controller.crash_backoff(previous, ran_for=1.0)
        waits.append(previous)
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert controller.crash_backoff(300, ran_for=601) == 10  # a run that lasted ten minutes: the crash loop is forgotten


def gpu_deployment(answer: str, strategy: str) -> dict:
    body = deployment("judge", answer)
    body["spec"]["strategy"] = {"type": strategy}
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return body


@pytest.mark.parametrize("strategy", ["RollingUpdate", "Recreate"])
def test_on_a_node_with_one_gpu_a_surge_waits_pending_beside_the_old_server_and_recreate_frees_the_gpu_first(cluster, tmp_path, strategy):
    nodes = [{"name": "gpu-node", "allocatable": {"nvidia.com/gpu": "1"}}]
    with DeploymentController(
        cluster, cwd=tmp_path, log_dir=tmp_path / "logs", poll_interval=0.05, probe_interval=0.1, kill_grace=2, nodes=nodes
    ) as servers:  # fmt: skip
        cluster.create(DEPLOYMENTS, gpu_deployment("old", strategy), NAMESPACE)
        cluster.create("v1/services", service("judge"), NAMESPACE)
        ready(cluster, "judge")
        container = gpu_deployment("new", strategy)["spec"]["template"]["spec"]["containers"][0]
        cluster.patch(DEPLOYMENTS, NAMESPACE, "judge", {"spec": {"template": {"spec": {"containers": [container]}}}})
        if strategy == "Recreate":
            ready(cluster, "judge", generation=2)
            assert ask(servers, "http://judge.default.svc/") == "new"
            return
        # RollingUpdate (maxSurge): the new pod needs a second GPU the node does not have
        pending = cluster.wait_for(
            lambda: [p for p in cluster.list("v1/pods", NAMESPACE) if (p.get("status") or {}).get("phase") == "Pending" and p["status"].get("conditions")],
            timeout=10,
        )  # fmt: skip
        assert ask(servers, "http://judge.default.svc/") == "old"
    ((pod,),) = [pending]
    (scheduled,) = pod["status"]["conditions"]
    assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == ("PodScheduled", "False", "Unschedulable")
    assert scheduled["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    events = [e for e in cluster.list("v1/events", NAMESPACE) if e["reason"] == "FailedScheduling"]
    assert len(events) == 1 and events[0]["involvedObject"]["name"] == pod["metadata"]["name"]
