"""An operator under test: the fake API server with the real CRD, a kubelet running each Job's
real command locally, S3 on loopback, and Kopf in a thread. The test cluster (tests/kube) knows
nothing of selftaught: the CRD, the checkout the pods run in and the variable the stages write
their termination message to are passed in here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from selftaught.api.crd import crd
from selftaught.errors import TERMINATION_MESSAGE_VARIABLE
from tests.kube import FakeCluster

NAMESPACE = "ml"
HANDLERS = "selftaught.controller.handlers"
REPO = Path(__file__).resolve().parents[2]
# where a stage writes its termination message (errors.encode; the Job's container sets it to
# /dev/termination-log): the test kubelet points it at the attempt's own file


@pytest.fixture
def cluster(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFTAUGHT_METRICS_PORT", "0")
    monkeypatch.setenv("SELFTAUGHT_HEALTH_PORT", "0")
    monkeypatch.setenv("SELFTAUGHT_RESYNC_SECONDS", "5")
    with FakeCluster(namespaces=(NAMESPACE,)) as fake:
        fake.install_crd(crd())  # the real schema: pruning and defaulting as an API server does
        fake.create(
            "v1/secrets",
            {"metadata": {"name": "s3-credentials"}, "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}},
            NAMESPACE,
        )
        yield fake


@pytest.fixture
def kubelet(cluster, tmp_path):
    """Runs Jobs as local processes; paths a pod would have map to temporary folders."""
    home = tmp_path / "pod-home"
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))

    def local_paths(job, index, env):
        env = dict(env)
        env.update(
            HOME=str(home),
            SELFTAUGHT_CACHE=str(tmp_path / "pod-cache"),
            HF_HOME=str(tmp_path / "pod-cache" / "hf"),
            TORCH_EXTENSIONS_DIR=str(extensions),  # reuse the compiled DeepSpeed ops
        )
        if "MASTER_ADDR" in env:
            env["MASTER_ADDR"] = "127.0.0.1"  # the headless Service's DNS name, on one machine
        return env

    return cluster.start_kubelet(
        cwd=REPO,
        log_dir=tmp_path / "pod-logs",
        # PYTHONPATH: the pods run this checkout's code, as the test process does (also from a git
        # worktree whose virtual environment's editable install is another checkout's)
        # SELFTAUGHT_GPUS 0: this machine has no GPUs, its GPU stages run on CPU (no CUDA check)
        extra_env={"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(REPO / "operator"), "SELFTAUGHT_GPUS": "0"},
        rewrite_env=local_paths,
        termination_message_env=TERMINATION_MESSAGE_VARIABLE,
    )


def run_object(run, name: str = "run") -> dict:
    """A SelfTaughtRun custom object for the cluster, from a parsed run."""
    spec = run.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["storage"]["credentialsSecret"] = "s3-credentials"
    return {"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def fake_stages(cluster, tmp_path):
    """A kubelet whose pods run tests/operator/fake_stage.py instead of the real stage: a `python`
    shim first on the pods' PATH. For tests of what the operator does with Jobs and pods."""
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "operator" / "fake_stage.py"}" "$@"\n')
    shim.chmod(0o755)
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    def local_rendezvous(job, index, env):
        return {**env, "MASTER_ADDR": "127.0.0.1"} if "MASTER_ADDR" in env else env

    return cluster.start_kubelet(
        cwd=REPO,
        log_dir=tmp_path / "pod-logs",
        extra_env={"PATH": path, "PYTHONPATH": str(REPO / "operator"), "AWS_DEFAULT_REGION": "us-east-1"},
        rewrite_env=local_rendezvous,
        termination_message_env=TERMINATION_MESSAGE_VARIABLE,
    )
