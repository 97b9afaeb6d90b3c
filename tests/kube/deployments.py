"""Deployments on the fake cluster: the Deployment controller and a kubelet for its pods, in one thread.

The Job :class:`~tests.kube.kubelet.Kubelet` runs Jobs; this runs the long-lived servers a Deployment
asks for, so a test can call a served model through its Service as a client in the cluster would:

    with DeploymentController(cluster, cwd=REPO, log_dir=tmp_path / "server-logs") as servers:
        ...                                  # the operator creates a Deployment and a Service
        url = servers.url("http://judge.ml.svc:8000/v1")   # -> http://127.0.0.1:<port>/v1, once ready

What it does, as the real components do: one Pod object per replica of the current template (named
``<deployment>-<template hash>-<random>``, labelled with ``pod-template-hash``, owned by the Deployment),
its first container's ``command`` + ``args`` run as a local process whose environment is resolved like
the Job kubelet's (Secrets, ConfigMaps, ``$(VAR)``; a missing Secret key leaves the pod waiting with
``CreateContainerConfigError``), the ``readinessProbe``'s ``httpGet`` polled (no probe: ready once
started), a container that exits restarted in the same pod (``restartCount``, ``lastState``) after the
kubelet's back-off, shown as ``CrashLoopBackOff`` (``retry_interval`` doubled after each exit up to
``max_backoff``: the kubelet's 10 s doubling to 5 min; reset once a run lasted twice the cap),
a changed template rolled out (``RollingUpdate``: the old pods serve until the new ones are ready;
``Recreate``: the old ones stop first), the Deployment's ``status`` (``observedGeneration``, replica
counts, ``Available``/``Progressing`` conditions, ``ProgressDeadlineExceeded`` after
``progressDeadlineSeconds``) and the Pods' statuses written, and the processes of a deleted Deployment
(or a deleted Pod, which is then replaced) killed.

Ports: each ``containerPort`` is given a free port on 127.0.0.1, and the process is told it through its
argv (``--port=8000`` or ``--port 8000`` becomes the mapped port): many servers share one machine.
:meth:`DeploymentController.url` resolves a Service's in-cluster URL to a ready pod's mapped port.

Scheduling as the default scheduler does it (tests/kube/scheduler.py) against ``nodes`` (by default one
node of unlimited room, ``node_name``): a pod that fits no node stays ``Pending`` with ``PodScheduled=False``,
``Unschedulable`` and the scheduler's FitError message (and a ``FailedScheduling`` Event), and is tried
again each cycle — so a surge rollout on a node with one GPU leaves the new pod Pending while the old one
serves, and ``Recreate`` frees the GPU first. ``stand_in``: an argv run instead of every pod's container
command (a small server that answers the probe), for tests of what is around the server, not of it.

Simplified: no ReplicaSet objects (pods are owned by the Deployment itself), no image pulls, only the first
container runs, and startup and liveness probes are not run.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .client import ApiError, EventRecorder, unless_gone
from .cluster import FakeCluster
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
from .objects import NAME_ALPHABET, Body, timestamp
from .scheduler import schedule

__all__ = ['DeploymentController', 'ServerPod']

logger = logging.getLogger(__name__)

DEFAULT_PROGRESS_DEADLINE = 600  # seconds, the API server's default for spec.progressDeadlineSeconds


@dataclasses.dataclass(eq=False)
class ServerPod:
    """One replica: its Pod object, its process (an :class:`Attempt`, for the logs) and its ports."""

    deployment_uid: str
    template_hash: str
    attempt: Attempt
    ports: dict[int, int]  # containerPort -> the port on 127.0.0.1 the process listens on
    port_names: dict[str, int]  # a named port -> its containerPort
    ready: bool = False
    node: str | None = None  # where the scheduler bound it; None: Pending, Unschedulable
    requests: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # what binding it reserved
    restarts: int = 0
    waiting: tuple[str, str] | None = None  # (reason, message) while the container cannot run
    last_exit: Body | None = None  # the previous run's `terminated` state, once it has restarted
    next_start: float = 0.0
    next_probe: float = 0.0
    started: float = 0.0  # time.monotonic() of the current run's start, for the back-off's reset
    backoff: float = 0.0  # the wait before the last restart; 0 until it first exits
    shown: Body | None = None  # the status last written

    @property
    def name(self) -> str:
        return self.attempt.pod

    @property
    def running(self) -> bool:
        return self.attempt.running


def _template_hash(template: Mapping[str, Any]) -> str:
    """What the Deployment controller's `pod-template-hash` is for: equal templates, equal pods."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def _map_ports(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """`--port=8000` / `--port 8000` -> the mapped port, so servers of many pods share 127.0.0.1."""
    mapped = list(argv)
    for i, arg in enumerate(mapped):
        if arg.startswith('--port=') and arg[7:].isdigit() and int(arg[7:]) in ports:
            mapped[i] = f'--port={ports[int(arg[7:])]}'
        elif arg == '--port' and i + 1 < len(mapped) and mapped[i + 1].isdigit() and int(mapped[i + 1]) in ports:
            mapped[i + 1] = str(ports[int(mapped[i + 1])])
    return mapped


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class DeploymentController(ControlLoop):
    """See the module's docstring. ``cwd``, ``extra_env``/``rewrite_env``/``passthrough_env`` and
    ``termination_message_env`` as for the Job kubelet (``rewrite_env`` gets the Deployment, ``None`` and the
    environment). A :class:`ControlLoop`: ``with``, or
    ``start()``/``stop()``; stopping kills every server (SIGTERM, then SIGKILL after ``kill_grace``), the logs stay.
    """

    name = 'the Deployment controller'
    thread_name = 'fake-deployments'
    join_timeout = 60.0

    def __init__(self, cluster: FakeCluster, *, cwd: str | Path, log_dir: str | Path | None = None,
                 extra_env: Mapping[str, str] | None = None, rewrite_env: RewriteEnv | None = None,
                 passthrough_env: Iterable[str] = DEFAULT_PASSTHROUGH_ENV, poll_interval: float = 0.2,
                 probe_interval: float = 1.0, retry_interval: float = 2.0, max_backoff: float | None = None,
                 kill_grace: float = 10.0, node_name: str = 'fake-node', termination_message_env: str | None = None,
                 nodes: Iterable[Mapping[str, Any]] | None = None, stand_in: list[str] | None = None) -> None:
        super().__init__(poll_interval=poll_interval)
        self.cluster = cluster
        self.cwd = Path(cwd)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix='fake-deployments-'))
        self.extra_env = dict(extra_env or {})
        self.rewrite_env = rewrite_env
        self.passthrough_env = tuple(passthrough_env)
        self.termination_message_env = termination_message_env
        self.probe_interval = probe_interval
        self.retry_interval, self.kill_grace, self.node_name = retry_interval, kill_grace, node_name
        # {"name", "labels", "allocatable", "taints"} as for the Job kubelet; no allocatable: unlimited
        self.nodes: list[dict[str, Any]] = [dict(n) for n in nodes] if nodes is not None else [{'name': node_name}]
        self.stand_in = list(stand_in) if stand_in is not None else None
        self._scheduler_events = EventRecorder(cluster, 'default-scheduler')
        self.max_backoff = 30 * retry_interval if max_backoff is None else max_backoff  # the kubelet's 10 s -> 300 s
        self._pods: dict[str, list[ServerPod]] = {}  # Deployment uid -> its pods, oldest first
        self._history: list[ServerPod] = []  # every pod ever started, for their logs
        self._progress: dict[str, tuple[str, float]] = {}  # Deployment uid -> (template hash, rollout started)
        self._shown: dict[str, Body] = {}  # Deployment uid -> the status last written
        self._lock = threading.Lock()

    # ---- public controls ----------------------------------------------------------------------------------

    @property
    def pods(self) -> list[ServerPod]:
        with self._lock:
            return [pod for pods in self._pods.values() for pod in pods]

    def url(self, url: str) -> str | None:
        """A Service's in-cluster URL (``http://<service>.<namespace>.svc[.cluster.local]:<port>/...``) as this
        machine reaches it: a ready pod's mapped port on 127.0.0.1. None while no pod behind it is ready."""
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ''
        service_name, _, rest = host.partition('.')
        namespace = rest.split('.')[0] if rest else 'default'
        service = self.cluster.get('v1/services', namespace, service_name)
        if service is None:
            raise LookupError(f'no Service {namespace}/{service_name}')
        port = parts.port or 80
        spec = service.get('spec') or {}
        service_port = next((p for p in spec.get('ports') or [] if p.get('port') == port), None)
        if service_port is None:
            raise LookupError(f'Service {namespace}/{service_name} has no port {port}')
        target = service_port.get('targetPort', port)
        for pod in self.pods:
            labels = (pod.attempt._pod_body.get('metadata') or {}).get('labels') or {}
            if pod.ready and pod.attempt.namespace == namespace and _matches(spec.get('selector') or {}, labels):
                container_port = pod.port_names.get(target) if isinstance(target, str) else int(target)
                if container_port in pod.ports:
                    netloc = f'127.0.0.1:{pod.ports[container_port]}'
                    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return None

    def logs(self, deployment: str) -> str:
        """The output of every pod a Deployment had (both streams, also after :meth:`stop`), e.g. for a failing
        test's message."""
        with self._lock:
            pods = [pod for pod in self._history if pod.name.startswith(f'{deployment}-')]
        return '\n'.join(f'--- {pod.name}\n{pod.attempt.stdout}{pod.attempt.stderr}' for pod in pods)

    # ---- the loop -----------------------------------------------------------------------------------------

    def _starting(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _stopped(self) -> None:
        with self._lock:
            pods = [pod for pods in self._pods.values() for pod in pods]
            self._pods.clear()
        self._kill(pods)

    def _cycle(self) -> None:
        seen: set[str] = set()
        for deployment in self.cluster.list('apps/v1/deployments'):
            uid = deployment['metadata']['uid']
            seen.add(uid)
            self._reconcile(deployment)
        for uid in [uid for uid in self._pods if uid not in seen]:  # deleted: the pods go with it (GC)
            with self._lock:
                gone = self._pods.pop(uid)
            self._progress.pop(uid, None)
            self._shown.pop(uid, None)
            self._kill(gone)

    def _reconcile(self, deployment: Body) -> None:
        meta, spec = deployment['metadata'], deployment.get('spec') or {}
        uid, template = meta['uid'], spec.get('template') or {}
        wanted, current_hash = int(spec.get('replicas', 1)), _template_hash(template)
        with self._lock:
            pods = self._pods.setdefault(uid, [])
        self._forget_deleted_pods(uid, pods)
        current = [p for p in pods if p.template_hash == current_hash]
        old = [p for p in pods if p.template_hash != current_hash]
        recreate = ((spec.get('strategy') or {}).get('type') or 'RollingUpdate') == 'Recreate'
        if recreate and old:  # all old pods stop before a new one starts
            self._retire(uid, old)
            old = []
        elif not recreate and old and sum(p.ready for p in current) >= wanted:
            self._retire(uid, old)  # the new pods are ready: the old ones go
            old = []
        while len(current) < wanted and not (recreate and old):
            pod = self._create_pod(deployment, current_hash)
            if pod is None:
                break
            current.append(pod)
            with self._lock:
                pods.append(pod)
                self._history.append(pod)
        for extra in current[wanted:]:
            self._retire(uid, [extra])
        current = current[:wanted]
        for pod in current + old:
            self._run(deployment, pod)
        self._write_status(deployment, current, old, current_hash)

    def _forget_deleted_pods(self, uid: str, pods: list[ServerPod]) -> None:
        """A Pod deleted by someone: its process stops, and the loop creates a replacement."""
        present = {pod['metadata']['name'] for pod in self.cluster.list('v1/pods', pods[0].attempt.namespace)} if pods else set()
        for pod in [p for p in pods if p.name not in present]:
            with self._lock:
                pods.remove(pod)
            self._kill([pod])

    def _retire(self, uid: str, retired: list[ServerPod]) -> None:
        with self._lock:
            for pod in retired:
                if pod in self._pods.get(uid, []):
                    self._pods[uid].remove(pod)
        self._kill(retired)
        for pod in retired:
            with unless_gone():
                self.cluster.delete('v1/pods', pod.attempt.namespace, pod.name)

    def _create_pod(self, deployment: Body, template_hash: str) -> ServerPod | None:
        meta, template = deployment['metadata'], copy.deepcopy((deployment.get('spec') or {}).get('template') or {})
        template_meta = template.get('metadata') or {}
        labels = {**(template_meta.get('labels') or {}), 'pod-template-hash': template_hash}
        pod_spec = dict(template.get('spec') or {})
        name = f'{meta["name"]}-{template_hash}-{"".join(random.choices(NAME_ALPHABET, k=5))}'
        try:
            body = self.cluster.create('v1/pods', {
                'metadata': {'name': name, 'labels': labels, 'annotations': dict(template_meta.get('annotations') or {}),
                             'ownerReferences': [{'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': meta['name'],
                                                  'uid': meta['uid'], 'controller': True, 'blockOwnerDeletion': True}]},
                'spec': pod_spec,
            }, namespace=meta['namespace'])
        except ApiError as e:  # refused (quota, ...): the Deployment shows it in ReplicaFailure
            logger.warning('pod of Deployment %s refused: %s', meta['name'], e)
            return None
        container = first_container(body)
        declared = container.get('ports') or []
        ports = {int(p['containerPort']): _free_port() for p in declared}
        attempt = Attempt(namespace=meta['namespace'], job=meta['name'], job_uid=meta['uid'], index=None, pod=name,
                          log_prefix=self.log_dir / f'{meta["namespace"]}.{name}', _pod_body=body)
        return ServerPod(meta['uid'], template_hash, attempt, ports,
                         {p['name']: int(p['containerPort']) for p in declared if p.get('name')})

    # ---- one pod ------------------------------------------------------------------------------------------

    def _schedule(self, pod: ServerPod) -> bool:
        """The scheduler: bind the pod to the first node with room, or leave it Pending (Unschedulable, and a
        FailedScheduling Event the first time)."""
        bound = [(other.node, other.requests) for other in self.pods if other.node is not None]
        node, requests, message = schedule(pod.attempt._pod_body.get('spec') or {}, list(self.nodes), bound)
        if node is None:
            if pod.waiting != ('Unschedulable', message):
                pod.waiting = ('Unschedulable', message)
                self._scheduler_events.record(pod.attempt._pod_body, 'Warning', 'FailedScheduling', message)
            return False
        pod.node, pod.requests, pod.waiting = node, requests, None
        pod.attempt.node = node
        with unless_gone():
            self.cluster.patch('v1/pods', pod.attempt.namespace, pod.name, {'spec': {'nodeName': node}})
        return True

    def _run(self, deployment: Body, pod: ServerPod) -> None:
        """Schedule, start, probe, or restart the pod's container; write its status when it changed."""
        now = time.monotonic()
        attempt = pod.attempt
        if pod.node is None and not self._schedule(pod):
            self._write_pod_status(pod)
            return
        if attempt._proc is not None and (code := attempt._poll()) is not None:  # it exited: restart later
            pod.ready, pod.restarts, attempt._proc = False, pod.restarts + 1, None
            ended: Body = {'exitCode': code, 'reason': 'Error' if code else 'Completed', 'startedAt': attempt.started_at,
                           'finishedAt': timestamp()}
            if message := termination_message(attempt, code):
                ended['message'] = message
            pod.last_exit = {'terminated': ended}
            pod.waiting = ('CrashLoopBackOff', f'back-off restarting failed container {first_container(attempt._pod_body).get("name", "main")} '
                                               f'in pod {pod.name}')
            pod.backoff = self.crash_backoff(pod.backoff, ran_for=now - pod.started)
            pod.next_start = now + pod.backoff
        if attempt._proc is None and now >= pod.next_start:
            self._start(deployment, pod)
        elif attempt.running and now >= pod.next_probe:
            pod.next_probe = now + self.probe_interval
            pod.ready = self._probe(pod)
        self._write_pod_status(pod)

    def crash_backoff(self, previous: float, ran_for: float) -> float:
        """How long a container that exited waits before its next start: ``retry_interval`` the first time,
        then double the previous wait, at most ``max_backoff``; ``retry_interval`` again after a run that
        lasted twice the cap (the kubelet forgets a crash loop that has settled)."""
        if not previous or ran_for >= 2 * self.max_backoff:
            return self.retry_interval
        return min(2 * previous, self.max_backoff)

    def _start(self, deployment: Body, pod: ServerPod) -> None:
        attempt = pod.attempt
        container = first_container(attempt._pod_body)
        try:
            env = container_environment(self.cluster, deployment, attempt, container, passthrough=self.passthrough_env,
                                        extra=self.extra_env, rewrite=self.rewrite_env,
                                        termination_message_env=self.termination_message_env)
        except ConfigError as e:
            pod.waiting, pod.next_start = ('CreateContainerConfigError', str(e)), time.monotonic() + self.retry_interval
            return
        command = self.stand_in if self.stand_in is not None else (container.get('command') or []) + (container.get('args') or [])
        argv = _map_ports([expand(str(a), env) for a in command], pod.ports)
        attempt.started_at, pod.started = timestamp(), time.monotonic()
        attempt.message_path.write_bytes(b'')  # this run's own termination message
        # appended: a restarted container's earlier output stays readable, as `kubectl logs --previous` keeps it
        with attempt.stdout_path.open('ab') as stdout, attempt.stderr_path.open('ab') as stderr:
            attempt._proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                             stderr=stderr, start_new_session=True)
        attempt.pid, attempt.exit_code, pod.waiting = attempt._proc.pid, None, None

    def _probe(self, pod: ServerPod) -> bool:
        probe = (first_container(pod.attempt._pod_body).get('readinessProbe') or {}).get('httpGet')
        if probe is None:
            return True
        port = probe.get('port')
        container_port = pod.port_names.get(port) if isinstance(port, str) else int(port)
        if container_port not in pod.ports:
            return False
        try:
            url = f'http://127.0.0.1:{pod.ports[container_port]}{probe.get("path", "/")}'
            with urllib.request.urlopen(url, timeout=1) as answer:
                return 200 <= answer.status < 400
        except (OSError, urllib.error.URLError):
            return False

    def _write_pod_status(self, pod: ServerPod) -> None:
        attempt = pod.attempt
        container = first_container(attempt._pod_body)
        if pod.node is None:  # not scheduled: no container status yet, as the API server shows it
            status: Body = {'phase': 'Pending', 'conditions': [
                {'type': 'PodScheduled', 'status': 'False', 'reason': 'Unschedulable', 'message': (pod.waiting or ('', ''))[1]}]}
            if status != pod.shown:
                with unless_gone():
                    self.cluster.patch('v1/pods', attempt.namespace, pod.name, {'status': status}, subresource='status')
                pod.shown = status
            return
        if pod.waiting is not None:
            state: Body = {'waiting': {'reason': pod.waiting[0], 'message': pod.waiting[1]}}
        elif attempt.running:
            state = {'running': {'startedAt': attempt.started_at}}
        else:
            state = {'waiting': {'reason': 'ContainerCreating'}}
        status = {
            'phase': 'Running' if attempt.running else 'Pending', 'hostIP': '127.0.0.1', 'podIP': '127.0.0.1',
            'conditions': [{'type': 'Ready', 'status': 'True' if pod.ready else 'False'},
                           {'type': 'ContainersReady', 'status': 'True' if pod.ready else 'False'},
                           {'type': 'PodScheduled', 'status': 'True'}],
            'containerStatuses': [{'name': container.get('name', 'main'), 'image': container.get('image', ''),
                                   'imageID': '', 'ready': pod.ready, 'started': attempt.running,
                                   'restartCount': pod.restarts, 'state': state,
                                   **({'lastState': pod.last_exit} if pod.last_exit else {})}],
        }
        if status == pod.shown:
            return
        with unless_gone():
            self.cluster.patch('v1/pods', attempt.namespace, pod.name, {'status': status}, subresource='status')
        pod.shown = status

    # ---- the Deployment's status ------------------------------------------------------------------------------

    def _write_status(self, deployment: Body, current: list[ServerPod], old: list[ServerPod], template_hash: str) -> None:
        meta, spec = deployment['metadata'], deployment.get('spec') or {}
        wanted = int(spec.get('replicas', 1))
        ready = sum(p.ready for p in current + old)
        updated_ready = sum(p.ready for p in current)
        started = self._progress.get(meta['uid'])
        if started is None or started[0] != template_hash:
            started = self._progress[meta['uid']] = (template_hash, time.monotonic())
        deadline = float(spec.get('progressDeadlineSeconds', DEFAULT_PROGRESS_DEADLINE))
        complete = updated_ready >= wanted and not old
        if complete:
            progressing = ('True', 'NewReplicaSetAvailable', f'ReplicaSet "{meta["name"]}-{template_hash}" has successfully progressed.')
        elif time.monotonic() - started[1] > deadline:
            progressing = ('False', 'ProgressDeadlineExceeded', f'ReplicaSet "{meta["name"]}-{template_hash}" has timed out progressing.')
        else:
            progressing = ('True', 'ReplicaSetUpdated', f'ReplicaSet "{meta["name"]}-{template_hash}" is progressing.')
        available = ready >= wanted
        conditions = [
            {'type': 'Available', 'status': 'True' if available else 'False',
             'reason': 'MinimumReplicasAvailable' if available else 'MinimumReplicasUnavailable',
             'message': 'Deployment has minimum availability.' if available else 'Deployment does not have minimum availability.'},
            {'type': 'Progressing', 'status': progressing[0], 'reason': progressing[1], 'message': progressing[2]},
        ]
        counts = {'replicas': len(current) + len(old), 'updatedReplicas': len(current), 'readyReplicas': ready,
                  'availableReplicas': ready, 'unavailableReplicas': max(0, wanted - ready)}
        # zero counts are left out, as the API's omitempty does; None removes them in a merge patch
        status = {'observedGeneration': meta.get('generation', 1), 'conditions': conditions,
                  **{key: value or None for key, value in counts.items()}}
        if self._shown.get(meta['uid']) == status:
            return
        now = timestamp()
        for condition in conditions:
            condition.update(lastUpdateTime=now, lastTransitionTime=now)
        with unless_gone():
            self.cluster.patch('apps/v1/deployments', meta['namespace'], meta['name'], {'status': status},
                               subresource='status')
        self._shown[meta['uid']] = {**status, 'conditions': [
            {k: v for k, v in c.items() if k not in ('lastUpdateTime', 'lastTransitionTime')} for c in conditions]}

    # ---- processes ------------------------------------------------------------------------------------------

    def _kill(self, pods: Iterable[ServerPod]) -> None:
        """SIGTERM the processes, SIGKILL what is left after ``kill_grace``."""
        victims = [pod.attempt for pod in pods if pod.attempt.running]
        for attempt in victims:
            attempt._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        for attempt in victims:
            assert attempt._proc is not None
            try:
                attempt._proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                attempt._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    attempt._proc.wait(10)
            attempt.killed, attempt.exit_code = True, attempt._poll()
