"""The CRD generated from the models: helpful (`kubectl explain`), structural, and in agreement
with the code about defaults."""

import pytest

from selftaught.api.crd import crd
from selftaught.api.load import parse_run
from tests.kube.schemas import prune_and_default

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node, path="", found=None):
    found = [] if found is None else found
    found.append((path, node))
    for name, child in node.get("properties", {}).items():
        _walk(child, f"{path}.{name}", found)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", found)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", found)
    return found


@pytest.mark.parametrize("section", ["spec", "status"])
def test_every_field_has_a_description_for_kubectl_explain(section):
    fields = [(p, n) for p, n in _walk(SCHEMA["properties"][section]) if p.count(".") >= 1 and not p.endswith(("[]", "{}"))]
    assert fields and [p for p, n in fields if not n.get("description")] == []


def test_the_schema_is_structural_every_node_has_a_type():
    untyped = [
        p
        for p, n in _walk(SCHEMA)
        if "type" not in n and not n.get("x-kubernetes-preserve-unknown-fields") and not n.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []
    forbidden = [p for p, n in _walk(SCHEMA) if {"anyOf", "oneOf", "$ref", "propertyNames", "const"} & set(n)]
    assert forbidden == []


def test_bounds_and_enums_come_from_the_models():
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["judge"]["properties"]["samples"] == {**spec["judge"]["properties"]["samples"], "minimum": 1, "maximum": 256, "default": 15}
    assert spec["train"]["properties"]["zeroStage"]["enum"] == [0, 1, 2, 3]
    assert spec["judge"]["properties"]["orders"]["enum"] == ["both", "random"]
    assert spec["pairs"]["properties"]["topP"]["exclusiveMinimum"] is True


def test_the_api_servers_defaults_are_the_codes_defaults():
    minimal = {
        "models": {"seed": {"source": "meta-llama/Meta-Llama-3-8B-Instruct"}},
        "data": {"instructions": {"source": "s3://b/i.jsonl"}},
        "storage": {"uri": "s3://b/runs"},
    }
    defaulted = prune_and_default({"spec": minimal}, SCHEMA)["spec"]  # what etcd stores
    document = {"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "r"}}
    from_server = parse_run({**document, "spec": defaulted}).spec
    from_code = parse_run({**document, "spec": minimal}).spec
    assert from_server == from_code
    assert defaulted["judge"]["samples"] == 15 and defaulted["train"]["learningRate"] == 1e-6


def test_printer_columns_show_phase_stage_iteration_progress_accuracy_and_age_and_wide_gpu_hours_and_disruptions():
    printed = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    columns = {c["name"]: c["jsonPath"] for c in printed}
    assert columns == {
        "Phase": ".status.phase", "Stage": ".status.stage", "Iteration": ".status.iteration",
        "Progress": ".status.progress.percent", "ETA": ".status.progress.eta",
        "Accuracy": ".status.latestAccuracy", "Succeeded": '.status.conditions[?(@.type=="Succeeded")].status',
        "GPU-h": ".status.estimate.gpuHours", "Disruptions": ".status.disruptions.count", "Age": ".metadata.creationTimestamp",
    }  # fmt: skip
    assert [c["name"] for c in printed if c.get("priority")] == ["GPU-h", "Disruptions"]  # kubectl get -o wide
    assert "str" in crd()["spec"]["names"]["shortNames"]


def test_status_conditions_are_a_map_keyed_by_type():
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]  # a map key must be required


def test_resource_quantities_are_int_or_string_in_the_crd_and_the_code():
    overrides = SCHEMA["properties"]["spec"]["properties"]["scheduling"]["properties"]["generation"]["properties"]
    for section in ("requests", "limits"):
        assert overrides["resources"]["properties"][section]["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    document = {
        "apiVersion": "selftaught.dev/v1alpha1",
        "kind": "SelfTaughtRun",
        "metadata": {"name": "r"},
        "spec": {
            "models": {"seed": {"source": "m"}},
            "data": {"instructions": {"source": "s3://b/i.jsonl"}},
            "storage": {"uri": "s3://b/runs"},
            "scheduling": {"generation": {"resources": {"requests": {"cpu": 4, "memory": "64Gi"}, "limits": {"cpu": "500m"}}}},
        },
    }
    stored = {**document, "spec": prune_and_default(document["spec"], SCHEMA["properties"]["spec"])}
    resources = parse_run(stored).spec.scheduling.generation.resources
    assert resources.requests == {"cpu": 4, "memory": "64Gi"} and resources.limits == {"cpu": "500m"}


def test_the_model_cache_volume_is_one_of_four_sources_never_a_host_path():
    overrides = SCHEMA["properties"]["spec"]["properties"]["scheduling"]["properties"]["generation"]["properties"]
    volume = overrides["modelCacheVolume"]
    assert set(volume["properties"]) == {"persistentVolumeClaim", "ephemeral", "emptyDir", "csi"}
    # the API server prunes a hostPath to {}, which minProperties then refuses
    assert (volume["minProperties"], volume["maxProperties"]) == (1, 1)
    assert prune_and_default({"hostPath": {"path": "/"}}, volume) == {}
