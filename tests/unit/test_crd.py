"""The CRD generated from the models: helpful (`kubectl explain`), structural, and in agreement
with the code about defaults."""

import re

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


def jsonpath(obj, path: str):
    """A printer column's value as kubectl computes it, for the JSONPaths a CRD uses: `.a.b` and a
    filter on a list, `.a[?(@.type=="X")].b`; None where the path finds nothing."""
    value = obj
    for step in re.findall(r'\.([A-Za-z0-9_-]+)|\[\?\(@\.(\w+)=="([^"]*)"\)\]', path):
        name, key, wanted = step
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        else:
            value = next((item for item in value or [] if item.get(key) == wanted), None)
        if value is None:
            return None
    return value


def running_run():
    """A run object as the operator writes it: 4 of 13 stages done, judge-1 at half of its samples
    (10 s left), built by the status code itself."""
    from selftaught.controller.decide import Decision, JobView
    from selftaught.controller.status import Observation, build_status, status_document
    from selftaught.pipeline.planner import plan
    from selftaught.pipeline.scan import Progress
    from selftaught.pipeline.table import StageRef
    from selftaught.store.manifest import Manifest
    from selftaught.views.estimate import estimate, inputs_for, measure
    from selftaught.views.eta import completion
    from selftaught.views.live import StageView

    run = parse_run(MINIMAL_RUN)
    done = [StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("evaluate", 0)]
    progress = Progress(manifests={ref: Manifest(stage=ref.name, iteration=ref.iteration, seconds=600.0) for ref in done})
    judge = StageRef("judge", 1)
    live = [StageView("judge-1", "samples", 100, 200, 1, 0, 400.0, 10, 1_800_000_000.0)]
    cost = estimate(run.spec, inputs_for(run.spec), measure(progress.manifests))
    decision = Decision(running=[(judge, JobView("r-judge-1-0", "judge-1", 0, "active"))])
    seen = Observation(
        generation=1, now="2027-01-15T08:00:00Z", previous={}, plan=plan(run.spec, progress.done), progress=progress, decision=decision,
        live=live, estimate=cost, completion=completion(run.spec, cost, live),
    )  # fmt: skip
    return {"metadata": {"name": "r", "creationTimestamp": "2027-01-15T07:00:00Z"}, "status": status_document(build_status(seen))}, cost


MINIMAL_RUN = {
    "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "r", "namespace": "ns"},
    "spec": {"models": {"seed": {"source": "org/model-8B"}}, "data": {"instructions": {"source": "s3://b/i.jsonl"}},
             "storage": {"uri": "s3://b/runs"}, "iterations": 3, "estimate": {"instructions": 20000}},
}  # fmt: skip


def test_kubectl_get_shows_stages_the_runs_progress_and_eta_and_message_and_wide_the_rest():
    printed = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    obj, cost = running_run()
    default = {c["name"]: jsonpath(obj, c["jsonPath"]) for c in printed if not c.get("priority")}
    wide = {c["name"]: jsonpath(obj, c["jsonPath"]) for c in printed if c.get("priority") == 1}
    assert list(default) == ["Phase", "Stage", "Stages", "Progress", "ETA", "Accuracy", "Age", "Message"]
    assert default["Phase"] == "Running" and default["Stage"] == "judge-1" and default["Stages"] == "4/13"
    assert re.fullmatch(r"\d+%", default["Progress"]) and 0 < int(default["Progress"][:-1]) < 100
    assert default["Message"] == "judge-1 running (0/1 shards)" and default["Age"] == "2027-01-15T07:00:00Z"
    # the run's time left, not the running stage's 10 s: judge-1's 10 s, then train-1 and the rest of the chain
    run_eta = obj["status"]["completion"]["etaSeconds"]
    assert default["ETA"] != "10s" and run_eta > 10 + sum(row.hours * 3600 for row in cost.rows if row.label in ("train-1", "judge-2", "train-2", "judge-3", "train-3", "evaluate-3")) - 1
    assert run_eta < 10 + sum(row.hours * 3600 for row in cost.rows if not row.measured and row.label != "judge-1")  # evaluate-i beside judge-(i+1): counted once
    assert wide == {
        "Iteration": 1, "Stage-%": 50.0, "Stage-ETA": "10s", "Succeeded": "Unknown", "GPU-h": obj["status"]["estimate"]["gpuHours"], "Disruptions": None,
    }  # fmt: skip
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
