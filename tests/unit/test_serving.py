"""Serving a run's judge, the pure parts: which checkpoint is chosen, the server's Deployment and
what the operator does about it, and the vLLM command line."""

import json
from pathlib import Path

import kubernetes_validate
import pytest

from selftaught.api.load import parse_run
from selftaught.api.spec import Generation
from selftaught.controller.config import OperatorConfig
from selftaught.controller.decide import Waiting
from selftaught.controller.serving import HASH, build_deployment, build_service, decide_serving, serve_name
from selftaught.controller.status import status_patch
from selftaught.engines.server import server_command
from selftaught.errors import InvalidInput, InvalidSpec
from selftaught.pipeline.served import Choice, NothingToServe, choose, read_serve_document, serve_document, served_model

from .test_spec import MINIMAL

CONFIG = OperatorConfig()
ROWS = [
    {"iteration": 0, "accuracy": 0.6, "overall": 0.9},  # the seed: never chosen on its own
    {"iteration": 1, "checkpoint": "s3://b/iter-001/train/checkpoint", "accuracy": 0.7, "overall": 0.62},
    {"iteration": 2, "checkpoint": "s3://b/iter-002/train/checkpoint", "accuracy": 0.8, "overall": 0.71},
    {"iteration": 3, "checkpoint": "s3://b/iter-003/train/checkpoint", "accuracy": 0.9, "overall": 0.71},
    {"iteration": 4, "checkpoint": "s3://b/iter-004/train/checkpoint"},  # trained, not evaluated yet
]


def _run(name="r1", **spec):
    return parse_run({**MINIMAL, "metadata": {"name": name, "namespace": "ml"}, "spec": {**MINIMAL["spec"], **spec}})


def test_the_best_trained_iteration_by_overall_score_is_served_the_earliest_of_equals():
    run = _run()
    choice = choose(ROWS, run.spec.models.seed)
    assert (choice.iteration, choice.model.source, choice.score) == (2, "s3://b/iter-002/train/checkpoint", 0.71)


def test_without_a_benchmark_overall_the_accuracy_on_held_out_pairs_decides():
    rows = [{**row, "overall": None} for row in ROWS]
    assert choose(rows, _run().spec.models.seed).iteration == 3


def test_an_iteration_asked_for_is_served_and_one_without_a_checkpoint_is_said():
    seed = _run().spec.models.seed
    assert choose(ROWS, seed, 4).model.source == "s3://b/iter-004/train/checkpoint"
    assert choose(ROWS, seed, 0) == Choice(0, seed, 0.9)
    with pytest.raises(NothingToServe, match="iteration 5 has no checkpoint yet"):
        choose(ROWS, seed, 5)
    with pytest.raises(NothingToServe, match="no trained iteration has been evaluated yet"):
        choose([ROWS[0], ROWS[4]], seed)


def test_serve_iteration_must_be_one_of_the_runs_iterations():
    with pytest.raises(InvalidSpec, match="serve.iteration 6 is past the run's last iteration"):
        _run(iterations=5, serve={"iteration": 6})


def test_the_server_document_round_trips_and_carries_only_what_vllm_needs():
    run = _run(generation={"tensorParallel": 2, "dtype": "bfloat16", "shards": 64, "parallelism": 8})
    served = served_model(run, Choice(2, choose(ROWS, run.spec.models.seed).model, 0.71))
    document = serve_document(served)
    assert read_serve_document({"SELFTAUGHT_SERVE": document}) == served
    generation = json.loads(document)["generation"]
    assert (generation["tensorParallel"], generation["dtype"]) == (2, "bfloat16")
    assert generation["shards"] == Generation().shards  # how stages split work is not the server's


def test_a_server_pod_without_its_document_is_told_what_is_missing():
    with pytest.raises(InvalidInput, match="SELFTAUGHT_SERVE"):
        read_serve_document({})
    with pytest.raises(InvalidInput, match="SELFTAUGHT_SERVE: .*name"):
        read_serve_document({"SELFTAUGHT_SERVE": json.dumps({"iteration": 1, "model": {"source": "x"}})})


