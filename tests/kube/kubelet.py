"""The kubelet, with the Job controller and the TTL-after-finished controller it answers to: one loop that
polls Jobs, creates their Pods, has them scheduled (scheduler.py), pulls their images (images.py), runs their
first container as a local process (containers.py), and writes Job and Pod statuses and Events as the real
components do."""
from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import fractions
import itertools
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import ApiError, EventRecorder, client_error, unless_gone
from .containers import (
    DEFAULT_PASSTHROUGH_ENV,
    Attempt,
    ConfigError,
    RewriteEnv,
    container_environment,
    expand,
    first_container,
    termination_message,
)
from .control_loop import ControlLoop
from .images import BadImages, go_quote, invalid_image, pull_error
from .objects import NAME_ALPHABET, Body, job_condition, job_finished, timestamp
from .scheduler import schedule

if TYPE_CHECKING:
    from .cluster import FakeCluster

__all__ = ['DEFAULT_QUOTA_MESSAGE', 'DISRUPTION_MESSAGES', 'Kubelet']

DEFAULT_QUOTA_MESSAGE = ('exceeded quota: compute-resources, requested: pods=1, used: pods=10, limited: pods=10')
#: why a pod stays ContainerCreating: the Event reason -> (the component that posts it, its message for pod {pod})
CREATING_PROBLEMS = {
    'FailedMount': ('kubelet', 'Unable to attach or mount volumes: unmounted volumes=[cache], unattached volumes=[cache]: '
                               'timed out waiting for the condition'),
    'FailedAttachVolume': ('attachdetach-controller', 'Multi-Attach error for volume "pvc-5c1e7d2a" Volume is already '
                                                      'used by pod(s) other-run-train-0-x7k2p'),
    'FailedCreatePodSandBox': ('kubelet', 'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to '
                                          'setup network for sandbox "5f0c1d": plugin type="multus" name="multus-cni-network" '
                                          'failed (add): Multus: [{namespace}/{pod}]: error loading k8s delegates k8s args: '
                                          'TryLoadPodDelegates: error in getting k8s network for pod: GetNetworkDelegates: '
                                          'failed getting the delegate: getKubernetesDelegate: cannot find a '
                                          'network-attachment-definition (ib-net) in namespace ({namespace}): '
                                          'network-attachment-definitions.k8s.cni.cncf.io "ib-net" not found'),
}


def _format_indexes(indexes: Iterable[int]) -> str:
    """The Job controller's interval format: ``0-2,4,6,7`` (a dash only for runs of three or more)."""
    ordered, parts = sorted(indexes), []
    for _, group in itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0]):
        run = [index for _, index in group]
        if len(run) >= 3:
            parts.append(f'{run[0]}-{run[-1]}')
        else:
            parts += [str(index) for index in run]
    return ','.join(parts)


# ---- the Job controller's podFailurePolicy and disruptions -------------------------------------------------------

DISRUPTION_MESSAGES = {  # DisruptionTarget reason -> the message the component that disrupts the pod writes
    'EvictionByEvictionAPI': 'Eviction API: evicting',
    'PreemptionByScheduler': '{scheduler}: preempting to accommodate a higher priority pod',
    'DeletionByTaintManager': 'Taint manager: deleting due to NoExecute taint',
    'TerminationByKubelet': 'The node was low on resource: memory. Threshold quantity: 100Mi, available: 0Ki. ',
    'DeletionByPodGC': 'PodGC: node no longer exists',
}
#: a pod's grace period when its spec says none (the API server's default)
DEFAULT_GRACE_SECONDS = 30


