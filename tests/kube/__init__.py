"""A fake Kubernetes cluster for operator tests: an API server, a kubelet, and a Kopf runner."""
from .apiserver import (
    DEFAULT_RESOURCES,
    KUBERNETES_VERSION,
    REPO_ROOT,
    ApiError,
    Attempt,
    ClusterEmulator,
    FakeCluster,
    Kubelet,
    Kueue,
    ResourceSpec,
    job_condition,
    job_finished,
    operator_settings,
    pod_condition,
    run_operator,
)
from .deployments import DeploymentController, ServerPod

__all__ = [
    'DEFAULT_RESOURCES', 'KUBERNETES_VERSION', 'REPO_ROOT',
    'ApiError', 'Attempt', 'ClusterEmulator', 'DeploymentController', 'FakeCluster', 'Kubelet', 'Kueue', 'ResourceSpec',
    'ServerPod', 'job_condition', 'job_finished', 'operator_settings', 'pod_condition', 'run_operator',
]
