"""Admission that refuses a create with 403 Forbidden, worded as the real API server words it: a
validating webhook (Gatekeeper, Kyverno) that denies the request, and a ResourceQuota on object
counts (`count/jobs.batch`) that is used up. Both sit in the emulator's admission chain (its
`webhooks`), so every client — the operator, kubectl, the kubelet — meets them alike."""
from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import kmock

from .apiserver import _error
from .objects import Body

if TYPE_CHECKING:
    from .cluster import FakeCluster

__all__ = ['DenyingWebhook', 'ObjectCountQuota']


class _Admission:
    """Installed in the cluster's admission chain while it is entered (`with`), or `start()`/`stop()`."""

    def __init__(self, cluster: FakeCluster, resource: str) -> None:
        self.cluster = cluster
        self.resource = kmock.resource(resource)
        self._lock = threading.Lock()
        self.denied: list[str] = []  # names of the objects refused so far

    def start(self) -> _Admission:
        self.cluster.call(lambda: self.cluster.emulator.webhooks.append(self._hook))
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            self.cluster.call(lambda: self.cluster.emulator.webhooks.remove(self._hook))

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _hook(self, res: kmock.resource, obj: Body, old: Body | None) -> None:
        if old is not None or res != self.resource:
            return  # creates only
        with self._lock:
            message = self._refusal(obj)
            if message is None:
                return
            self.denied.append(obj['metadata'].get('name') or obj['metadata'].get('generateName', ''))
        raise _error(403, 'Forbidden', message)

    def _refusal(self, obj: Body) -> str | None:
        raise NotImplementedError


class DenyingWebhook(_Admission):
    """A validating admission webhook that denies every create of `resource` while `denying` (a policy
    engine's rule: `admission webhook "validation.gatekeeper.sh" denied the request: [rule] ...`)."""

    def __init__(self, cluster: FakeCluster, resource: str = 'batch/v1/jobs', *, name: str = 'validation.gatekeeper.sh',
                 message: str = '[require-team-label] you must provide labels: {"team"}') -> None:
        super().__init__(cluster, resource)
        self.name, self.message, self.denying = name, message, True

    def _refusal(self, obj: Body) -> str | None:
        return f'admission webhook "{self.name}" denied the request: {self.message}' if self.denying else None


class ObjectCountQuota(_Admission):
    """A ResourceQuota `name` with `count/<plural>.<group>: hard` in `namespace`, of which `used` are taken
    (by others' objects: a test raises `hard`, or lowers `used`, to free it). Each admitted create takes one."""

    def __init__(self, cluster: FakeCluster, namespace: str, resource: str = 'batch/v1/jobs', *, hard: int, used: int,
                 name: str = 'object-counts') -> None:
        super().__init__(cluster, resource)
        self.namespace, self.hard, self.used, self.name = namespace, hard, used, name
        group = f'.{self.resource.group}' if self.resource.group else ''
        self.key = f'count/{self.resource.plural}{group}'

    def _refusal(self, obj: Body) -> str | None:
        if obj['metadata'].get('namespace', self.namespace) != self.namespace:
            return None
        if self.used + 1 <= self.hard:
            self.used += 1
            return None
        kind = f'{self.resource.plural}.{self.resource.group}' if self.resource.group else str(self.resource.plural)
        return (f'{kind} "{obj["metadata"].get("name")}" is forbidden: exceeded quota: {self.name}, requested: '
                f'{self.key}=1, used: {self.key}={self.used}, limited: {self.key}={self.hard}')