def _match_pod_failure_policy(policy: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> tuple[str | None, str]:
    """The Job controller's ``matchPodFailurePolicy``: the action of the first rule that matches a failed pod
    (``None``: no rule matches, count it), and for ``FailJob`` the message of the Job's Failed condition."""
    meta, status = pod['metadata'], pod.get('status') or {}
    where = f'{meta.get("namespace")}/{meta["name"]}'
    for index, rule in enumerate((policy or {}).get('rules') or []):
        action, message = rule.get('action'), ''
        if rule.get('onExitCodes') is not None:
            requirement = rule['onExitCodes']
            values = requirement.get('values') or []
            for container in [*(status.get('containerStatuses') or []), *(status.get('initContainerStatuses') or [])]:
                terminated = (container.get('state') or {}).get('terminated')
                if not terminated or terminated.get('exitCode', 0) == 0:
                    continue
                if requirement.get('containerName') not in (None, container.get('name')):
                    continue
                code = terminated['exitCode']
                if (code in values) == (requirement.get('operator') == 'In'):
                    message = (f'Container {container.get("name")} for pod {where} failed with exit code {code} '
                               f'matching {action} rule at index {index}')
                    break
            else:
                continue
        elif rule.get('onPodConditions'):
            matched = next((c for c in status.get('conditions') or [] for pattern in rule['onPodConditions']
                            if c.get('type') == pattern.get('type')
                            and c.get('status') == (pattern.get('status') or 'True')), None)
            if matched is None:
                continue
            message = f'Pod {where} has condition {matched["type"]} matching {action} rule at index {index}'
        else:
            continue
        if action in ('Ignore', 'FailJob', 'FailIndex', 'Count'):
            return action, message
        # an action this version does not know: skipped, as clients are told to do
    return None, ''


@dataclasses.dataclass(eq=False)
class _JobRun:
    """The kubelet's memory of one Job (by uid): what succeeded, what failed, what runs."""

    uid: str
    namespace: str
    name: str
    indexed: bool
    succeeded: set[int] = dataclasses.field(default_factory=set)
    failed_indexes: set[int] = dataclasses.field(default_factory=set)
    failures: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    failed: int = 0
    active: dict[int, Attempt] = dataclasses.field(default_factory=dict)
    attempts: int = 0
    start_time: str | None = None
    started_monotonic: float = 0.0
    completion_time: str | None = None
    conditions: list[Body] = dataclasses.field(default_factory=list)
    finished: bool = False
    finished_wall: float | None = None  # time.time() when it finished (for ttlSecondsAfterFinished)
    refused: bool = False  # the last pod creation was refused by the API server
    retry_create_at: float = 0.0
    written: Body | None = None  # the last status written, to write only changes


@dataclasses.dataclass(frozen=True)
class _InjectedFailure:
    prefix: str
    exit_code: int
    message: str
    reason: str | None = None  # the container's terminated reason (OOMKilled), else Error
    rejected: tuple[str, str] | None = None  # the kubelet's admission refused the pod: (status.reason, message)


def _finish_time(job: Mapping[str, Any]) -> float | None:
    """When a Job finished (its Complete/Failed condition's transition), as a Unix time."""
    condition = job_condition(job, 'Complete') or job_condition(job, 'Failed')
    stamp = (condition or {}).get('lastTransitionTime')
    if not stamp:
        return None
    return datetime.datetime.strptime(stamp, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.UTC).timestamp()


class Kubelet(ControlLoop):
    """The Job controller, the scheduler and a kubelet in one thread: it polls Jobs and runs their containers locally.

    Each attempt of each index gets a Pod object (``<job>-<index>-<random>``, labelled and owned like the real
    controller's), which the scheduler binds to one of ``nodes`` (or leaves Pending, Unschedulable); the kubelet
    "pulls" its image (see ``bad_images``), resolves its environment, and runs the pod template's first container
    ``command`` + ``args`` as a subprocess in ``cwd``, with stdout/stderr in ``log_dir``; the variable named by
    ``termination_message_env`` gives it the file its pod's ``terminationMessagePath`` is. Job and Pod statuses,
    conditions and Events are written the way the real components write them.

    Semantics kept: completions, parallelism (indexes up to that many run at once), backoffLimit (the Job fails
    once failures exceed it), backoffLimitPerIndex/maxFailedIndexes, podFailurePolicy, activeDeadlineSeconds,
    suspend (running processes are killed, nothing starts), ttlSecondsAfterFinished, deletion (processes of a
    deleted Job are killed), node resources/selectors/affinity/taints, image pull errors, Pods that wait
    (CreateContainerConfigError) while a referenced Secret key is missing, refused pod creation, evictions (with the
    pod's grace period) and lost nodes.
    Simplified: back-offs are a fixed ``retry_interval``, restartPolicy OnFailure retries in a new Pod, only the first
    container runs, deleting a Pod does not kill its process, ``workingDir``/volumes are ignored, and completions
    unset means 1 (no work-queue mode).

    A :class:`ControlLoop`: ``with``, or ``start()``/``stop()``; stopping kills every process still running (the
    logs stay).
    """

    def __init__(self, cluster: FakeCluster, *, cwd: str | os.PathLike[str],
                 log_dir: str | os.PathLike[str] | None = None, extra_env: Mapping[str, str] | None = None,
                 rewrite_env: RewriteEnv | None = None, entrypoints: Mapping[str, Sequence[str]] | None = None,
                 passthrough_env: Iterable[str] = DEFAULT_PASSTHROUGH_ENV, poll_interval: float = 0.05,
                 kill_grace: float = 2.0, node_name: str = 'fake-node',
                 nodes: Iterable[Mapping[str, Any]] | None = None, retry_interval: float = 1.0,
                 termination_message_env: str | None = None) -> None:
        super().__init__(poll_interval=poll_interval)
        self.cluster = cluster
        self.cwd = Path(cwd)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix='fake-kubelet-'))
        self.extra_env = dict(extra_env or {})
        self.rewrite_env = rewrite_env
        self.entrypoints = {image: list(argv) for image, argv in (entrypoints or {}).items()}
        self.passthrough_env = tuple(passthrough_env)
        # the variable a process finds its termination-message file in (the pod's terminationMessagePath)
        self.termination_message_env = termination_message_env
        # the longest a stopped process gets between SIGTERM and SIGKILL: its pod's grace period
        # (terminationGracePeriodSeconds, or an eviction's), cut to this so that tests stay short
        self.kill_grace = kill_grace
        self.node_name = node_name
        # The cluster's nodes: {"name", "labels", "allocatable", "taints", "unschedulable"}; a node without
        # "allocatable" has unlimited resources. Tests may change the list while it runs (a node joins, ...).
        self.nodes: list[dict[str, Any]] = [dict(n) for n in nodes] if nodes is not None else [{'name': node_name}]
        # Images whose pull fails (ErrImagePull, then ImagePullBackOff): a set of image names as the pod spec
        # writes them, a mapping of them to the runtime's error message, or a predicate (returning a message or
        # True). Tests may change it while pods wait: the next pull succeeds.
        self.bad_images: BadImages = set()
        self.retry_interval = retry_interval  # the back-off between retries (pulls, pod creation, scheduling)
        self._cond = threading.Condition()
        self._cycle_lock = threading.RLock()  # held for a whole cycle: pause() waits for the one in flight
        self._attempts: list[Attempt] = []
        self._injected: list[_InjectedFailure] = []
        self._refusals: dict[str, str] = {}  # Job name prefix -> why the API server refuses its pods
        self._stuck: dict[str, tuple[str, str | None]] = {}  # Job name prefix -> (Event reason, message): ContainerCreating
        self._runs: dict[str, _JobRun] = {}
        self._terminating: list[Attempt] = []
        self._paused = False
        self._cycles = 0
        self._busy: list[str] = ['not started']
        self._kubelet_events = EventRecorder(cluster, 'kubelet')
        self._scheduler_events = EventRecorder(cluster, 'default-scheduler')
        self._job_events = EventRecorder(cluster, 'job-controller')
        self._taint_events = EventRecorder(cluster, 'taint-eviction-controller')
        self._attach_events = EventRecorder(cluster, 'attachdetach-controller')

    # ---- public controls --------------------------------------------------------------------------------------

    @property
    def started(self) -> list[tuple[str, int | None]]:
        """``(job name, index)`` of every attempt so far, in start order — to assert nothing ran twice."""
        with self._cond:
            return [(attempt.job, attempt.index) for attempt in self._attempts]

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt so far (pods, pids, exit codes, log paths), in start order."""
        with self._cond:
            return list(self._attempts)

    def fail_next(self, job_name_prefix: str, exit_code: int = 1, message: str = '', reason: str | None = None) -> None:
        """Make the next attempt of a Job whose name starts with the prefix fail without running its command.

        ``message`` becomes the termination message; ``reason`` the container's terminated reason (the kubelet
        writes ``OOMKilled`` only when the runtime says the cgroup's OOM killer did it: any other SIGKILL, exit
        137, is ``Error``). Each call injects one failure; they queue up.
        """
        if exit_code == 0:
            raise ValueError('an injected failure needs a non-zero exit code')
        with self._cond:
            self._injected.append(_InjectedFailure(job_name_prefix, exit_code, message, reason))

    def reject_next(self, job_name_prefix: str, reason: str = 'OutOfnvidia.com/gpu', message: str | None = None) -> None:
        """Make the kubelet's admission refuse the next pod of a matching Job once it is bound (a device plugin
        that has not registered its GPUs: ``OutOfnvidia.com/gpu``; node labels changed since scheduling:
        ``NodeAffinity``). As the kubelet's ``rejectPod``: phase ``Failed``, ``status.reason`` = ``reason``,
        ``status.message`` ``Pod was rejected: <message>``, no container statuses, a Warning Event ``reason``.
        """
        if message is None:
            resource = reason.removeprefix('OutOf')
            message = (f"Node didn't have enough resource: {resource}, requested: 1, used: 0, capacity: 0"
                       if reason.startswith('OutOf') else "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector")
        with self._cond:
            self._injected.append(_InjectedFailure(job_name_prefix, 1, '', None, (reason, f'Pod was rejected: {message}')))

    def refuse_pods(self, job_name_prefix: str, message: str = DEFAULT_QUOTA_MESSAGE) -> None:
        """Make the API server refuse the pods of Jobs whose name starts with the prefix (403 Forbidden, as an
        exhausted ResourceQuota or a PodSecurity violation does), until :meth:`allow_pods`.

        The Job controller then posts a ``FailedCreate`` Warning Event on the Job (``Error creating: pods
        "<name>" is forbidden: <message>``), its count bumped on each retry; the Job stays active with no pods.
        """
        with self._cond:
            self._refusals[job_name_prefix] = message

    def allow_pods(self, job_name_prefix: str | None = None) -> None:
        """Lift :meth:`refuse_pods` for that prefix (all of them if ``None``): the next retry creates the pods."""
        with self._cond:
            if job_name_prefix is None:
                self._refusals.clear()
            else:
                self._refusals.pop(job_name_prefix, None)

    def hold_creating(self, job_name_prefix: str, reason: str = 'FailedMount', message: str | None = None) -> None:
        """Keep the scheduled pods of matching Jobs in ``ContainerCreating`` (until :meth:`release_creating`), as a
        volume that never mounts (``FailedMount``: a ReadWriteOnce PVC, a CSI driver), never attaches
        (``FailedAttachVolume``: Multi-Attach, from the attach/detach controller) or a sandbox whose network cannot
        be set up (``FailedCreatePodSandBox``: a missing Multus NetworkAttachmentDefinition) does: phase
        ``Pending``, the container ``waiting`` with reason ``ContainerCreating`` and no message, and the Warning
        Event ``reason`` on the pod again after each ``retry_interval`` (count bumped)."""
        if reason not in CREATING_PROBLEMS:
            raise ValueError(f'a pod stuck creating shows one of {sorted(CREATING_PROBLEMS)}, not {reason!r}')
        with self._cond:
            self._stuck[job_name_prefix] = (reason, message)

    def release_creating(self, job_name_prefix: str | None = None) -> None:
        """The volume mounts, the network appears: held pods start at the next sync."""
        with self._cond:
            if job_name_prefix is None:
                self._stuck.clear()
            else:
                self._stuck.pop(job_name_prefix, None)

    def evict(self, job_name: str, index: int | None = None, *, reason: str = 'EvictionByEvictionAPI',
              message: str | None = None, namespace: str | None = None,
              grace_period_seconds: float | None = None) -> Attempt:
        """Disrupt a pod of a Job as a real component would, and return its attempt.

        The pod gets the condition ``DisruptionTarget=True`` with ``reason`` — ``EvictionByEvictionAPI`` (the
        Eviction API, e.g. a node drain), ``PreemptionByScheduler``, ``DeletionByTaintManager`` (a ``NoExecute``
        taint on a node whose kubelet still runs) or ``TerminationByKubelet`` (node-pressure eviction: SIGKILL, and
        the pod keeps ``status.reason`` ``Evicted``) — and that component's message (or ``message``); its process is
        killed (SIGTERM, then SIGKILL after the pod's grace period: ``grace_period_seconds`` as the Eviction API's
        DeleteOptions give it, else the pod's ``terminationGracePeriodSeconds``, 30 s by default; cut to
        ``kill_grace``) and it ends ``Failed``. The Job controller then applies the Job's podFailurePolicy. Pods
        deleted by the disruption (all but kubelet evictions) are removed once terminal. ``index`` picks the
        completion index (default: the Job's first active pod). A node that goes away is :meth:`lose_node`.
        """
        if reason not in DISRUPTION_MESSAGES or reason == 'DeletionByPodGC':
            raise ValueError(f'unknown DisruptionTarget reason {reason!r} for an eviction: one of '
                             f'{sorted(set(DISRUPTION_MESSAGES) - {"DeletionByPodGC"})} (PodGC: lose_node)')
        with self._cycle_lock:
            attempt = self._active_attempt(job_name, index, namespace)
            pod = attempt._pod_body
            scheduler = (pod.get('spec') or {}).get('schedulerName') or 'default-scheduler'
            message = message or DISRUPTION_MESSAGES[reason].format(scheduler=scheduler)
            attempt.disruption = reason
            self._set_pod_condition(attempt, 'DisruptionTarget', 'True', reason, message)
            if reason == 'TerminationByKubelet':
                attempt._pod_reason = 'Evicted'
                self._kubelet_events.record(pod, 'Warning', 'Evicted', message, host=attempt.node)
            else:  # these delete the pod: it goes once terminal and accounted (the Job controller's finalizer)
                attempt._delete_when_done = True
                if reason == 'PreemptionByScheduler':
                    self._scheduler_events.record(pod, 'Normal', 'Preempted',
                                                  f'Preempted by pod {uuid.uuid4()} on node {attempt.node}')
                elif reason == 'DeletionByTaintManager':
                    self._taint_events.record(pod, 'Normal', 'TaintManagerEviction',
                                              f'Marking for deletion Pod {attempt.namespace}/{attempt.pod}')
            if attempt.running:
                self._pod_status(attempt, {})  # the condition first, as the evicting component writes it
                container = first_container(pod)
                self._kubelet_events.record(pod, 'Normal', 'Killing', f'Stopping container {container.get("name")}',
                                            field_path=self._field_path(container), host=attempt.node)
                self._stop(attempt, signal.SIGKILL if reason == 'TerminationByKubelet' else signal.SIGTERM,
                           grace=grace_period_seconds)
            else:  # it never started: nothing to kill, the kubelet reports the container as unknown
                attempt.killed, attempt.waiting = True, None
                attempt._end_reason, attempt._injected_code = 'ContainerStatusUnknown', 137
                attempt.message_path.write_text('The container could not be located when the pod was terminated')
            return attempt

    def lose_node(self, name: str, *, reason: str = 'DeletionByTaintManager') -> list[Attempt]:
        """The node ``name`` goes away without a word (a spot VM reclaimed, a host that died), and the cluster
        notices: every process on it dies at once (SIGKILL: no kubelet is left to give a grace period), the node
        leaves ``nodes`` (its pods' replacements wait for another node: append one), and each of its pods gets
        ``DisruptionTarget=True`` from the control plane — ``DeletionByTaintManager`` (the node's NoExecute
        ``unreachable`` taint; Event ``TaintManagerEviction``) or ``DeletionByPodGC`` (the Node object is gone) —
        then phase ``Failed`` (PodGC writes the phase: no kubelet reports the container's end, so its status stays
        as last reported) and is deleted once the Job controller has accounted it. Returns the attempts it stopped.
        """
        if reason not in ('DeletionByTaintManager', 'DeletionByPodGC'):
            raise ValueError(f'a lost node\'s pods are deleted by the taint manager or PodGC, not {reason!r}')
        with self._cycle_lock:
            self.nodes = [node for node in self.nodes if node.get('name', self.node_name) != name]
            lost = [a for run in self._runs.values() for a in run.active.values() if a.node == name]
            for attempt in lost:
                attempt.disruption, attempt.node_lost, attempt._delete_when_done = reason, True, True
                attempt.killed, attempt.grace = True, 0.0
                attempt._signal(signal.SIGKILL)
                if not attempt.running:  # never started: nothing to kill
                    attempt.waiting, attempt._injected_code = None, 137
                self._set_pod_condition(attempt, 'DisruptionTarget', 'True', reason, DISRUPTION_MESSAGES[reason])
                self._pod_status(attempt, {})
                if reason == 'DeletionByTaintManager':
                    self._taint_events.record(attempt._pod_body, 'Normal', 'TaintManagerEviction',
                                              f'Marking for deletion Pod {attempt.namespace}/{attempt.pod}')
            return lost

    def pause(self) -> None:
        """Stop reconciling: nothing starts, no status is written, running processes run on unobserved.

        Returns once a cycle in flight has finished, so nothing at all happens after it returns.
        """
        with self._cond:
            self._paused = True
        with self._cycle_lock:
            pass

    def resume(self) -> None:
        with self._cond:
            self._paused = False
        self.wake()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no process runs and every Job is finished, suspended, or blocked (its pods unschedulable,
        waiting for an image or a missing Secret, or their creation refused).

        It only sees Jobs that exist: after creating a resource, first wait for the operator's Job to appear.
        Raises ``TimeoutError`` (listing what is busy), or ``RuntimeError`` if the kubelet loop has failed.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._paused:
                raise RuntimeError('the kubelet is paused: it will not become idle')
            target = self._cycles + 2  # one full cycle that started after this call
            while True:
                self.check()
                if self._cycles >= target and not self._busy:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f'the kubelet is still busy after {timeout} s: {self._busy}')
                self._cond.wait(min(left, 0.5))

    # ---- the loop ---------------------------------------------------------------------------------------------

    name = 'the kubelet'
    thread_name = 'fake-kubelet'

    def _starting(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _step(self) -> None:
        """One cycle unless paused; counted, and what keeps it busy kept, for :meth:`wait_idle`."""
        with self._cycle_lock:
            with self._cond:
                if self._paused:
                    return
            busy, error = self._run_cycle()
            with self._cond:
                self._cycles += 1
                self._busy = busy if error is None else [f'error: {error!r}']
                self._cond.notify_all()

    def _shutdown(self) -> None:
        """Kill what still runs: SIGTERM, then SIGKILL after ``kill_grace``."""
        victims = [a for run in self._runs.values() for a in run.active.values()] + self._terminating
        for attempt in victims:
            attempt._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        for attempt in victims:
            if attempt._proc is not None:
                try:
                    attempt._proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    attempt._signal(signal.SIGKILL)
                    attempt._proc.wait()
                attempt.killed = True
                attempt.exit_code = attempt._poll()

    def _cycle(self) -> list[str]:
        busy: list[str] = []
        seen: set[str] = set()
        for job in self.cluster.list('batch/v1/jobs'):
            seen.add(job['metadata']['uid'])
            if self._reconcile(job):
                busy.append(f'Job {job["metadata"]["namespace"]}/{job["metadata"]["name"]}')
        for uid in [uid for uid in self._runs if uid not in seen]:  # deleted Jobs: kill what they still run
            run = self._runs.pop(uid)
            for attempt in run.active.values():
                self._terminate(attempt)
        self._reap_terminating()
        busy += [f'terminating pod {a.namespace}/{a.pod}' for a in self._terminating]
        return busy

    def _reconcile(self, job: Body) -> bool:
        """Advance one Job by one step; returns whether it still has work to do."""
        meta, spec = job['metadata'], job.get('spec') or {}
        run = self._runs.get(meta['uid'])
        if run is None:
            if job_finished(job):  # finished before this kubelet started: never rerun it
                self._collect_finished(job, None)
                return False
            run = self._runs[meta['uid']] = _JobRun(meta['uid'], meta['namespace'], meta['name'],
                                                    indexed=spec.get('completionMode') == 'Indexed')
        if run.finished:
            self._write_status(job, run)  # a no-op unless the last write failed
            self._collect_finished(job, run)
            return False
        if meta.get('deletionTimestamp'):
            for attempt in run.active.values():
                self._terminate(attempt)
            run.active.clear()
            return False
        self._reap(job, run)
        if run.finished:  # a podFailurePolicy FailJob rule matched
            self._write_status(job, run)
            return False

        if spec.get('suspend'):
            for attempt in run.active.values():
                self._terminate(attempt, delete_pod=True)
            run.active.clear()
            if self._set_condition(run, 'Suspended', 'True', 'JobSuspended', 'Job suspended'):
                self._job_events.record(job, 'Normal', 'Suspended', 'Job suspended')
            self._write_status(job, run)
            return False
        if any(c['type'] == 'Suspended' and c['status'] == 'True' for c in run.conditions):
            self._set_condition(run, 'Suspended', 'False', 'JobResumed', 'Job resumed')
            self._job_events.record(job, 'Normal', 'Resumed', 'Job resumed')
            run.start_time = None  # reset on resume, as in Kubernetes
        if run.start_time is None:
            run.start_time, run.started_monotonic = timestamp(), time.monotonic()

        completions = spec.get('completions') or 1
        per_index_limit = spec.get('backoffLimitPerIndex') if run.indexed else None
        deadline = spec.get('activeDeadlineSeconds')
        if deadline is not None and time.monotonic() - run.started_monotonic > deadline:
            self._fail(run, 'DeadlineExceeded', 'Job was active longer than specified deadline')
        elif per_index_limit is not None:
            run.failed_indexes |= {index for index, count in run.failures.items() if count > per_index_limit}
            max_failed = spec.get('maxFailedIndexes')
            if max_failed is not None and len(run.failed_indexes) > max_failed:
                self._fail(run, 'MaxFailedIndexesExceeded', 'Job has exceeded the specified maximal number of '
                                                            'failed indexes')
        elif run.failed > spec.get('backoffLimit', 6):
            self._fail(run, 'BackoffLimitExceeded', 'Job has reached the specified backoff limit')

        if not run.finished and len(run.succeeded) + len(run.failed_indexes) >= completions and not run.active:
            if run.failed_indexes:
                self._fail(run, 'FailedIndexes', 'Job has failed indexes')
            else:
                self._complete(run)
        if not run.finished:
            for attempt in list(run.active.values()):
                if attempt.waiting is not None:  # e.g. a node, the image or the Secret it needs may be there now
                    self._advance(job, attempt)
            self._create_pods(job, run, completions)
        self._write_status(job, run)
        blocked = all(a.waiting is not None for a in run.active.values()) and (bool(run.active) or run.refused)
        return not run.finished and not blocked

    def _create_pods(self, job: Body, run: _JobRun, completions: int) -> None:
        """Create the missing pods, up to ``parallelism``; a refused creation is retried after ``retry_interval``."""
        if time.monotonic() < run.retry_create_at:
            return
        done = run.succeeded | run.failed_indexes
        pending = [slot for slot in range(completions) if slot not in done and slot not in run.active]
        for slot in pending[:max(0, (job.get('spec') or {}).get('parallelism', 1) - len(run.active))]:
            try:
                attempt = self._launch(job, run, slot)
            except ApiError as e:  # the controller's podControl: one event per failed creation, then a back-off
                run.refused, run.retry_create_at = True, time.monotonic() + self.retry_interval
                self._job_events.record(job, 'Warning', 'FailedCreate', f'Error creating: {client_error(e)}')
                return
            run.refused = False
            run.active[slot] = attempt
            if not attempt.injected:
                self._advance(job, attempt)

    def _reap(self, job: Body, run: _JobRun) -> None:
        for slot, attempt in list(run.active.items()):
            self._enforce_grace(attempt)
            code = attempt._poll()
            if code is None:
                continue
            del run.active[slot]
            self._finish(attempt, code)
            if code == 0:
                run.succeeded.add(slot)
            else:
                self._count_failure(job, run, attempt, slot)
            if attempt._delete_when_done:  # accounted: the Job controller lets a deleted pod go
                with unless_gone():
                    self.cluster.delete('v1/pods', attempt.namespace, attempt.pod)
            if run.finished:
                return

    def _count_failure(self, job: Body, run: _JobRun, attempt: Attempt, slot: int) -> None:
        """A failed pod, as the Job controller accounts it under the Job's podFailurePolicy."""
        spec = job.get('spec') or {}
        action, message = _match_pod_failure_policy(spec.get('podFailurePolicy'), self._pod_view(attempt))
        if action == 'Ignore':  # not counted towards any limit: the index simply gets a new pod
            return
        run.failed += 1
        run.failures[slot] += 1
        if action == 'FailJob':
            self._fail(run, 'PodFailurePolicy', message)
        elif action == 'FailIndex' and run.indexed and spec.get('backoffLimitPerIndex') is not None:
            run.failed_indexes.add(slot)

    def _fail(self, run: _JobRun, reason: str, message: str) -> None:
        for attempt in run.active.values():
            self._terminate(attempt)
        run.active.clear()
        self._set_condition(run, 'FailureTarget', 'True', reason, message)
        self._set_condition(run, 'Failed', 'True', reason, message)
        run.finished, run.finished_wall = True, time.time()

    def _complete(self, run: _JobRun) -> None:
        message = 'Reached expected number of succeeded pods'
        self._set_condition(run, 'SuccessCriteriaMet', 'True', 'CompletionsReached', message)
        self._set_condition(run, 'Complete', 'True', 'CompletionsReached', message)
        run.completion_time = timestamp()
        run.finished, run.finished_wall = True, time.time()

    def _collect_finished(self, job: Body, run: _JobRun | None) -> None:
        """The TTL-after-finished controller: delete a finished Job (Foreground: its pods go first) once
        ``ttlSecondsAfterFinished`` have passed since it finished."""
        ttl = (job.get('spec') or {}).get('ttlSecondsAfterFinished')
        if ttl is None or job['metadata'].get('deletionTimestamp'):
            return
        finished = run.finished_wall if run is not None and run.finished_wall is not None else _finish_time(job)
        if finished is not None and time.time() >= finished + ttl:
            with unless_gone():
                self.cluster.delete('batch/v1/jobs', job['metadata']['namespace'], job['metadata']['name'],
                                    propagation='Foreground')

    @staticmethod
    def _set_condition(run: _JobRun, type_: str, status: str, reason: str, message: str) -> bool:
        """Set a Job condition; returns whether anything changed."""
        for condition in run.conditions:
            if condition['type'] == type_:
                if condition['status'] == status:
                    return False
                now = timestamp()
                condition.update(status=status, reason=reason, message=message, lastProbeTime=now,
                                 lastTransitionTime=now)
                return True
        now = timestamp()
        run.conditions.append({'type': type_, 'status': status, 'reason': reason, 'message': message,
                               'lastProbeTime': now, 'lastTransitionTime': now})
        return True

    def _write_status(self, job: Body, run: _JobRun) -> None:
        """Merge-patch the Job's /status like the Job controller, only when something changed."""
        status: Body = {'ready': sum(1 for a in run.active.values() if a.running), 'terminating': 0,
                        'uncountedTerminatedPods': {}}
        if run.start_time:
            status['startTime'] = run.start_time
        for key, value in (('active', len(run.active)), ('succeeded', len(run.succeeded)),
                           ('failed', run.failed)):
            if value:  # zero counts are omitted, as the real controller's JSON does
                status[key] = value
        if run.indexed and run.succeeded:
            status['completedIndexes'] = _format_indexes(run.succeeded)
        if run.indexed and (job.get('spec') or {}).get('backoffLimitPerIndex') is not None:
            status['failedIndexes'] = _format_indexes(run.failed_indexes)
        if run.completion_time:
            status['completionTime'] = run.completion_time
        if run.conditions:
            status['conditions'] = copy.deepcopy(run.conditions)
        if status == run.written:
            return
        patch: Body = {key: None for key in (run.written or job.get('status') or {}) if key not in status}
        patch.update(status)
        with unless_gone():
            self.cluster.patch('batch/v1/jobs', run.namespace, run.name, {'status': patch}, subresource='status')
            run.written = status

    # ---- attempts ---------------------------------------------------------------------------------------------

    def _active_attempt(self, job_name: str, index: int | None, namespace: str | None) -> Attempt:
        for run in self._runs.values():
            if run.name == job_name and namespace in (None, run.namespace):
                for slot in sorted(run.active):
                    attempt = run.active[slot]
                    if index is None or attempt.index == index:
                        return attempt
        raise LookupError(f'Job {job_name!r} has no active pod' + (f' with index {index}' if index is not None else ''))

    @staticmethod
    def _field_path(container: Mapping[str, Any]) -> str:
        return f'spec.containers{{{container.get("name", "main")}}}'

    def _launch(self, job: Body, run: _JobRun, slot: int) -> Attempt:
        """Create the pod of one attempt, as the Job controller does (raises ApiError if the server refuses)."""
        spec = job.get('spec') or {}
        index = slot if run.indexed else None
        template = spec.get('template') or {}
        template_meta = template.get('metadata') or {}
        labels = {**(template_meta.get('labels') or {}), 'batch.kubernetes.io/controller-uid': run.uid,
                  'controller-uid': run.uid, 'batch.kubernetes.io/job-name': run.name, 'job-name': run.name}
        annotations = dict(template_meta.get('annotations') or {})
        pod_spec = copy.deepcopy(template.get('spec') or {})
        if index is not None:
            labels['batch.kubernetes.io/job-completion-index'] = annotations[
                'batch.kubernetes.io/job-completion-index'] = str(index)
            pod_spec.setdefault('hostname', f'{run.name}-{index}')
        generate_name = f'{run.name}-{index}-' if index is not None else f'{run.name}-'
        with self._cond:
            refusal = next((m for prefix, m in self._refusals.items() if run.name.startswith(prefix)), None)
            injected = next((f for f in self._injected if run.name.startswith(f.prefix)), None)
        if refusal is not None:  # as the API server's admission (e.g. ResourceQuota) answers
            name = generate_name + ''.join(random.choices(NAME_ALPHABET, k=5))
            raise ApiError(403, {'kind': 'Status', 'apiVersion': 'v1', 'status': 'Failure', 'reason': 'Forbidden',
                                 'code': 403, 'message': f'pods "{name}" is forbidden: {refusal}',
                                 'details': {'name': name, 'kind': 'pods'}})
        if injected is not None:  # it fails without being scheduled or run: bind it anywhere
            pod_spec['nodeName'] = self.nodes[0].get('name', self.node_name) if self.nodes else self.node_name
        pod = self.cluster.create('v1/pods', {
            'metadata': {
                'generateName': generate_name, 'labels': labels, 'annotations': annotations,
                'ownerReferences': [{'apiVersion': 'batch/v1', 'kind': 'Job', 'name': run.name, 'uid': run.uid,
                                     'controller': True, 'blockOwnerDeletion': True}],
            },
            'spec': pod_spec,
        }, namespace=run.namespace)
        name = pod['metadata']['name']
        attempt = Attempt(namespace=run.namespace, job=run.name, job_uid=run.uid, index=index, pod=name,
                          log_prefix=self.log_dir / f'{run.namespace}.{name}', slot=slot, _pod_body=pod,
                          waiting='not started yet')
        run.attempts += 1
        with self._cond:
            self._attempts.append(attempt)
            if injected is not None and injected in self._injected:
                self._injected.remove(injected)
        if injected is not None:
            attempt.message_path.write_text(injected.message)
            attempt.injected, attempt.waiting, attempt.started_at = True, None, timestamp()
            attempt.node = pod_spec['nodeName']
            attempt._injected_code = injected.exit_code
            attempt._end_reason = injected.reason
            if injected.rejected is not None:
                attempt._rejected = True
                attempt._pod_reason, attempt._pod_message = injected.rejected
                self._kubelet_events.record(pod, 'Warning', injected.rejected[0], injected.rejected[1], host=attempt.node)
        return attempt

    def _advance(self, job: Body, attempt: Attempt) -> None:
        """Take a pod that has not started one step further, as the scheduler and the kubelet do: bind it to a
        node, pull its image, build its container's config (env), start its process. Each step may block it."""
        container = first_container(attempt._pod_body)
        if attempt.node is None and not self._schedule(attempt):
            return
        if not self._create_sandbox(attempt, container):
            return
        if not self._pull_image(attempt, container):
            return
        try:
            env = container_environment(self.cluster, job, attempt, container, passthrough=self.passthrough_env,
                                        extra=self.extra_env, rewrite=self.rewrite_env,
                                        termination_message_env=self.termination_message_env)
        except ConfigError as e:
            self._block(attempt, 'CreateContainerConfigError', str(e), [('Warning', 'Failed', f'Error: {e}')])
            return
        if gpus := int(attempt._requests.get('nvidia.com/gpu', 0)):  # the NVIDIA device plugin's Allocate answer
            env['NVIDIA_VISIBLE_DEVICES'] = ','.join(f'GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f"{attempt.node}/{i}")}'
                                                     for i in range(gpus))
        attempt.waiting = None
        attempt.started_at = timestamp()
        argv = [expand(str(arg), env) for arg in
                (container.get('command') or self.entrypoints.get(container.get('image', ''), []))
                + (container.get('args') or [])]
        attempt.message_path.write_bytes(b'')
        try:
            if not argv:
                raise FileNotFoundError(f'no command, and no entrypoint registered for image '
                                        f'{container.get("image")!r} (Kubelet(entrypoints=...))')
            with attempt.stdout_path.open('wb') as stdout, attempt.stderr_path.open('wb') as stderr:
                attempt._proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                                 stdout=stdout, stderr=stderr, start_new_session=True)
        except OSError as e:  # as a container runtime's StartError
            attempt.message_path.write_text(f'failed to start container: {e}')
            attempt._injected_code = 128
            return
        attempt.pid = attempt._proc.pid
        self._pod_status(attempt, {
            'phase': 'Running', 'startTime': attempt.started_at, 'hostIP': '127.0.0.1', 'podIP': '127.0.0.1',
            'podIPs': [{'ip': '127.0.0.1'}],
            'containerStatuses': [self._container_status(container, attempt, {
                'running': {'startedAt': attempt.started_at}}, ready=True)],
        })

    def _block(self, attempt: Attempt, reason: str, message: str, events: Sequence[tuple[str, str, str]],
               status: Body | None = None, force: bool = False, component: EventRecorder | None = None) -> None:
        """The pod cannot go on (yet): write why (once; ``status`` defaults to the container's ``waiting`` state)
        and post the component's events — again (count bumped) after each ``retry_interval``, as its retries do."""
        now = time.monotonic()
        attempt.waiting = message
        if not force and attempt._shown == (reason, message) and now - attempt._shown_at < self.retry_interval:
            return
        if attempt._shown != (reason, message):
            container = first_container(attempt._pod_body)
            self._pod_status(attempt, status if status is not None else {
                'phase': 'Pending', 'containerStatuses': [self._container_status(
                    container, attempt, {'waiting': {'reason': reason, 'message': message}})]})
        attempt._shown, attempt._shown_at = (reason, message), now
        recorder = component or self._kubelet_events
        field_path = None if component is not None else self._field_path(first_container(attempt._pod_body))
        for type_, event_reason, event_message in events:
            recorder.record(attempt._pod_body, type_, event_reason, event_message, field_path=field_path,
                            host=attempt.node)

    def _create_sandbox(self, attempt: Attempt, container: Body) -> bool:
        """The pod's sandbox and volumes: held in ``ContainerCreating`` while :meth:`hold_creating` says so."""
        with self._cond:
            stuck = next((why for prefix, why in self._stuck.items() if attempt.job.startswith(prefix)), None)
        if stuck is None:
            return True
        reason, message = stuck
        component, default = CREATING_PROBLEMS[reason]
        message = message or default.format(namespace=attempt.namespace, pod=attempt.pod)
        recorder = self._attach_events if component == 'attachdetach-controller' else self._kubelet_events
        self._block(attempt, 'ContainerCreating', message, [('Warning', reason, message)], component=recorder, status={
            'phase': 'Pending', 'containerStatuses': [self._container_status(
                container, attempt, {'waiting': {'reason': 'ContainerCreating'}})]})
        return False

    def _schedule(self, attempt: Attempt) -> bool:
        """The scheduler: bind the pod to the first node that fits, or leave it Pending (PodScheduled=False,
        Unschedulable, and a FailedScheduling Event)."""
        bound = [(other.node, other._requests)
                 for other in [a for run in self._runs.values() for a in run.active.values()] + self._terminating
                 if other.node is not None and other.exit_code is None]
        node, requests, message = schedule(attempt._pod_body.get('spec') or {}, list(self.nodes), bound)
        if node is not None:
            self._bind(attempt, node, requests)
            return True
        self._set_pod_condition(attempt, 'PodScheduled', 'False', 'Unschedulable', message)
        self._block(attempt, 'Unschedulable', message, [('Warning', 'FailedScheduling', message)],
                    status={'phase': 'Pending'}, component=self._scheduler_events)
        return False

    def _bind(self, attempt: Attempt, node: str, requests: dict[str, fractions.Fraction]) -> None:
        attempt.node, attempt._requests = node, requests
        attempt._pod_body.setdefault('spec', {})['nodeName'] = node
        with unless_gone():  # the binding: spec.nodeName (the status write that follows carries the condition)
            self.cluster.patch('v1/pods', attempt.namespace, attempt.pod, {'spec': {'nodeName': node}})
        self._set_pod_condition(attempt, 'PodScheduled', 'True')

    def _pull_image(self, attempt: Attempt, container: Body) -> bool:
        """The kubelet's image manager: an unparsable reference is InvalidImageName; a failed pull is
        ErrImagePull, then ImagePullBackOff until the next pull (``retry_interval`` later)."""
        image = str(container.get('image') or '')
        if attempt._image_ready or not image:
            return True
        if (invalid := invalid_image(image)) is not None:
            self._block(attempt, 'InvalidImageName', invalid, [('Warning', 'InspectFailed', invalid),
                                                               ('Warning', 'Failed', 'Error: InvalidImageName')])
            return False
        now = time.monotonic()
        quoted = go_quote(image)
        if attempt._pull_error is None or now - attempt._pulled_at >= self.retry_interval:  # pull (again)
            error = pull_error(self.bad_images, image)
            if error is None:
                attempt._image_ready, attempt._pull_error = True, None
                return True
            attempt._pull_error, attempt._pulled_at = error, now
            self._block(attempt, 'ErrImagePull', error, [
                ('Normal', 'Pulling', f'Pulling image {quoted}'),
                ('Warning', 'Failed', f'Failed to pull image {quoted}: {error}'),
                ('Warning', 'Failed', 'Error: ErrImagePull')], force=True)
        elif now - attempt._pulled_at >= self.retry_interval / 4:  # the next sync finds the pull backing off
            self._block(attempt, 'ImagePullBackOff', f'Back-off pulling image {quoted}: ErrImagePull: '
                                                     f'{attempt._pull_error}',
                        [('Normal', 'BackOff', f'Back-off pulling image {quoted}'),
                         ('Warning', 'Failed', 'Error: ImagePullBackOff')])
        return False

    def _set_pod_condition(self, attempt: Attempt, type_: str, status: str, reason: str | None = None,
                           message: str | None = None) -> None:
        """Set a pod condition (written with the pod's next status write); the transition time changes only when
        the status does."""
        previous = next((c for c in attempt._conditions if c['type'] == type_), None)
        condition: Body = {'type': type_, 'status': status, 'lastProbeTime': None,
                           'lastTransitionTime': timestamp() if previous is None or previous['status'] != status
                           else previous['lastTransitionTime']}
        if reason:
            condition['reason'] = reason
        if message:
            condition['message'] = message
        attempt._conditions = [c for c in attempt._conditions if c['type'] != type_] + [condition]

    def _pod_view(self, attempt: Attempt) -> Body:
        """The failed pod as the Job controller sees it (for podFailurePolicy)."""
        container = first_container(attempt._pod_body)
        state = {'terminated': {'exitCode': attempt.exit_code}} if attempt.exit_code is not None and not attempt._rejected else {}
        return {'metadata': {'namespace': attempt.namespace, 'name': attempt.pod},
                'status': {'conditions': attempt._conditions,
                           'containerStatuses': [{'name': container.get('name', 'main'), 'state': state}]}}

    def _finish(self, attempt: Attempt, code: int) -> None:
        """Record how an attempt ended and write the terminal Pod status (phase, exit code, message)."""
        attempt.exit_code, attempt.finished_at, attempt.waiting = code, timestamp(), None
        attempt.message = termination_message(attempt, code)
        container = first_container(attempt._pod_body)
        terminated: Body = {'exitCode': code, 'reason': attempt._end_reason or ('Completed' if code == 0 else 'Error'),
                            'startedAt': attempt.started_at or attempt.finished_at,
                            'finishedAt': attempt.finished_at}
        if attempt.pid is not None:
            terminated['containerID'] = f'fake://{attempt.pid}'
        if attempt.message:
            terminated['message'] = attempt.message
        status: Body = {'phase': 'Succeeded' if code == 0 else 'Failed',
                        'containerStatuses': [self._container_status(container, attempt, {'terminated': terminated})]}
        if attempt._rejected:  # the kubelet's admission: no container was ever created
            status = {'phase': 'Failed'}
        if attempt._pod_reason:  # a kubelet eviction or admission rejection: the pod says why it failed
            status.update(reason=attempt._pod_reason, message=attempt._pod_message or next(
                (c.get('message', '') for c in attempt._conditions if c['type'] == 'DisruptionTarget'), ''))
        if attempt.node_lost:  # no kubelet: PodGC marks it Failed, its containers stay as last reported
            status = {'phase': 'Failed'}
        self._pod_status(attempt, status)

    def _stop(self, attempt: Attempt, signum: int = signal.SIGTERM, grace: float | None = None) -> None:
        """Kill the process: SIGTERM, then SIGKILL once its grace period has passed (see :meth:`_enforce_grace`):
        ``grace``, else its pod's ``terminationGracePeriodSeconds``, cut to ``kill_grace``."""
        attempt.killed = True
        if grace is None:
            grace = (attempt._pod_body.get('spec') or {}).get('terminationGracePeriodSeconds', DEFAULT_GRACE_SECONDS)
        attempt.grace = 0.0 if signum == signal.SIGKILL else float(grace)
        attempt._signal(signum)
        if signum != signal.SIGKILL:
            attempt._kill_deadline = time.monotonic() + min(attempt.grace, self.kill_grace)

    @staticmethod
    def _enforce_grace(attempt: Attempt) -> None:
        if attempt._kill_deadline is not None and attempt.running and time.monotonic() > attempt._kill_deadline:
            attempt._signal(signal.SIGKILL)

    def _terminate(self, attempt: Attempt, delete_pod: bool = False) -> None:
        attempt.killed = True
        if attempt.running:
            self._stop(attempt)
            self._terminating.append(attempt)
        elif attempt.exit_code is None:
            self._finish(attempt, attempt._poll() or 137)
        if delete_pod:
            self.cluster.delete('v1/pods', attempt.namespace, attempt.pod)

    def _reap_terminating(self) -> None:
        for attempt in list(self._terminating):
            self._enforce_grace(attempt)
            code = attempt._poll()
            if code is None:
                continue
            self._terminating.remove(attempt)
            self._finish(attempt, code)

    def _pod_status(self, attempt: Attempt, status: Body) -> None:
        if attempt._conditions:
            status = {**status, 'conditions': copy.deepcopy(attempt._conditions)}
        with unless_gone():
            self.cluster.patch('v1/pods', attempt.namespace, attempt.pod, {'status': status},
                               subresource='status')

    @staticmethod
    def _container_status(container: Body, attempt: Attempt, state: Body, ready: bool = False) -> Body:
        return {'name': container.get('name', 'main'), 'image': container.get('image', ''), 'imageID': '',
                'ready': ready, 'started': ready, 'restartCount': 0, 'state': state}
