"""manifests/: generated, never hand-kept: the Helm chart rendered for a plain install plus the CRD
(exactly `selftaught crd`), held equal by `python docs/gen_reference.py --check`; `kubectl
kustomize manifests/` gives exactly those objects, which pass the real Kubernetes schemas; the
operator runs locked down with least-privilege RBAC; the example runs are valid for both the code
and the CRD, and make valid, locked-down Jobs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selftaught.api.crd import crd, crd_yaml
from selftaught.api.load import load_run, parse_run
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import build_job, build_service, needs_service
from selftaught.pipeline.planner import stage_graph

from .support import (
    EXAMPLES,
    KOPF_CALLS,
    MANIFESTS,
    OPERATOR_PERMISSIONS,
    OWNER_FINALIZERS,
    REPO,
    chart_objects,
    crd_validator,
    gen_reference,
    kustomize_objects,
    load_all,
    permissions,
    rbac_problems,
    security_problems,
    validate_object,
)

#: What an example may add to a stage container: RDMA over InfiniBand pins memory.


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_the_crd_is_exactly_what_selftaught_crd_prints():
    assert (MANIFESTS / "crd.yaml").read_text() == crd_yaml(), "regenerate: python docs/gen_reference.py"


def test_manifests_are_the_chart_rendered():
    """`gen_reference.py --check`: every manifests/*.yaml is what the generator renders from the
    chart (and the code), and there is no other."""
    result = subprocess.run(
        [sys.executable, str(REPO / "docs" / "gen_reference.py"), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"run `python docs/gen_reference.py`:\n{result.stdout}{result.stderr}"
    generated = {path.name for path in gen_reference().manifests()}
    assert generated == {path.name for path in MANIFESTS.glob("*.yaml")}


def test_kustomize_gives_exactly_the_charts_objects():
    """What `kubectl apply -k manifests/` creates is the chart with MANIFEST_VALUES (Helm's own
    labels aside), the namespace and the CRD; kustomize changes nothing on the way."""
    module = gen_reference()
    expected = chart_objects(module.MANIFEST_VALUES, namespace=module.MANIFEST_NAMESPACE)
    for obj in expected:
        for metadata in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
            for label in module.HELM_LABELS:
                (metadata.get("labels") or {}).pop(label, None)
    expected += [yaml.safe_load(module.MANIFEST_NAMESPACE_YAML), crd()]

    def key(obj):
        return obj["kind"], obj["metadata"]["name"]

    assert sorted(kustomize_objects(), key=key) == sorted(expected, key=key)
    assert not [o for o in kustomize_objects() for v in (o["metadata"].get("labels") or {}).values() if v == "Helm"]


def test_the_generator_notices_drift_and_strays_in_manifests(tmp_path, monkeypatch):
    module = gen_reference()
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    deployment = copy / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("replicas: 1", "replicas: 2"))
    (copy / "extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    monkeypatch.setattr(module, "MANIFESTS", copy)
    assert {path.name for path in module.stale() if path.parent == copy} == {"deployment.yaml", "extra.yaml"}
    monkeypatch.setattr(module, "outputs", module.manifests)  # write nothing outside tmp_path
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0  # rewrites the stale one, removes the stray
    assert module.stale() == [] and not (copy / "extra.yaml").exists()
    assert deployment.read_text() == (MANIFESTS / "deployment.yaml").read_text()


def test_kustomize_renders_valid_objects_in_the_operator_namespace():
    objects = kustomize_objects()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
    )
    for obj in objects:
        validate_object(obj)
        if obj["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "selftaught-system"
    (crd_object,) = by_kind(objects, "CustomResourceDefinition")
    assert crd_object == crd()


def test_example_runs_are_not_part_of_the_kustomization():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert not [r for r in kustomization["resources"] if "example" in r]


def test_every_workload_is_locked_down():
    objects = kustomize_objects()
    for obj in objects:
        assert security_problems(obj) == []
    (namespace,) = by_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_operator_has_exactly_its_permissions_and_no_secrets():
    objects = kustomize_objects()
    (role,) = by_kind(objects, "ClusterRole")
    assert rbac_problems(role) == []
    assert permissions(role["rules"]) == OPERATOR_PERMISSIONS
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    (account,) = by_kind(objects, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


def _api_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes client call the controller makes."""
    calls = set()
    resources = {"job": "jobs", "service": "services", "pod": "pods", "event": "events", "custom_object": "selftaughtruns", "deployment": "deployments"}
    verbs = {"list": "list", "create": "create", "delete": "delete", "patch": "patch", "read": "get", "get": "get", "replace": "update"}
    for path in (REPO / "operator" / "selftaught" / "controller").glob("*.py"):
        pattern = r"\.(list|create|delete|patch|read|get|replace)_namespaced_(job|service|pod|event|custom_object|deployment)(_status)?\("
        for verb, resource, status in re.findall(pattern, path.read_text()):
            calls.add((resources[resource] + ("/status" if status else ""), verbs[verb]))
    return calls


def test_rbac_covers_every_call_the_controller_makes_and_nothing_else():
    granted = {(resource, verb) for _, resource, verb in OPERATOR_PERMISSIONS}
    calls = _api_calls()
    assert calls, "found no API calls: has the controller moved?"
    assert calls <= granted, f"missing from RBAC: {sorted(calls - granted)}"
    assert granted >= KOPF_CALLS
    unused = granted - calls - KOPF_CALLS - OWNER_FINALIZERS
    assert not unused, f"granted but never used: {sorted(unused)}"
    assert not [p for p in OPERATOR_PERMISSIONS if p[0] == "events.k8s.io"]  # Kopf and the operator post core/v1 Events


def test_the_operator_deployment():
    objects = kustomize_objects()
    (deployment,) = by_kind(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["operator", "--all-namespaces"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    defaults = OperatorConfig()
    assert env["SELFTAUGHT_GENERATE_IMAGE"] == defaults.generate_image
    assert env["SELFTAUGHT_TRAIN_IMAGE"] == defaults.train_image
    assert env["SELFTAUGHT_RL_IMAGE"] == defaults.rl_image
    assert env["SELFTAUGHT_METRICS_PORT"] == "8080" and env["SELFTAUGHT_HEALTH_PORT"] == "8081"
    assert {"SELFTAUGHT_DEFAULT_S3_ENDPOINT", "SELFTAUGHT_DEFAULT_CREDENTIALS_SECRET"} <= set(env)
    assert OperatorConfig.from_env({k: v for k, v in env.items() if v is not None}) == defaults
    assert container["envFrom"] == [{"secretRef": {"name": "selftaught-s3", "optional": True}}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    (account,) = by_kind(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_the_metrics_service_selects_the_operator_and_never_a_stage_pod():
    objects = kustomize_objects()
    (service,) = by_kind(objects, "Service")
    (deployment,) = by_kind(objects, "Deployment")
    selector = service["spec"]["selector"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    run = load_run(EXAMPLES[0])
    for node in stage_graph(run.spec):
        labels = build_job(run, node.ref, 0, OperatorConfig())["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= labels.items(), f"the metrics Service would select {node.ref.label} pods"


# -- the example runs -----------------------------------------------------------------------------


def _documents(path: Path):
    (document,) = load_all(path.read_text())
    return document


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_a_valid_run_for_the_code_and_for_the_crd(path):
    document = _documents(path)
    run = parse_run(document, source=str(path))
    assert run.metadata.name == path.stem
    errors = sorted(crd_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert "namespace" not in document["metadata"], "examples go to the namespace given to kubectl"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_makes_valid_locked_down_jobs_for_every_stage(path):
    run = parse_run({**_documents(path), "metadata": {"name": path.stem, "namespace": "team-a"}})
    for node in stage_graph(run.spec):
        job = build_job(run, node.ref, 0, OperatorConfig())
        validate_object(job)
        assert security_problems(job) == []  # `restricted` Pod Security, InfiniBand included
        if needs_service(run, node.ref):
            validate_object(build_service(run, node.ref, 0))


def test_the_crd_schema_catches_what_the_api_server_would_drop_or_refuse():
    validator = crd_validator()
    document = _documents(MANIFESTS / "examples" / "quickstart.yaml")
    typo = {**document, "spec": {**document["spec"], "iteration": 3}}
    assert list(validator.iter_errors(typo))
    bounds = {**document, "spec": {**document["spec"], "judge": {"topP": 0}}}
    assert list(validator.iter_errors(bounds))  # exclusiveMinimum 0
    nullable = {**document, "spec": {**document["spec"], "select": {"totalCap": None}}}
    assert not list(validator.iter_errors(nullable))


def test_the_quickstart_is_small():
    run = load_run(MANIFESTS / "examples" / "quickstart.yaml")
    spec = run.spec
    assert spec.models.seed.source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert spec.generation.tensor_parallel == 1 and spec.train.gpus_per_node == 1 and spec.train.nodes == 1
    assert spec.iterations <= 3 and spec.data.instructions.limit and spec.select.total_cap
    assert spec.storage.uri.startswith("s3://")


def test_the_paper_replication_is_the_papers_setup():
    spec = load_run(MANIFESTS / "examples" / "paper-replication.yaml").spec
    assert spec.models.seed.source == "meta-llama/Meta-Llama-3-70B-Instruct"
    assert spec.models.generator.source == "mistralai/Mixtral-8x22B-Instruct-v0.1"
    assert spec.models.hf_token_secret
    assert spec.data.instructions.source == "hf://datasets/allenai/WildChat-1M"
    assert spec.data.instructions.field == "conversation.0.content"
    assert spec.iterations == 5
    assert (spec.judge.samples, spec.judge.temperature, spec.judge.top_p) == (15, 0.7, 0.9)
    assert 19000 <= spec.select.total_cap <= 21000
    assert spec.generation.tensor_parallel == 8 and spec.generation.shards >= 8
    train = spec.train
    assert (train.nodes, train.gpus_per_node, train.zero_stage) == (4, 8, 3)
    assert (train.learning_rate, train.min_lr_ratio, train.warmup_steps, train.epochs, train.max_seq_len) == (1e-6, 0.2, 100, 2, 4096)
    assert train.init_from == "seed"
    assert spec.evaluate.majority_vote == 32
    for kind in (spec.scheduling.generation, spec.scheduling.training):
        assert kind.queue_name and kind.tolerations and kind.node_selector and kind.runtime_class_name == "nvidia"
    training = spec.scheduling.training  # InfiniBand between the training nodes
    assert training.pod_annotations["k8s.v1.cni.cncf.io/networks"] and not training.capabilities  # memlock: the runtime's
    assert any(name.startswith("rdma/") for name in training.resources.limits)
    text = (MANIFESTS / "examples" / "paper-replication.yaml").read_text()
    assert "GPU budget" in text and "GPU-h" in text
