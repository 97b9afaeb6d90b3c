"""Kueue's batch/v1 Job integration as a Job's owner sees it: queued Jobs wait, suspended, until admitted."""
from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from typing import TYPE_CHECKING

import kmock

from .client import EventRecorder, unless_gone
from .control_loop import ControlLoop
from .objects import Body, job_finished

if TYPE_CHECKING:
    from .cluster import FakeCluster

__all__ = ['Kueue']

_JOBS = kmock.resource('batch/v1/jobs')


class Kueue(ControlLoop):
    """Kueue's batch/v1 Job integration, reduced to what a Job's owner sees.

    Its mutating webhook suspends every Job created with the ``kueue.x-k8s.io/queue-name`` label
    (``spec.suspend: true``); the Job stays suspended (the Job controller's ``Suspended=True`` condition) until
    it is admitted — by :meth:`admit`/:meth:`admit_all`, or at once with ``admit=True`` — when Kueue sets
    ``spec.suspend: false``. A queued Job that someone unsuspends before admission is suspended again. Events on
    the Job as Kueue posts them: ``CreatedWorkload``, ``Started`` (``Admitted by clusterQueue <name>``),
    ``Stopped`` (``Not admitted by cluster queue``). :meth:`preempt` evicts an admitted Job's workload as Kueue's
    preemption does. No Workload/ClusterQueue objects are served. A :class:`ControlLoop`: ``with``, or
    ``start()``/``stop()`` (the webhook is registered while it runs).
    """

    QUEUE_LABEL = 'kueue.x-k8s.io/queue-name'
    name = 'Kueue'
    thread_name = 'fake-kueue'

    def __init__(self, cluster: FakeCluster, *, admit: bool = False, cluster_queue: str = 'cluster-queue',
                 poll_interval: float = 0.05) -> None:
        super().__init__(poll_interval=poll_interval)
        self.cluster = cluster
        self.auto_admit = admit
        self.cluster_queue = cluster_queue
        self._admitted: set[str] = set()  # Job uids
        self._started: set[str] = set()
        self._workloads: dict[str, str] = {}  # Job uid -> Workload name
        self._preempted: set[str] = set()  # Job uids evicted and requeued: admitted again only by admit()
        self._lock = threading.RLock()
        self._events = EventRecorder(cluster, 'batch/job-kueue-controller')

    def _starting(self) -> None:
        self.cluster.call(lambda: self.cluster.emulator.webhooks.append(self._webhook))

    def _stopped(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):  # the cluster may be gone already
            self.cluster.call(lambda: self.cluster.emulator.webhooks.remove(self._webhook))

    def admit(self, namespace: str, name: str) -> None:
        """Admit a queued Job (its Workload got quota): Kueue unsuspends it, and it runs."""
        job = self.cluster.get('batch/v1/jobs', namespace, name)
        if job is None or not (job['metadata'].get('labels') or {}).get(self.QUEUE_LABEL):
            raise LookupError(f'no Job {namespace}/{name} with the label {self.QUEUE_LABEL}')
        with self._lock:
            self._admitted.add(job['metadata']['uid'])
            self._preempted.discard(job['metadata']['uid'])
            self._sync(job)

    def preempt(self, namespace: str, name: str, message: str | None = None) -> None:
        """Evict an admitted Job's workload, as Kueue does to make room for a workload of higher priority: it
        suspends the Job (the Job controller then deletes its pods: SIGTERM, SIGKILL after their grace period;
        they carry no DisruptionTarget condition) and posts ``Stopped`` with the eviction's message (``Preempted to
        accommodate a workload (UID: …, JobUID: …) due to prioritization in the ClusterQueue``). The workload is
        queued again, and runs once :meth:`admit` is called (``admit=True`` does not re-admit it by itself: the
        workload that preempted it holds the quota)."""
        job = self.cluster.get('batch/v1/jobs', namespace, name)
        if job is None:
            raise LookupError(f'no Job {namespace}/{name}')
        uid = job['metadata']['uid']
        with self._lock:
            if uid not in self._admitted:
                raise LookupError(f'Job {namespace}/{name} is not admitted: nothing to preempt')
            self._admitted.discard(uid)
            self._started.discard(uid)
            self._preempted.add(uid)
            with unless_gone():
                self.cluster.patch('batch/v1/jobs', namespace, name, {'spec': {'suspend': True}})
            self._events.record(job, 'Normal', 'Stopped', message or (
                f'Preempted to accommodate a workload (UID: {uuid.uuid4()}, JobUID: {uuid.uuid4()}) due to '
                'prioritization in the ClusterQueue'))

    def admit_all(self) -> None:
        """Admit every Job queued now."""
        with self._lock:
            for job in self._queued():
                self._admitted.add(job['metadata']['uid'])
                self._preempted.discard(job['metadata']['uid'])
                self._sync(job)

    def _webhook(self, res: kmock.resource, obj: Body, old: Body | None) -> None:
        if res == _JOBS and old is None and (obj['metadata'].get('labels') or {}).get(self.QUEUE_LABEL):
            obj.setdefault('spec', {})['suspend'] = True

    def _queued(self) -> list[Body]:
        return self.cluster.list('batch/v1/jobs', label_selector=self.QUEUE_LABEL)

    def _cycle(self) -> None:
        with self._lock:
            for job in self._queued():
                if self.auto_admit and job['metadata']['uid'] not in self._preempted:
                    self._admitted.add(job['metadata']['uid'])
                self._sync(job)

    def _sync(self, job: Body) -> None:
        meta, spec = job['metadata'], job.get('spec') or {}
        uid, namespace, name = meta['uid'], meta['namespace'], meta['name']
        if meta.get('deletionTimestamp') or job_finished(job):
            return
        if uid not in self._workloads:
            self._workloads[uid] = workload = f'job-{name}-{hashlib.sha1(uid.encode()).hexdigest()[:5]}'
            self._events.record(job, 'Normal', 'CreatedWorkload', f'Created Workload: {namespace}/{workload}')
        if uid in self._admitted:
            if uid not in self._started:
                self._started.add(uid)
                if spec.get('suspend'):
                    with unless_gone():
                        self.cluster.patch('batch/v1/jobs', namespace, name, {'spec': {'suspend': False}})
                self._events.record(job, 'Normal', 'Started', f'Admitted by clusterQueue {self.cluster_queue}')
        elif not spec.get('suspend'):
            with unless_gone():
                self.cluster.patch('batch/v1/jobs', namespace, name, {'spec': {'suspend': True}})
            self._events.record(job, 'Normal', 'Stopped', 'Not admitted by cluster queue')