def test_the_deployment_and_service_are_valid_and_the_service_reaches_the_server_pods():
    run = _run(serve={"enabled": True, "replicas": 2}, scheduling={"generation": {"nodeSelector": {"pool": "h100"}, "queueName": "gpu"}})
    deployment = build_deployment(run, choose(ROWS, run.spec.models.seed), CONFIG)
    service = build_service(run)
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    kubernetes_validate.validate(service, "1.33", strict=True)
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2 and pod["spec"]["nodeSelector"] == {"pool": "h100"}
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert set(service["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (container,) = pod["spec"]["containers"]
    assert "JOB_COMPLETION_INDEX" not in {e["name"] for e in container["env"]}  # not a Job's pod
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", ["judge", "7b-judge", "a" * 63])
def test_the_server_name_is_a_dns_label_whatever_the_run_is_called(name):
    served = serve_name(name)
    assert len(served) <= 63 and served[0].isalpha() and served.endswith("-judge")


def _hash(run):
    return build_deployment(run, choose(ROWS, run.spec.models.seed), CONFIG)["metadata"]["annotations"][HASH]


def test_edits_that_do_not_change_the_server_leave_its_deployment_as_it_is():
    base = _hash(_run())
    assert _hash(_run(iterations=7, generation={"shards": 8, "parallelism": 4, "batchSize": 64}, judge={"samples": 3})) == base
    assert _hash(_run(generation={"dtype": "float16"})) != base  # vLLM settings roll the server out
    assert _hash(_run(scheduling={"generation": {"nodeSelector": {"pool": "b"}}})) != base


def _pod(deployment, ready=True):
    """A pod of `deployment`'s template as the kubelet shows it."""
    meta = deployment["spec"]["template"]["metadata"]
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": {"name": "p", **meta}, "status": {"conditions": [condition]}}


def test_what_the_operator_does_about_the_server():
    on, off = _run(serve={"enabled": True}), _run()
    choice = choose(ROWS, on.spec.models.seed)
    existing = build_deployment(on, choice, CONFIG)
    ready = {**existing, "status": {"readyReplicas": 1}}
    pods = [_pod(existing)]

    created = decide_serving(on, CONFIG, choice=choice, problem=None, observed=None, had_status=False)
    assert created.apply is not None and created.status.message == "starting the server of iteration 2"
    same = decide_serving(on, CONFIG, choice=choice, problem=None, observed=ready, had_status=True, pods=pods)
    assert same.apply is None and same.status.ready and same.status.message == "serving iteration 2"
    other = decide_serving(on, CONFIG, choice=choose(ROWS, on.spec.models.seed, 3), problem=None, observed=ready, had_status=True)
    assert other.apply["metadata"]["annotations"]["selftaught.dev/iteration"] == "3"
    # while later iterations run, the server of an earlier success keeps serving
    running = decide_serving(on, CONFIG, choice=None, problem=None, observed=ready, had_status=True, pods=pods)
    assert running.apply is None and not running.delete and running.status.iteration == 2
    waiting = decide_serving(on, CONFIG, choice=None, problem=None, observed=None, had_status=False)
    assert waiting.status.message == "waiting for the run to succeed" and waiting.status.endpoint is None
    assert decide_serving(off, CONFIG, choice=choice, problem=None, observed=ready, had_status=True).delete
    assert not decide_serving(off, CONFIG, choice=None, problem=None, observed=None, had_status=False).delete


def test_the_vllm_server_command_uses_the_runs_generation_settings():
    settings = Generation(tensorParallel=4, maxModelLen=8192, enforceEager=True, enablePrefixCaching=False, dtype="bfloat16", maxNumSeqs=64)
    command = server_command(Path("/cache/models/x"), settings, name="r1", host="0.0.0.0", port=8000, python="python")
    assert command[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]

    def value(flag):
        return command[command.index(flag) + 1]

    assert (value("--model"), value("--served-model-name"), value("--tensor-parallel-size"), value("--dtype")) == ("/cache/models/x", "r1", "4", "bfloat16")
    assert value("--max-model-len") == "8192" and value("--max-num-seqs") == "64" and "--max-num-batched-tokens" not in command
    assert "--enforce-eager" in command and "--no-enable-prefix-caching" in command and "--enable-chunked-prefill" in command
    on_cpu = server_command(Path("/m"), settings, name="r1", host="127.0.0.1", port=8000, on_cpu=True)
    assert "--no-enable-chunked-prefill" in on_cpu  # as the stages run on vLLM's CPU build


def merge_patched(target, patch):
    """RFC 7386, as the API server applies a merge patch to the status."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patched(result.get(key), value)
    return result


def test_a_status_field_that_no_longer_applies_is_removed_at_any_depth():
    previous = {"phase": "Succeeded", "serving": {"endpoint": "http://r1-judge.ml.svc:8000/v1", "iteration": 2, "ready": True}, "report": "s3://x"}
    document = {"phase": "Failed", "serving": {"ready": False, "message": "the run failed: nothing new is served until it succeeds"}}
    patch = status_patch(previous, document)
    assert merge_patched(previous, patch) == document


def test_selftaught_serve_of_a_run_file_or_its_store_folder_picks_the_best_evaluated_checkpoint(tmp_path):
    """What `selftaught serve RUN.yaml` (or the run's folder) chooses from the run's store, before
    any server starts (the server itself: tests/operator/test_serving.py, and `-m slow`
    tests/integration/test_serving.py)."""
    import yaml

    from selftaught.pipeline.runstore import accept, open_run_store
    from selftaught.pipeline.table import StageRef
    from selftaught.serve_process import describe, served_from_run
    from selftaught.store.manifest import Manifest, write_manifest

    run = _run("judged", storage={"uri": str(tmp_path / "store")}, iterations=3)
    store = open_run_store(run)
    accept(store, run)  # started: its spec recorded in the store
    for iteration, overall in ((1, 0.4), (2, 0.8), (3, 0.8)):  # 2 and 3 tie: the earlier is served
        summary = {"checkpoint": str(tmp_path / f"ckpt-{iteration}")}
        write_manifest(store, StageRef("train", iteration).manifest_key, Manifest(stage="train", iteration=iteration, summary=summary))
        scores = {"benchmark": "rewardbench", "accuracy": overall, "overall": overall}
        write_manifest(store, StageRef("evaluate", iteration).manifest_key, Manifest(stage="evaluate", iteration=iteration, summary=scores))
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))

    served = served_from_run(str(run_file))
    assert (served.name, served.iteration, served.model.source) == ("judged", 2, str(tmp_path / "ckpt-2"))
    assert describe(served) == f"iteration 2 of run judged ({tmp_path / 'ckpt-2'})"
    assert served_from_run(str(run_file), iteration=1).model.source == str(tmp_path / "ckpt-1")
    with pytest.raises(NothingToServe, match="iteration 4 has no checkpoint yet"):
        served_from_run(str(run_file), iteration=4)
    from_folder = served_from_run(str(tmp_path / "store" / "ml" / "judged"))  # the run's folder in its store
    assert (from_folder.iteration, from_folder.model.source) == (2, str(tmp_path / "ckpt-2"))
    several = served_from_run(str(run_file), iterations=[3, 1, 3])  # `--iteration 3 --iteration 1`: 3 chosen, 1 beside it
    assert several.iteration == 3 and [(b.iteration, b.model.source) for b in several.beside] == [(1, str(tmp_path / "ckpt-1"))]
    assert served_from_run(str(run_file), iterations=[1]).beside is None


def _adapter(folder: Path, rank: int, base: str = "org/seed-8B") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 2 * rank, "base_model_name_or_path": base, "revision": None}))
    return folder


def test_a_lora_checkpoint_is_served_as_its_adapter_on_the_seed_and_several_iterations_share_one_server(tmp_path):
    from selftaught.engines.models import LocalCheckpoint
    from selftaught.serve_process import server_plan

    seed = tmp_path / "seed"
    one, two = _adapter(tmp_path / "iter-1", 8), _adapter(tmp_path / "iter-2", 32)
    served = served_model(_run("judge"), Choice(2, choose(ROWS, _run().spec.models.seed, 2).model))
    alone = server_plan(served, [(2, LocalCheckpoint(seed, two))])
    assert (alone.model, alone.names, alone.adapters, alone.max_lora_rank) == (seed, ["judge-iteration-0"], {"judge": two}, 32)
    both = server_plan(served, [(2, LocalCheckpoint(seed, two)), (1, LocalCheckpoint(seed, one)), (0, LocalCheckpoint(seed))])
    assert both.names == ["judge-iteration-0"] and both.adapters == {"judge": two, "judge-iteration-2": two, "judge-iteration-1": one}
    command = server_command(both.model, Generation(), name=both.names, host="127.0.0.1", port=8000, adapters=both.adapters, max_lora_rank=both.max_lora_rank)

    def value(flag, count=1):
        at = command.index(flag) + 1
        return command[at] if count == 1 else command[at : at + count]

    assert value("--model") == str(seed) and value("--served-model-name") == "judge-iteration-0"
    assert "--enable-lora" in command and value("--max-loras") == "2" and value("--max-lora-rank") == "32"
    assert value("--lora-modules", 3) == [f"judge={two}", f"judge-iteration-2={two}", f"judge-iteration-1={one}"]
    full = server_plan(served, [(2, LocalCheckpoint(tmp_path / "full-2"))])  # a full checkpoint: as it always was
    assert (full.model, full.names, full.adapters) == (tmp_path / "full-2", ["judge"], {})
    with pytest.raises(InvalidInput, match="iteration 1 is a full model, not a LoRA adapter of .*seed: vLLM serves one model per server"):
        server_plan(served, [(2, LocalCheckpoint(seed, two)), (1, LocalCheckpoint(tmp_path / "full-1"))])


def test_a_lora_path_with_a_comma_goes_to_vllm_in_its_json_form():
    command = server_command(Path("/m"), Generation(), name="r", host="h", port=1, adapters={"r": Path("/a,b")})
    assert json.loads(command[command.index("--lora-modules") + 1]) == {"name": "r", "path": "/a,b"}


def test_the_server_document_of_one_checkpoint_is_what_it_was_before_adapters_could_share_a_server():
    """The operator serves one checkpoint: its document (and so its Deployment's hash) has no `beside`."""
    from selftaught.pipeline.served import ServedIteration

    run = _run()
    served = served_model(run, Choice(2, choose(ROWS, run.spec.models.seed).model, 0.71))
    assert "beside" not in json.loads(serve_document(served))
    several = served.model_copy(update={"beside": [ServedIteration(iteration=1, model=choose(ROWS, run.spec.models.seed, 1).model)]})
    assert read_serve_document({"SELFTAUGHT_SERVE": serve_document(several)}) == several


def test_a_client_asks_the_one_adapter_a_lora_server_lists_beside_its_base_and_otherwise_wants_a_name():
    """vLLM lists a LoRA server's base too (a `train.lora` run's seed, `<run>-iteration-0`); with one
    adapter, that is the judge. With several, the client must be told which."""
    from types import SimpleNamespace

    from selftaught.engines.endpoint import EndpointEngine

    def engine(*listed):
        client = EndpointEngine("http://127.0.0.1:1/v1", api_key="none")
        client.client = SimpleNamespace(models=SimpleNamespace(list=lambda: SimpleNamespace(data=list(listed))))
        return client

    base = SimpleNamespace(id="judge-iteration-0", parent=None)
    adapter = SimpleNamespace(id="judge", parent="judge-iteration-0")
    assert engine(base, adapter).model == "judge"
    assert engine(SimpleNamespace(id="judge")).model == "judge"  # a full checkpoint, alone: as before
    with pytest.raises(InvalidInput, match="serves 3 models .*name one with --model"):
        _ = engine(base, adapter, SimpleNamespace(id="judge-iteration-1", parent="judge-iteration-0")).model


def test_the_status_says_what_the_ready_pods_serve_not_what_the_deployment_asks_for():
    run = _run(serve={"enabled": True})
    old, new = choose(ROWS, run.spec.models.seed), choose(ROWS, run.spec.models.seed, 3)
    rolling = build_deployment(run, new, CONFIG)
    # the Deployment's own counts include the old pod: they are not what is served
    observed = {**rolling, "status": {"readyReplicas": 1}}
    pending = Waiting("Unschedulable", "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    pods = [_pod(build_deployment(run, old, CONFIG)), _pod(rolling, ready=False)]

    during = decide_serving(run, CONFIG, choice=new, problem=None, observed=observed, had_status=True, pods=pods, waiting=pending)
    after = decide_serving(run, CONFIG, choice=new, problem=None, observed=observed, had_status=True, pods=[_pod(rolling)])
    gap = decide_serving(run, CONFIG, choice=new, problem=None, observed=observed, had_status=True, pods=pods[1:])

    assert during.apply is None and during.unsettled
    assert (during.status.iteration, during.status.ready, during.status.replicas) == (2, True, "1/1")
    assert during.status.message == (
        "serving iteration 2; rolling out iteration 3: the server cannot start: Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )
    assert (after.status.iteration, after.status.message, after.unsettled) == (3, "serving iteration 3", False)
    assert (gap.status.iteration, gap.status.ready, gap.status.replicas) == (3, False, "0/1")


def test_serve_rollout_chooses_a_second_set_of_gpus_or_a_gap():
    surge = build_deployment(_run(serve={"enabled": True}), choose(ROWS, _run().spec.models.seed), CONFIG)["spec"]
    recreate = build_deployment(_run(serve={"enabled": True, "rollout": "recreate"}), choose(ROWS, _run().spec.models.seed), CONFIG)["spec"]
    assert surge["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert recreate["strategy"] == {"type": "Recreate"}
    startup = surge["template"]["spec"]["containers"][0]["startupProbe"]
    assert surge["progressDeadlineSeconds"] > startup["periodSeconds"] * startup["failureThreshold"]
