"""`make release`: the chart packaged by Helm, installable as the chart folder is, and the operator
in one file for `kubectl apply --server-side -f`: valid objects, exactly what `kubectl apply -k
manifests/` applies."""

from __future__ import annotations

import tarfile

import pytest

import selftaught

from .support import REPO, chart_objects, kustomize_objects, load_all, load_module, validate_object

helm = pytest.importorskip("helm_python")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    assert load_module(REPO / ".ci" / "release.py", "release").main(["--dist", str(folder)]) == 0
    return folder


def test_the_chart_is_packaged_with_the_package_version_and_renders_as_the_chart_folder(dist):
    archive = dist / f"selftaught-{selftaught.__version__}.tgz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "selftaught/Chart.yaml" in names and "selftaught/values.schema.json" in names and "selftaught/files/crd.yaml" in names
    with helm.Chart.load_archive(archive.read_bytes()) as chart:
        assert chart.version == selftaught.__version__
        rendered = chart.render({}, name="selftaught", namespace="selftaught-system", is_install=True)
    objects = [obj for path, text in rendered.items() if not path.endswith("NOTES.txt") for obj in load_all(text)]
    assert objects == chart_objects()


def test_the_single_file_release_is_the_kustomization_and_every_object_is_valid(dist):
    objects = load_all((dist / "selftaught.yaml").read_text())
    def key(obj):
        return obj["kind"], obj["metadata"]["name"]

    assert sorted(objects, key=key) == sorted(kustomize_objects(), key=key)
    kinds = [obj["kind"] for obj in objects]
    assert kinds[:2] == ["Namespace", "CustomResourceDefinition"] and {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"} <= set(kinds)
    for obj in objects:
        validate_object(obj)
    (deployment,) = [obj for obj in objects if obj["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/selftaught/operator:{selftaught.__version__}"
