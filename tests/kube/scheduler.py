"""The scheduler: which node a pod goes to, as kube-scheduler's default profile decides it — resource requests
against a node's free allocatable, ``nodeSelector`` and required node affinity, taints and tolerations — and
its FitError message when none fits."""
from __future__ import annotations

import collections
import dataclasses
import fractions
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ['Node', 'pod_requests', 'quantity', 'schedule']

_QUANTITY = re.compile(r'([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?')
_QUANTITY_SUFFIXES: dict[str, fractions.Fraction] = {
    **{suffix: fractions.Fraction(2) ** (10 * (i + 1)) for i, suffix in enumerate(('Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'))},
    'n': fractions.Fraction(1, 10 ** 9), 'u': fractions.Fraction(1, 10 ** 6), 'm': fractions.Fraction(1, 1000),
    **{suffix: fractions.Fraction(10) ** (3 * (i + 1)) for i, suffix in enumerate('kMGTPE')},
}
_STANDARD_RESOURCES = ('cpu', 'memory', 'ephemeral-storage')  # unlimited on a node that does not declare them


def quantity(value: Any) -> fractions.Fraction:
    """A Kubernetes resource quantity (``500m``, ``512Gi``, ``1e3``, ``8``) as an exact number."""
    m = _QUANTITY.fullmatch(str(value).strip())
    if m is None:
        raise ValueError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                         f': {value!r}')
    number = fractions.Fraction(m[1])
    if m[2]:
        number *= fractions.Fraction(10) ** int(m[2])
    elif m[3]:
        number *= _QUANTITY_SUFFIXES[m[3]]
    return number


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, fractions.Fraction]:
    """What the scheduler reserves for a pod: the sum over containers (a limit without a request is the request,
    as API defaulting makes it), at least the largest init container's."""
    def requests(container: Mapping[str, Any]) -> dict[str, fractions.Fraction]:
        resources = container.get('resources') or {}
        merged = {**(resources.get('limits') or {}), **(resources.get('requests') or {})}
        return {name: quantity(value) for name, value in merged.items()}
    total: dict[str, fractions.Fraction] = collections.defaultdict(fractions.Fraction)
    for container in pod_spec.get('containers') or []:
        for name, amount in requests(container).items():
            total[name] += amount
    for container in pod_spec.get('initContainers') or []:
        for name, amount in requests(container).items():
            total[name] = max(total[name], amount)
    return {name: amount for name, amount in total.items() if amount}


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    allocatable: Mapping[str, fractions.Fraction] | None  # None: unlimited
    taints: Sequence[Mapping[str, str]]
    unschedulable: bool

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Node:
        name = str(spec.get('name') or 'fake-node')
        labels = {'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64',
                  **(spec.get('labels') or {})}
        allocatable = spec.get('allocatable')
        return cls(name, labels, None if allocatable is None else {k: quantity(v) for k, v in allocatable.items()},
                   list(spec.get('taints') or []), bool(spec.get('unschedulable')))


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """``Toleration.ToleratesTaint`` of k8s.io/api."""
    if toleration.get('effect') and toleration['effect'] != taint.get('effect'):
        return False
    if toleration.get('key') and toleration['key'] != taint.get('key'):
        return False
    operator = toleration.get('operator') or 'Equal'
    if operator == 'Exists':
        return True
    return operator == 'Equal' and (toleration.get('value') or '') == (taint.get('value') or '')


