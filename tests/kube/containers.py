"""A pod's container run as a local process, as the kubelet and its container runtime run it: the environment
it gets (Secrets, ConfigMaps, the downward API, ``$(VAR)`` expansion), the process in its own process group, its
logs and its termination message. The Job kubelet and the Deployment controller both run containers this way."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import fractions
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .objects import Body

if TYPE_CHECKING:
    from .client import Client

__all__ = ['DEFAULT_PASSTHROUGH_ENV', 'MAX_TERMINATION_MESSAGE', 'Attempt', 'ConfigError', 'RewriteEnv',
           'container_environment', 'expand', 'first_container']

RewriteEnv = Callable[[Body, 'int | None', dict[str, str]], Mapping[str, str]]
DEFAULT_PASSTHROUGH_ENV = ('PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'TZ')
MAX_TERMINATION_MESSAGE = 4096  # bytes, as the kubelet reads from terminationMessagePath
_VAR_REF = re.compile(r'\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)')


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in env values, command and args (``$$`` escapes, unknowns stay)."""
    return _VAR_REF.sub(lambda m: '$' if m[0] == '$$' else env.get(m[1], m[0]), text)


class ConfigError(Exception):
    """The container cannot start yet (a missing Secret key, ...): the pod waits, as in Kubernetes."""


def first_container(pod_or_job: Mapping[str, Any]) -> Body:
    """The first container of a Pod, or of a Job's pod template (the only one that runs)."""
    spec = pod_or_job.get('spec') or {}
    if 'template' in spec:
        spec = (spec.get('template') or {}).get('spec') or {}
    return (spec.get('containers') or [{}])[0]


@dataclasses.dataclass(eq=False)
class Attempt:
    """One run of a pod's container: the Pod object and (unless injected or blocked) a local process. The Job
    kubelet makes one per attempt of a Job's index; the Deployment controller one per pod."""

    namespace: str
    job: str
    job_uid: str
    index: int | None  # the completion index of an Indexed Job, else None
    pod: str
    log_prefix: Path
    pid: int | None = None
    exit_code: int | None = None
    message: str = ''  # the termination message, as written into the Pod's status
    injected: bool = False  # failed by Kubelet.fail_next(), without running anything
    killed: bool = False  # terminated by the kubelet (Job deleted, suspended or failed; pod evicted)
    waiting: str | None = None  # why the container cannot start yet (unschedulable, image, config)
    started_at: str | None = None
    finished_at: str | None = None
    node: str | None = None  # where the scheduler bound the pod
    disruption: str | None = None  # the DisruptionTarget reason, once evicted
    grace: float | None = None  # the grace period it was given when stopped (SIGTERM to SIGKILL), before kill_grace cuts it
    node_lost: bool = False  # its node went away (Kubelet.lose_node): killed at once, no kubelet reported its end
    slot: int = dataclasses.field(default=0, repr=False)
    _pod_body: Body = dataclasses.field(default_factory=dict, repr=False)
    _proc: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False)
    _injected_code: int | None = dataclasses.field(default=None, repr=False)
    _kill_deadline: float | None = dataclasses.field(default=None, repr=False)
    _conditions: list[Body] = dataclasses.field(default_factory=list, repr=False)  # the pod's status.conditions
    _requests: dict[str, fractions.Fraction] = dataclasses.field(default_factory=dict, repr=False)
    _shown: tuple[str, str] | None = dataclasses.field(default=None, repr=False)  # the waiting state written
    _shown_at: float = dataclasses.field(default=0.0, repr=False)
    _image_ready: bool = dataclasses.field(default=False, repr=False)
    _pull_error: str | None = dataclasses.field(default=None, repr=False)
    _pulled_at: float = dataclasses.field(default=0.0, repr=False)
    _end_reason: str | None = dataclasses.field(default=None, repr=False)  # containerStatuses[].state.terminated
    _pod_reason: str | None = dataclasses.field(default=None, repr=False)  # status.reason, e.g. Evicted
    _pod_message: str | None = dataclasses.field(default=None, repr=False)  # status.message (else the condition's)
    _rejected: bool = dataclasses.field(default=False, repr=False)  # refused by the kubelet's admission: no container
    _delete_when_done: bool = dataclasses.field(default=False, repr=False)

    @property
    def stdout_path(self) -> Path:
        return self.log_prefix.with_name(self.log_prefix.name + '.stdout.log')

    @property
    def stderr_path(self) -> Path:
        return self.log_prefix.with_name(self.log_prefix.name + '.stderr.log')

    @property
    def message_path(self) -> Path:
        return self.log_prefix.with_name(self.log_prefix.name + '.termination-log')

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors='replace') if self.stdout_path.exists() else ''

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors='replace') if self.stderr_path.exists() else ''

    @property
    def running(self) -> bool:
        return self._proc is not None and self.exit_code is None

    def _poll(self) -> int | None:
        if self._injected_code is not None:
            return self._injected_code
        if self._proc is None:
            return None
        code = self._proc.poll()
        return None if code is None else (128 - code if code < 0 else code)  # killed by signal N: 128+N

    def _signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)  # the whole process group: shells and their children too


