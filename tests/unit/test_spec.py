from pathlib import Path

import pytest

from selftaught.api.load import load_run, parse_run
from selftaught.errors import InvalidSpec

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {
    "apiVersion": "selftaught.dev/v1alpha1",
    "kind": "SelfTaughtRun",
    "metadata": {"name": "r1"},
    "spec": {
        "models": {"seed": {"source": "meta-llama/Meta-Llama-3-70B-Instruct"}},
        "data": {"instructions": {"source": "s3://bucket/wildchat.jsonl"}},
        "storage": {"uri": "s3://bucket/runs"},
    },
}


def _with(**spec):
    return {**MINIMAL, "spec": {**MINIMAL["spec"], **spec}}


def test_the_quickstart_example_is_a_valid_run():
    run = load_run(REPO / "examples/local-quickstart.yaml")
    assert run.metadata.name == "quickstart" and run.spec.iterations == 2


def test_the_one_gpu_node_example_is_a_valid_run_that_uses_all_eight_gpus():
    from selftaught.local.placement import generation_placement, training_placement, visible_devices

    spec = load_run(REPO / "examples/one-gpu-node.yaml").spec
    eight = visible_devices(None, 8)
    assert generation_placement(spec.generation, eight).at_once == 8 and training_placement(spec.train, eight).nproc == 8
    assert (spec.train.zero_stage, spec.train.bf16, spec.train.gradient_checkpointing) == (3, True, None)  # chosen from memory
    assert spec.data.instructions.source.startswith("hf://datasets/") and spec.data.evaluation.source.startswith("hf://datasets/")


def test_defaults_are_the_papers():
    spec = parse_run(MINIMAL).spec
    assert spec.iterations == 5
    assert (spec.judge.samples, spec.judge.temperature, spec.judge.top_p) == (15, 0.7, 0.9)
    assert spec.train.init_from == "seed" and spec.train.learning_rate == 1e-6
    assert (spec.train.warmup_steps, spec.train.min_lr_ratio, spec.train.epochs) == (100, 0.2, 2.0)
    assert spec.select.categories == ["Knowledge and Reasoning", "Mathematical reasoning"]
    assert spec.generator_model.source == spec.models.seed.source


def test_a_value_out_of_bounds_names_the_field():
    with pytest.raises(InvalidSpec, match=r"spec\.judge\.samples: Input should be less than or equal to 256"):
        parse_run(_with(judge={"samples": 1000}))


def test_a_misspelt_field_is_refused_by_name():
    with pytest.raises(InvalidSpec, match=r'unknown field "spec\.judge\.sample" \(did you mean "spec\.judge\.samples"\?\)$'):
        parse_run(_with(judge={"sample": 4}))
    with pytest.raises(InvalidSpec, match=r'256; unknown field "spec\.zzz"$'):  # nothing close: no guess
        parse_run(_with(zzz=1, judge={"samples": 1000}))


def test_an_unknown_category_is_refused_with_the_known_ones():
    with pytest.raises(InvalidSpec, match=r"spec\.select\.categories: .*unknown categories \['Poetry'\]"):
        parse_run(_with(select={"categories": ["Poetry"]}))


def test_a_missing_required_field_and_a_bad_name_are_reported_together():
    document = {**MINIMAL, "metadata": {"name": "Not_A_DNS_Name"}, "spec": {"storage": {"uri": "x"}}}
    with pytest.raises(InvalidSpec) as error:
        parse_run(document)
    message = str(error.value)
    assert "metadata.name" in message and "spec.models: Field required" in message and "spec.data: Field required" in message


