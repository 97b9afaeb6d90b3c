"""The CustomResourceDefinition, generated from the pydantic models so it cannot drift from what
the code accepts: a structural OpenAPI v3 schema with descriptions (for `kubectl explain`),
defaults, enums and bounds; the status subresource; printer columns; a short name."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from selftaught.api.spec import API_GROUP, API_VERSION, KIND, PLURAL, SelfTaughtRunSpec
from selftaught.api.status import SelfTaughtRunStatus

_DROP = {"title", "$defs"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    return {key: _resolve(value, defs) for key, value in node.items() if key not in _DROP}


def _openapi(node: Any) -> Any:
    """JSON Schema (pydantic) → Kubernetes' structural OpenAPI v3 subset."""
    if isinstance(node, list):
        return [_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        options = [o for o in any_of if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {any_of} structurally")
        merged = {**options[0], **node}
        if len(options) < len(any_of):
            merged["nullable"] = True
        return _openapi(merged)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = {bool: "boolean", int: "integer", float: "number"}.get(type(node["enum"][0]), "string")
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[inclusive] = node.pop(bound)
            node[bound] = True
    if node.get("type") == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        if extra is None or extra is True or extra == {}:
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array" and node.get("items") == {}:
        node["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")  # structural schemas prune unknown fields instead
    if "default" in node and node["default"] is None:
        node.pop("default")
    return {key: _openapi(value) for key, value in node.items()}


def _default_nested_objects(node: dict[str, Any]) -> None:
    """An optional section the user leaves out defaults to {}, so the API server fills in its
    fields' defaults (structural defaulting only descends into objects that exist)."""
    required = set(node.get("required", []))
    for name, prop in node.get("properties", {}).items():
        if prop.get("type") == "object" and "properties" in prop:
            if name not in required and "default" not in prop and not prop.get("nullable"):
                prop["default"] = {}
            _default_nested_objects(prop)


def model_schema(model: type) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(schema, schema.get("$defs", {}))
    return _openapi(resolved)


def spec_schema() -> dict[str, Any]:
    schema = model_schema(SelfTaughtRunSpec)
    _default_nested_objects(schema)
    schema["description"] = SelfTaughtRunSpec.__doc__.strip()
    return schema


def crd() -> dict[str, Any]:
    status = model_schema(SelfTaughtRunStatus)
    status["description"] = "Observed state; written by the operator."
    columns = [  # kubectl get: the default columns, then -o wide's (priority 1)
        ("Phase", "string", ".status.phase", "Pending, Running, Suspended, Succeeded or Failed"),
        ("Stage", "string", ".status.stage", "Current stage"),
        ("Stages", "string", ".status.completion.stages", "Finished stages of all"),
        ("Progress", "string", ".status.completion.progress", "How much of the whole run is done, by its estimated stage times"),
        ("ETA", "string", ".status.completion.eta", "Time the whole run has left (stages that can run at once count once)"),
        ("Accuracy", "number", ".status.latestAccuracy", "Accuracy of the newest evaluated judge"),
        ("Age", "date", ".metadata.creationTimestamp", ""),
        ("Message", "string", ".status.message", "What is happening, or why the run failed"),
        ("Iteration", "integer", ".status.iteration", "Current iteration", 1),
        ("Stage-%", "number", ".status.progress.percent", "Percent done of the running stage (the one with the most time left)", 1),
        ("Stage-ETA", "string", ".status.progress.eta", "Time left of that stage", 1),
        ("Succeeded", "string", '.status.conditions[?(@.type=="Succeeded")].status', "Succeeded condition", 1),
        ("GPU-h", "number", ".status.estimate.gpuHours", "Estimated GPU-hours of the whole run", 1),
        ("Disruptions", "integer", ".status.disruptions.count", "Pods stopped by spot reclaims, drains, preemptions (docs/spot.md)", 1),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["str", "strun"],
                "categories": ["selftaught"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p, **({"description": d} if d else {}), **({"priority": rest[0]} if rest else {})}
                        for n, t, p, d, *rest in columns
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Self-Taught Evaluator training run: from unlabeled "
                            "instructions and a seed LLM to an iteratively trained LLM-as-a-Judge.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `selftaught crd` from operator/selftaught/api; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