def container_environment(cluster: Client, owner: Body, attempt: Attempt, container: Body, *,
                          passthrough: Iterable[str] = DEFAULT_PASSTHROUGH_ENV, extra: Mapping[str, str] | None = None,
                          rewrite: RewriteEnv | None = None, termination_message_env: str | None = None) -> dict[str, str]:
    """The container's environment, resolved like the kubelet does, plus the test's additions: only the
    ``passthrough`` variables of this process, then the container's ``envFrom`` and ``env``, ``PATH`` with this
    interpreter's ``bin`` first, the completion index, ``termination_message_env`` (if given: the variable that
    tells the process where its termination message goes — the attempt's own file, read back as the kubelet
    reads ``terminationMessagePath``), then ``extra``; ``rewrite(owner, index, env)`` returns the final one.
    Raises :class:`ConfigError` while a Secret or ConfigMap it needs is missing."""
    env = {key: os.environ[key] for key in passthrough if key in os.environ}
    for source in container.get('envFrom') or []:
        prefix = source.get('prefix', '')
        if 'secretRef' in source:
            data = _data(cluster, 'v1/secrets', attempt.namespace, source['secretRef'])
        else:
            data = _data(cluster, 'v1/configmaps', attempt.namespace, source.get('configMapRef') or {})
        env.update({prefix + key: value for key, value in data.items()})
    for var in container.get('env') or []:
        if 'valueFrom' in var:
            value = _value_from(cluster, attempt, container, var['valueFrom'])
            if value is not None:
                env[var['name']] = value
        else:
            env[var['name']] = expand(str(var.get('value', '')), env)
    # The venv's bin first: `python` and console scripts resolve to this interpreter's environment.
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get('PATH', os.defpath)])
    if attempt.index is not None:
        env['JOB_COMPLETION_INDEX'] = str(attempt.index)
    if termination_message_env:
        env[termination_message_env] = str(attempt.message_path)
    env.update(extra or {})
    if rewrite is not None:
        env = dict(rewrite(owner, attempt.index, env))
    return env


def _data(cluster: Client, resource: str, namespace: str, ref: Mapping[str, Any], key: str | None = None
          ) -> dict[str, str]:
    kind = 'secret' if resource == 'v1/secrets' else 'configmap'
    obj = cluster.get(resource, namespace, ref.get('name', ''))
    if obj is None:
        if ref.get('optional'):
            return {}
        raise ConfigError(f'{kind} "{ref.get("name")}" not found')
    if resource == 'v1/secrets':
        data = {k: base64.b64decode(v).decode(errors='replace') for k, v in (obj.get('data') or {}).items()}
        data.update(obj.get('stringData') or {})
    else:
        data = dict(obj.get('data') or {})
        data.update({k: base64.b64decode(v).decode(errors='replace')
                     for k, v in (obj.get('binaryData') or {}).items()})
    if key is not None and key not in data and not ref.get('optional'):
        kind_name = 'Secret' if resource == 'v1/secrets' else 'ConfigMap'
        raise ConfigError(f"couldn't find key {key} in {kind_name} {namespace}/{ref.get('name')}")
    return data


def _value_from(cluster: Client, attempt: Attempt, container: Body, source: Mapping[str, Any]) -> str | None:
    if ref := source.get('secretKeyRef'):
        return _data(cluster, 'v1/secrets', attempt.namespace, ref, ref.get('key')).get(ref.get('key'))
    if ref := source.get('configMapKeyRef'):
        return _data(cluster, 'v1/configmaps', attempt.namespace, ref, ref.get('key')).get(ref.get('key'))
    if ref := source.get('fieldRef'):
        return _field_ref(attempt._pod_body, ref.get('fieldPath', ''))
    if ref := source.get('resourceFieldRef'):
        kind, _, name = ref.get('resource', '').partition('.')
        return str((container.get('resources') or {}).get(kind, {}).get(name, '0'))
    raise ConfigError(f'unsupported valueFrom: {source!r}')


def _field_ref(pod: Body, path: str) -> str:
    meta = pod.get('metadata') or {}
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
        return str((meta.get(m[1]) or {}).get(m[2], ''))
    simple = {
        'metadata.name': meta.get('name'), 'metadata.namespace': meta.get('namespace'),
        'metadata.uid': meta.get('uid'), 'spec.nodeName': (pod.get('spec') or {}).get('nodeName', ''),
        'spec.serviceAccountName': (pod.get('spec') or {}).get('serviceAccountName', 'default'),
        'status.podIP': '127.0.0.1', 'status.podIPs': '127.0.0.1',
        'status.hostIP': '127.0.0.1', 'status.hostIPs': '127.0.0.1',
    }
    if path not in simple:
        raise ConfigError(f'unsupported fieldRef.fieldPath: {path!r}')
    return str(simple[path])


def termination_message(attempt: Attempt, code: int) -> str:
    """What the kubelet puts in ``terminated.message``: the file at the container's termination message path
    (at most 4 KiB), else (``FallbackToLogsOnError``, a failure) the end of its log."""
    with contextlib.suppress(OSError), attempt.message_path.open('rb') as f:
        if text := f.read(MAX_TERMINATION_MESSAGE).decode(errors='replace'):
            return text
    if code and first_container(attempt._pod_body).get('terminationMessagePolicy') == 'FallbackToLogsOnError':
        log = attempt.stderr or attempt.stdout
        return '\n'.join(log.splitlines()[-80:])[-2048:]
    return ''
