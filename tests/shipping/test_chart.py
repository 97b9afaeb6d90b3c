"""The Helm chart, through Helm 4 as a library (helm-python-sdk): `helm lint --strict`, `helm
template` with the main value combinations, every object against the real Kubernetes schemas,
the generated CRD without drift, the values schema, a locked-down operator and least-privilege
RBAC. manifests/ is this chart rendered (docs/gen_reference.py; tests/shipping/test_manifests.py)."""

from __future__ import annotations

import pytest
import yaml

import selftaught
from selftaught.api.crd import crd, crd_yaml
from selftaught.controller.config import OperatorConfig

from .support import (
    CHART,
    NAMESPACE,
    OPERATOR_PERMISSIONS,
    RELEASE,
    chart_objects,
    gen_reference,
    permissions,
    rbac_problems,
    render_chart,
    security_problems,
    validate_object,
)

helm = pytest.importorskip("helm_python")

VARIANTS = {
    "defaults": {},
    "two-namespaces": {"clusterWide": False, "watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "no-crds": {"crds": {"enabled": False}},
    "everything-set": {
        "image": {"digest": "sha256:" + "a" * 64},
        "jobImages": {"data": {"repository": "registry.example/selftaught/data", "tag": "cpu"}},
        "storage": {"defaultEndpoint": "http://minio.minio.svc:9000", "defaultCredentialsSecret": "s3", "operatorCredentialsSecret": ""},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "settings": {"jobTtlSeconds": 2592000, "resyncSeconds": 30.5, "workers": 4},
        "extraEnv": [{"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/owner": "ml-platform"},
        "rbac": {"aggregateToDefaultRoles": False},
        "metrics": {"service": {"annotations": {"prometheus.io/scrape": "true"}}},
    },
}


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def operator_container(objects):
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(objects):
    return {e["name"]: e.get("value") for e in operator_container(objects)["env"]}


def test_helm_lint_strict_passes():
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is info ("icon is recommended")
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_rendered_object_is_valid_and_locked_down(values):
    objects = chart_objects(values)
    assert objects
    for obj in objects:
        validate_object(obj)
        assert security_problems(obj) == []
        if obj["kind"] in ("Role", "ClusterRole"):
            assert rbac_problems(obj) == []
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects with the same name"


def test_defaults_install_the_crd_kept_on_uninstall_and_a_cluster_wide_operator():
    objects = chart_objects()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
        ]
    )
    (crd_object,) = by_kind(objects, "CustomResourceDefinition")
    # kept by `helm uninstall`, and by Argo CD's prune and Application deletion
    assert crd_object["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    }
    assert operator_container(objects)["args"] == ["operator", "--all-namespaces"]
    assert not by_kind(objects, "ServiceMonitor")


def test_the_chart_crd_is_the_generated_crd():
    assert (CHART / "files" / "crd.yaml").read_text() == crd_yaml(), "regenerate: python docs/gen_reference.py"
    (crd_object,) = by_kind(chart_objects(), "CustomResourceDefinition")
    metadata = dict(crd_object["metadata"])
    assert metadata.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
    metadata.pop("annotations")
    assert {**crd_object, "metadata": metadata} == crd()


def test_crds_can_be_left_to_someone_else_or_dropped_on_uninstall():
    assert not by_kind(chart_objects({"crds": {"enabled": False}}), "CustomResourceDefinition")
    (crd_object,) = by_kind(chart_objects({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in crd_object["metadata"]


def test_watching_two_namespaces_makes_a_role_in_each_and_no_cluster_role():
    objects = chart_objects(VARIANTS["two-namespaces"])
    assert operator_container(objects)["args"] == ["operator", "--namespace=team-a", "--namespace=team-b"]
    roles, bindings = by_kind(objects, "Role"), by_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert permissions(role["rules"]) == OPERATOR_PERMISSIONS
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    operator_roles = [
        r
        for r in by_kind(objects, "ClusterRole")
        if "aggregate-to-view" not in str(r["metadata"]["labels"]) and "aggregate-to-edit" not in str(r["metadata"]["labels"])
    ]
    assert not operator_roles and not by_kind(objects, "ClusterRoleBinding")


def test_namespaced_without_a_list_watches_the_release_namespace():
    objects = chart_objects({"clusterWide": False})
    assert operator_container(objects)["args"] == ["operator", f"--namespace={NAMESPACE}"]
    assert [r["metadata"]["namespace"] for r in by_kind(objects, "Role")] == [NAMESPACE]


def test_the_operator_has_exactly_its_permissions_and_user_roles_only_touch_runs():
    objects = chart_objects()
    cluster_roles = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterRole")}
    operator_role = cluster_roles.pop(RELEASE)
    assert permissions(operator_role["rules"]) == OPERATOR_PERMISSIONS
    assert sorted(cluster_roles) == [f"{RELEASE}-edit", f"{RELEASE}-view"]
    for role in cluster_roles.values():
        assert rbac_problems(role) == []
        assert {(g, r.split("/")[0]) for g, r, _ in permissions(role["rules"])} == {("selftaught.dev", "selftaughtruns")}
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in cluster_roles[f"{RELEASE}-edit"]["metadata"]["labels"]
    assert not [o for o in chart_objects({"rbac": {"create": False}}) if "Role" in o["kind"]]


def test_chart_defaults_are_the_operators_defaults():
    env = env_of(chart_objects())
    assert all(name.startswith("SELFTAUGHT_") for name in env)
    known = {OperatorConfig.env_var(name) for name in OperatorConfig.model_fields} | {"SELFTAUGHT_LOG_LEVEL"}
    assert set(env) <= known, set(env) - known
    assert OperatorConfig.from_env(env) == OperatorConfig()
    assert env["SELFTAUGHT_GENERATE_IMAGE"].endswith(f":{selftaught.__version__}")


def test_every_operator_setting_has_a_chart_value_that_reaches_it():
    mapping = gen_reference().CHART_SETTINGS
    assert set(mapping) == set(OperatorConfig.model_fields)
    objects = chart_objects(VARIANTS["everything-set"])
    env = env_of(objects)
    config = OperatorConfig.from_env(env)
    assert config.job_ttl_seconds == 2592000  # a large integer is not rendered as 2.592e+06
    assert config.resync_seconds == 30.5 and config.workers == 4
    assert config.default_s3_endpoint == "http://minio.minio.svc:9000" and config.default_credentials_secret == "s3"
    assert config.data_image == "registry.example/selftaught/data:cpu"
    assert operator_container(objects)["image"] == "ghcr.io/selftaught/operator@sha256:" + "a" * 64
    assert "envFrom" not in operator_container(objects)  # no operator Secret: IRSA
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_metrics_can_be_turned_off():
    objects = chart_objects({"metrics": {"enabled": False}})
    assert not by_kind(objects, "Service")
    assert env_of(objects)["SELFTAUGHT_METRICS_PORT"] == "0"
    assert [p["name"] for p in operator_container(objects)["ports"]] == ["health"]
    with pytest.raises(helm.HelmError, match="needs metrics.enabled"):
        chart_objects({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})


def test_the_service_monitor_scrapes_the_metrics_service():
    objects = chart_objects(VARIANTS["service-monitor"])
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (service,) = by_kind(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    assert service["spec"]["selector"] == by_kind(objects, "Deployment")[0]["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    "values",
    [
        {"imag": {"tag": "x"}},
        {"clusterWide": "yes"},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"metrics": {"port": 70000}},
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
        {"settings": {"logLevel": "LOUD"}},
        {"settings": {"workers": 0}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"securityContext": {"readOnlyRootFilesystem": False}},
        {"securityContext": {"allowPrivilegeEscalation": True}},
        {"podSecurityContext": {"runAsNonRoot": False}},
        {"storage": {"defaultEndpoint": "minio:9000"}},
        {"crds": {"enabled": True, "kep": True}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_the_values_schema_rejects(values):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_the_values_schema_accepts_the_defaults_and_the_variants():
    import jsonschema

    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    with helm.Chart.load(CHART) as chart:
        for values in VARIANTS.values():
            chart.validate_schema(values)


def test_every_value_is_documented():
    """A `# --` comment on every key; a documented map either documents all its keys or none
    (free-form, like resources)."""
    docs = gen_reference().value_docs((CHART / "values.yaml").read_text())
    paths = {d.path: d for d in docs}
    for doc in docs:
        parent = doc.path.rpartition(".")[0]
        siblings = [d for d in docs if d.path.rpartition(".")[0] == parent]
        if not parent or paths[parent].description and any(s.description for s in siblings):
            assert doc.description, f"{doc.path} (line {doc.line}) has no `# --` comment"
        elif not doc.description:
            ancestors = [p for p in paths if doc.path.startswith(p + ".")]
            assert any(paths[a].description for a in ancestors), doc.path


def test_every_documented_value_is_in_the_schema():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    documented = [d.path for d in gen_reference().value_docs((CHART / "values.yaml").read_text()) if d.description]
    for path in documented:
        node = schema
        for key in path.split("."):
            assert key in node.get("properties", {}), f"{path} is not in values.schema.json"
            node = node["properties"][key]


def test_notes_tell_how_to_apply_a_run_and_watch_it():
    notes = render_chart()[f"{CHART.name}/templates/NOTES.txt"]
    assert "kubectl get selftaughtruns" in notes and " -w" in notes
    assert "quickstart.yaml" in notes and "kubectl explain selftaughtrun.spec" in notes
    namespaced = render_chart(VARIANTS["two-namespaces"])[f"{CHART.name}/templates/NOTES.txt"]
    assert "team-a, team-b" in namespaced


def test_chart_readme_has_the_argocd_health_check_and_flux_notes():
    readme = (CHART / "README.md").read_text()
    assert "resource.customizations.health.selftaught.dev_SelfTaughtRun" in readme
    assert "docs/gitops/argocd-health.lua" in readme
    assert "## Flux" in readme or "### Flux" in readme
