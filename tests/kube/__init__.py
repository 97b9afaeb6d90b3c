"""A fake Kubernetes cluster for operator tests: an API server, a kubelet, and a Kopf runner."""
from .admission import DenyingWebhook, ObjectCountQuota
from .apiserver import DEFAULT_RESOURCES, KUBERNETES_VERSION, ClusterEmulator, ResourceSpec
from .client import ApiError
from .cluster import FakeCluster
from .containers import Attempt
from .deployments import DeploymentController, ServerPod
from .kopf_runner import operator_settings, run_operator
from .kubelet import Kubelet
from .kueue import Kueue
from .objects import job_condition, job_finished, pod_condition

__all__ = [
    'DEFAULT_RESOURCES', 'KUBERNETES_VERSION',
    'ApiError', 'Attempt', 'ClusterEmulator', 'DenyingWebhook', 'DeploymentController', 'FakeCluster', 'Kubelet', 'Kueue', 'ObjectCountQuota', 'ResourceSpec',
    'ServerPod', 'job_condition', 'job_finished', 'operator_settings', 'pod_condition', 'run_operator',
]