def test_unreadable_or_invalid_files_say_which_file(tmp_path):
    with pytest.raises(InvalidSpec, match="missing.yaml: cannot read"):
        load_run(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(InvalidSpec, match=r"bad\.yaml:1:16: not valid YAML: expected ',' or ']', but got '<stream end>'"):
        load_run(bad)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\n")
    with pytest.raises(InvalidSpec, match="other.yaml: found kind 'ConfigMap'; expected kind SelfTaughtRun"):
        load_run(other)



def test_local_paths_in_a_manifest_are_read_from_its_folder_and_hub_ids_and_uris_stay_as_they_are(tmp_path):
    import yaml

    folder = tmp_path / "project"
    (folder / "models" / "seed").mkdir(parents=True)
    document = {
        **MINIMAL,
        "spec": {
            "models": {"seed": {"source": "models/seed"}, "generator": {"source": "Qwen/Qwen2.5-7B-Instruct"}},
            "data": {"instructions": {"source": "../data/instructions.jsonl"}, "evaluation": {"source": "hf://datasets/allenai/reward-bench"}},
            "storage": {"uri": "runs"},
        },
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(document))
    spec = load_run(folder / "run.yaml").spec
    assert spec.storage.uri == str(folder / "runs") and spec.models.seed.source == str(folder / "models/seed")
    assert spec.data.instructions.source == str(tmp_path / "data/instructions.jsonl")
    assert spec.models.generator.source == "Qwen/Qwen2.5-7B-Instruct" and spec.data.evaluation.source == "hf://datasets/allenai/reward-bench"
    (folder / "s3.yaml").write_text(yaml.safe_dump(MINIMAL))
    assert load_run(folder / "s3.yaml").spec == parse_run(MINIMAL).spec  # s3:// and a Hub id: nothing to resolve

def _scheduling(**generation):
    return _with(scheduling={"generation": generation})


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"modelCacheVolume": {"hostPath": {"path": "/models"}}}, r'unknown field "spec\.scheduling\.generation\.modelCacheVolume\.hostPath"'),
        ({"modelCacheVolume": {}}, "exactly one of persistentVolumeClaim, ephemeral, emptyDir, csi"),
        ({"modelCacheVolume": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "c"}}}, "exactly one of"),
        ({"podLabels": {"selftaught.dev/run": "other"}}, "pod label selftaught.dev/run is set by the operator"),
        ({"podLabels": {"app.kubernetes.io/managed-by": "me"}}, "is set by the operator"),
        ({"podLabels": {"batch.kubernetes.io/job-name": "x"}}, "is set by the operator or the Job controller"),
        ({"podLabels": {"team": "not a label value"}}, "not a valid label value"),
        ({"podAnnotations": {"bad key!": "x"}}, "not a valid Kubernetes name"),
        ({"env": [{"name": "SELFTAUGHT_RUN", "value": "{}"}]}, "SELFTAUGHT_RUN is set by the operator"),
        ({"env": [{"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}, "not both"),
        ({"capabilities": ["SYS_ADMIN"]}, r"capabilities\.0: Input should be 'IPC_LOCK', 'SYS_RESOURCE' or 'SYS_NICE'"),
        ({"resources": {"requests": {"cpu": "4 cores"}}}, "is not a quantity"),
        ({"resources": {"requests": {"cpu": 0.5}}}, "is not a quantity"),
        ({"resources": {"request": {"cpu": 1}}}, r'unknown field "spec\.scheduling\.generation\.resources\.request" \(did you mean "spec\.scheduling\.generation\.resources\.requests"\?\)'),
        ({"cacheSize": "200GB"}, "cacheSize: String should match pattern"),
        ({"securityContext": {"platformAssigned": True, "runAsUser": 1000}}, "platformAssigned leaves the ids to the platform"),
        ({"securityContext": {"runAsUser": 0}}, "runAsUser: Input should be greater than or equal to 1"),
    ],
)
def test_pod_overrides_refuse_what_would_break_or_widen_a_stage_pod(overrides, error):
    with pytest.raises(InvalidSpec, match=error):
        parse_run(_scheduling(**overrides))


def test_pod_overrides_accept_quantities_as_numbers_and_labels_of_others():
    spec = parse_run(
        _scheduling(
            resources={"requests": {"cpu": 4, "memory": "64Gi", "nvidia.com/gpu": 8}, "limits": {"cpu": "500m"}},
            podLabels={"sidecar.istio.io/inject": "false", "app.kubernetes.io/part-of": "judges"},
            env=[{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            modelCacheVolume={"persistentVolumeClaim": {"claimName": "models"}},
        )
    ).spec
    generation = spec.scheduling.generation
    assert generation.resources.requests == {"cpu": 4, "memory": "64Gi", "nvidia.com/gpu": 8}
    assert generation.model_cache_volume.source() == {"persistentVolumeClaim": {"claimName": "models"}}


def test_the_operators_own_variables_are_reserved():
    from selftaught.api.spec import RESERVED_ENV
    from selftaught.pipeline.launch import RUN_VARIABLE

    assert RUN_VARIABLE in RESERVED_ENV and "JOB_COMPLETION_INDEX" in RESERVED_ENV and "MASTER_ADDR" in RESERVED_ENV


def test_stage_kinds_have_their_own_pod_defaults_under_the_runs_settings():
    spec = parse_run(_with(scheduling={"training": {"activeDeadlineSeconds": 60}, "stages": {"train": {"cacheSize": "1Ti"}}})).spec
    train = spec.scheduling.for_stage("training", "train")
    assert (train.active_deadline_seconds, train.cache_size, train.startup_timeout_seconds) == (60, "1Ti", 1800)
    select = spec.scheduling.for_stage("data", "select")
    assert (select.active_deadline_seconds, select.cache_size, select.startup_timeout_seconds) == (21600, "20Gi", 1800)
    judge = spec.scheduling.for_stage("generation", "judge")
    assert (judge.active_deadline_seconds, judge.cache_size) == (86400, "200Gi")


@pytest.mark.parametrize(("init_from", "bases"), [("seed", [0, 0, 0]), ("previous", [0, 1, 2])])
def test_the_model_of_iteration_i_is_the_seed_then_train_is_checkpoint(init_from, bases):
    """One rule (`iteration_model`): judge-i samples M(i-1), evaluate-i scores M(i), train-i starts
    from M(0) or, with initFrom previous, M(i-1); M(i) for i >= 1 is where train-i put its checkpoint."""
    from selftaught.api.spec import iteration_model

    spec = parse_run(_with(train={"initFrom": init_from}, iterations=3)).spec
    checkpoints = {1: "s3://bucket/runs/iter-001/train/attempt-a/checkpoint", 2: "s3://bucket/runs/iter-002/train/attempt-b/checkpoint"}
    assert iteration_model(spec.models.seed, 0, checkpoints.__getitem__) == spec.models.seed
    assert iteration_model(spec.models.seed, 2, checkpoints.__getitem__).source == checkpoints[2]
    assert [spec.train_base(i) for i in (1, 2, 3)] == bases


def test_grpo_has_the_published_defaults_and_refuses_what_its_rewards_cannot_read():
    grpo = parse_run(_with(train={"method": "grpo"})).spec.train.grpo
    assert (grpo.group_size, grpo.max_completion_tokens, grpo.beta, grpo.learning_rate, grpo.steps, grpo.temperature) == (8, None, 0.001, 1e-6, None, 1.0)
    assert (grpo.rewards.correct, grpo.rewards.format, grpo.rewards.consistency) == (1.0, 0.0, 0.0)
    with pytest.raises(InvalidSpec, match=r"spec\.train\.grpo\.groupSize: Input should be greater than or equal to 2"):
        parse_run(_with(train={"method": "grpo", "grpo": {"groupSize": 1}}))
    with pytest.raises(InvalidSpec, match=r"every reward weight is 0"):
        parse_run(_with(train={"method": "grpo", "grpo": {"rewards": {"correct": 0}}}))
    with pytest.raises(InvalidSpec, match=r"consistency .* needs judge.format: pairwise and judge.orders: both"):
        parse_run(_with(train={"method": "grpo", "grpo": {"rewards": {"consistency": 0.5}}}, judge={"orders": "random"}))
    with pytest.raises(InvalidSpec, match=r"grpo trains one judge format at a time"):
        parse_run(_with(train={"method": "grpo"}, judge={"format": "pairwise+pointwise"}))
    rated = parse_run(_with(train={"method": "grpo"}, judge={"format": "pointwise"})).spec
    assert rated.train.method == "grpo" and not rated.judge_stage


def test_grpo_trains_the_judge_it_samples_from_whatever_init_from_says():
    spec = parse_run(_with(train={"method": "grpo"})).spec
    assert [spec.train_base(i) for i in (1, 2, 3)] == [0, 1, 2]


@pytest.mark.parametrize(("written", "seconds"), [("10m", 600.0), ("90s", 90.0), ("1h", 3600.0), ("1h30m", 5400.0), ("250ms", 0.25), (120, 120.0), (0, None), ("0", None)])
def test_checkpoint_every_is_a_duration_as_kubernetes_writes_them_or_seconds_and_zero_turns_it_off(written, seconds):
    train = parse_run(_with(train={"checkpointEvery": written})).spec.train
    assert train.checkpoint_seconds == seconds and train.checkpoint_every == written  # kept as written: the snapshot shows it
    assert parse_run(MINIMAL).spec.train.checkpoint_seconds == 600.0  # the default: 10 minutes


@pytest.mark.parametrize("written", ["10", "ten minutes", "1d", -5, True])
def test_a_checkpoint_interval_that_is_not_a_duration_is_refused_by_name(written):
    with pytest.raises(InvalidSpec, match="checkpointEvery"):
        parse_run(_with(train={"checkpointEvery": written}))


def test_lora_is_off_by_default_and_its_defaults_are_trls_on_every_projection():
    assert parse_run(MINIMAL).spec.train.lora is None  # full fine-tuning, the paper's
    lora = parse_run(_with(train={"lora": {}, "learningRate": 2e-6})).spec.train.lora
    assert (lora.rank, lora.alpha, lora.dropout, lora.quantize) == (16, 32, 0.05, "none")
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert lora.learning_rate_for(2e-6) == pytest.approx(2e-5)  # 10x full fine-tuning's, unless set
    assert parse_run(_with(train={"lora": {"learningRate": 3e-4}})).spec.train.lora.learning_rate_for(2e-6) == 3e-4


def test_lora_settings_out_of_bounds_are_refused_by_name():
    with pytest.raises(InvalidSpec, match=r"spec\.train\.lora\.rank: Input should be less than or equal to 512"):
        parse_run(_with(train={"lora": {"rank": 1024}}))
    with pytest.raises(InvalidSpec, match=r"spec\.train\.lora\.quantize: Input should be 'none' or 'nf4'"):
        parse_run(_with(train={"lora": {"quantize": "int8"}}))
    with pytest.raises(InvalidSpec, match=r"spec\.train\.lora\.targetModules: .*`all-linear` already names every linear layer"):
        parse_run(_with(train={"lora": {"targetModules": ["all-linear", "q_proj"]}}))