def _selector_requirement(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = requirement.get('key'), requirement.get('operator'), requirement.get('values') or []
    if operator == 'Exists':
        return key in labels
    if operator == 'DoesNotExist':
        return key not in labels
    if operator == 'In':
        return key in labels and labels[key] in values
    if operator == 'NotIn':
        return key not in labels or labels[key] not in values
    if operator in ('Gt', 'Lt') and key in labels and len(values) == 1:
        try:
            actual, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return actual > bound if operator == 'Gt' else actual < bound
    return False


def _matches_node_affinity(pod_spec: Mapping[str, Any], node: Node) -> bool:
    """The pod's ``nodeSelector`` and required node affinity (terms are ORed, expressions in a term ANDed)."""
    if any(node.labels.get(key) != value for key, value in (pod_spec.get('nodeSelector') or {}).items()):
        return False
    required = (((pod_spec.get('affinity') or {}).get('nodeAffinity') or {})
                .get('requiredDuringSchedulingIgnoredDuringExecution'))
    if not required:
        return True
    for term in required.get('nodeSelectorTerms') or []:
        expressions, fields = term.get('matchExpressions') or [], term.get('matchFields') or []
        if (expressions or fields) and all(_selector_requirement(e, node.labels) for e in expressions) and all(
                _selector_requirement(f, {'metadata.name': node.name}) for f in fields):
            return True
    return False


def _filter_node(node: Node, pod_spec: Mapping[str, Any], requests: Mapping[str, fractions.Fraction],
                 used: Mapping[str, fractions.Fraction], pods: int) -> tuple[list[str], bool]:
    """The default scheduler's filter plugins, in their order, for one node: the reasons it does not fit, and
    whether preemption could help (resource shortages) or not (taints, affinity: UnschedulableAndUnresolvable)."""
    tolerations = pod_spec.get('tolerations') or []
    if node.unschedulable and not any(_tolerates(t, {'key': 'node.kubernetes.io/unschedulable',
                                                     'effect': 'NoSchedule'}) for t in tolerations):
        return ['node(s) were unschedulable'], False
    for taint in node.taints:
        if taint.get('effect') in ('NoSchedule', 'NoExecute') and not any(_tolerates(t, taint) for t in tolerations):
            return [f'node(s) had untolerated taint {{{taint.get("key")}: {taint.get("value") or ""}}}'], False
    if not _matches_node_affinity(pod_spec, node):
        return ["node(s) didn't match Pod's node affinity/selector"], False
    if node.allocatable is None:
        return [], True
    reasons = []
    if 'pods' in node.allocatable and pods + 1 > node.allocatable['pods']:
        reasons.append('Too many pods')
    for name, amount in requests.items():
        if name not in node.allocatable and (name in _STANDARD_RESOURCES or name.startswith('hugepages-')):
            continue  # not declared: unlimited
        if used.get(name, 0) + amount > node.allocatable.get(name, 0):  # an undeclared extended resource: none
            reasons.append(f'Insufficient {name}')
    return reasons, True


def _fit_error(failures: Sequence[tuple[list[str], bool]]) -> str:
    """The scheduler's FitError message, with the default preemption plugin's verdict (no lower-priority pods to
    evict here), e.g. ``0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are
    available: 1 No preemption victims found for incoming pod.``"""
    if not failures:
        return 'no nodes available to schedule pods'

    def histogram(reasons: Iterable[str]) -> str:
        return ', '.join(sorted(f'{count} {reason}' for reason, count in collections.Counter(reasons).items()))
    nodes = len(failures)
    why = histogram(reason for reasons, _ in failures for reason in reasons)
    preemption = histogram('No preemption victims found for incoming pod' if resolvable
                           else 'Preemption is not helpful for scheduling' for _, resolvable in failures)
    return (f'0/{nodes} nodes are available: {why}. '
            f'preemption: 0/{nodes} nodes are available: {preemption}.')


def schedule(pod_spec: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]],
             bound: Iterable[tuple[str, Mapping[str, fractions.Fraction]]]
             ) -> tuple[str | None, dict[str, fractions.Fraction], str]:
    """Where the pod goes: the first of ``nodes`` (``{"name", "labels", "allocatable", "taints", "unschedulable"}``)
    that passes every filter, given the pods bound and not finished (``bound``: each one's node and requests) —
    or ``None`` and the FitError message. Also returns the pod's requests, which binding it reserves."""
    requests = pod_requests(pod_spec)
    used: dict[str, dict[str, fractions.Fraction]] = collections.defaultdict(
        lambda: collections.defaultdict(fractions.Fraction))
    pods: collections.Counter[str] = collections.Counter()
    for node_name, reserved in bound:
        pods[node_name] += 1
        for name, amount in reserved.items():
            used[node_name][name] += amount
    failures = []
    for node in [Node.of(spec) for spec in nodes]:
        reasons, resolvable = _filter_node(node, pod_spec, requests, used[node.name], pods[node.name])
        if not reasons:
            return node.name, requests, ''
        failures.append((reasons, resolvable))
    return None, requests, _fit_error(failures)
