"""The generated documents are up to date, and the hand-written ones tell a user what they need."""

from __future__ import annotations

import re

import pytest

from selftaught.api.crd import crd
from selftaught.api.spec import SelfTaughtRunSpec

from .support import REPO, gen_reference

DOCS = REPO / "docs"


def test_generated_files_are_up_to_date():
    stale = [str(p.relative_to(REPO)) for p in gen_reference().stale()]
    assert not stale, f"stale: {stale}; run `python docs/gen_reference.py`"


def _schema_paths(node, path):
    yield path
    for name, child in (node.get("properties") or {}).items():
        yield from _schema_paths(child, f"{path}.{name}")
    if node.get("type") == "array" and "properties" in node.get("items", {}):
        for name, child in node["items"]["properties"].items():
            yield from _schema_paths(child, f"{path}[].{name}")


def test_the_configuration_reference_has_every_field_the_crd_has():
    """Same set of paths as `kubectl explain` would show."""
    text = (DOCS / "configuration.md").read_text()
    sections = dict(re.findall(r"### `([^`]+)`\n(.*?)(?=\n### |\n## |\Z)", text, flags=re.DOTALL))
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    documented = set()
    for section, body in sections.items():
        for name in re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE):
            documented.add(f"{section}.{name}")
    # a model used in several places (PodOverrides) is documented once, at its first path
    aliases = {"spec.scheduling.training": "spec.scheduling.generation", "spec.scheduling.data": "spec.scheduling.generation"}
    aliases |= {
        f"spec.scheduling.stages.{s}": "spec.scheduling.generation" for s in ("categorize", "select", "pairs", "judge", "train", "evaluate")
    }
    aliases |= {"spec.models.generator": "spec.models.seed", "spec.estimate.generatorSize": "spec.estimate.seedSize"}
    for root in ("spec", "status"):
        for path in _schema_paths(schema[root], root):
            if path == root:
                continue
            for alias, home in aliases.items():
                if path.startswith(alias + "."):
                    path = home + path[len(alias) :]
            assert path in documented, f"{path} is missing from docs/configuration.md"


def test_the_configuration_reference_shows_defaults_and_bounds():
    text = (DOCS / "configuration.md").read_text()
    assert "| `samples` | integer | `15` | ≥ 1, ≤ 256 |" in text
    assert "| `topP` | number | `0.9` | > 0.0, ≤ 1.0 |" in text
    assert "| `source` | string | required | length ≥ 1 |" in text
    assert '| `orders` | string | `"both"` | one of `"both"`, `"random"` |' in text
    for name in SelfTaughtRunSpec.model_fields:
        assert f"`{SelfTaughtRunSpec.model_fields[name].alias or name}`" in text
    assert "`SELFTAUGHT_DEFAULT_S3_ENDPOINT`" in text and "`storage.defaultEndpoint`" in text


def test_the_generator_notices_drift(tmp_path, monkeypatch):
    module = gen_reference()
    copy = tmp_path / "configuration.md"
    copy.write_text((DOCS / "configuration.md").read_text().replace("≥ 1, ≤ 256", "≥ 1"))
    monkeypatch.setattr(module, "CONFIGURATION", copy)
    assert copy in module.stale()


@pytest.mark.parametrize(
    "needle",
    [
        "helm install selftaught charts/selftaught",
        "kubectl get selftaughtruns -w",
        "kubectl explain selftaughtrun.spec",
        "manifests/examples/quickstart.yaml",
        "iter-001/train/attempt-<id>/checkpoint/",
        "selftaught get checkpoint",
        "metrics.json",
        "credentialsSecret",
        "kubectl apply --server-side -k manifests/",
    ],
)
def test_the_install_guide_covers(needle):
    assert needle in (DOCS / "install.md").read_text()


@pytest.mark.parametrize(
    "needle",
    [
        "plan(",
        "level-triggered",
        "_manifest.json",
        "Succeeded",
        "backoffLimit: 0",
        "podFailurePolicy",
        "headless Service",
        "torchrun",
        "Kueue",
    ],
)
def test_the_architecture_covers(needle):
    assert needle in (DOCS / "architecture.md").read_text()


def _plan_gpu_hours(path) -> str:
    """The run's GPU-hours as `selftaught plan` writes them (`plan --json`, through the command)."""
    import contextlib
    import io
    import json

    from selftaught.cli import main
    from selftaught.views.plan_text import gpu_hours

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        main(["plan", str(path), "--json"])
    return gpu_hours(json.loads(printed.getvalue())["gpuHours"])


def test_every_gpu_hour_figure_is_the_plans():
    """One number everywhere: each place that quotes a run's GPU-hours quotes `selftaught plan`'s."""
    paper, quickstart = (_plan_gpu_hours(REPO / "manifests/examples" / name) for name in ("paper-replication.yaml", "quickstart.yaml"))
    quoted = {
        "README.md": [f"~{paper} H100 GPU-hours"],
        "docs/install.md": [f"~{paper} H100 GPU-hours", f"~{quickstart} GPU-hours"],
        "docs/cost.md": [f"in all ~{paper} GPU-hours", f"**~{paper} GPU-hours**", f"~{paper}.\n"],
        "manifests/examples/paper-replication.yaml": [f"GPU budget: ~{paper} H100 GPU-hours"],
        "manifests/examples/quickstart.yaml": [f"GPU budget: ~{quickstart} GPU-hours"],
    }
    for name, needles in quoted.items():
        text = (REPO / name).read_text()
        assert [needle for needle in needles if needle not in text] == [], name
    for path in [REPO / "README.md", *DOCS.glob("*.md"), *(REPO / "manifests/examples").glob("*.yaml")]:  # and no other figure for them
        for figure in re.findall(r"(?:about|~)\s*([\d,.]+) H100 GPU-hours", path.read_text()):
            assert figure == paper, f"{path.relative_to(REPO)}: {figure} H100 GPU-hours, but selftaught plan says {paper}"
