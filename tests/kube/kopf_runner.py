"""A Kopf operator run against the cluster, in a thread, as if it were deployed: its own registry, its
handlers' module executed afresh (a restarted operator), and the ``kubernetes`` client pointed at the cluster."""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import kopf
import kopf.testing
import kubernetes.client

if TYPE_CHECKING:
    from .cluster import FakeCluster

__all__ = ['HandlerSource', 'operator_settings', 'run_operator']

HandlerSource = str | os.PathLike[str] | Callable[..., object]
_module_counter = itertools.count()


def _load_handlers(source: HandlerSource) -> None:
    """Register handlers into the current default Kopf registry, executing module code afresh each time.

    A fresh execution is what a restarted operator process does: module-level state starts empty again.
    """
    if callable(source):
        source(kopf.get_default_registry()) if inspect.signature(source).parameters else source()
        return
    text = os.fspath(source)
    if text.endswith('.py') or os.sep in text:
        name = f'_fake_cluster_operator_{next(_module_counter)}'
        spec = importlib.util.spec_from_file_location(name, text)
    else:
        name = text
        spec = importlib.util.find_spec(text)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot load the operator handlers from {text!r}')
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses/pydantic look their module up while the module executes
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is not None:
            sys.modules[name] = previous  # keep the test's own imports of that module untouched


def operator_settings(settings: kopf.OperatorSettings | None = None) -> kopf.OperatorSettings:
    """Kopf settings for tests: no CRD scanning, no peering, quick retries."""
    settings = settings if settings is not None else kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.peering.standalone = True
    settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1.0]
    settings.watching.reconnect_backoff = 0.1
    return settings


@contextlib.contextmanager
def run_operator(cluster: FakeCluster, handlers: HandlerSource, *, namespace: str | None = 'default',
                 settings: kopf.OperatorSettings | None = None, verbose: bool = False,
                 startup_timeout: float = 30.0, stop_timeout: float = 30.0
                 ) -> Iterator[kopf.testing.KopfRunner]:
    """Run Kopf handlers against the cluster in a thread until the ``with`` block ends.

    ``handlers`` is a module name (``"myoperator.handlers"``), a ``.py`` path, or a callable that
    registers handlers (it gets the fresh ``kopf.OperatorRegistry`` if it takes an argument; plain
    ``@kopf.on...`` decorators inside it work too). Each call builds a fresh registry and executes the
    module afresh, so a second ``run_operator`` on the same cluster is a restarted operator.

    The operator never learns it is under test: the harness adds its own ``@kopf.on.login`` handler to the
    fresh registry, and while it runs, the ``kubernetes`` client's default configuration and ``KUBECONFIG``
    point at the fake cluster (as Kopf's ``login_via_client`` would leave them on a laptop).
    ``namespace=None`` runs cluster-wide. The runner's ``output`` (Kopf's log) is readable after the block.
    """
    registry = kopf.OperatorRegistry()
    own_settings: kopf.OperatorSettings | None = None
    previous_registry = kopf.get_default_registry()
    previous_config = kubernetes.client.Configuration._default  # no public getter that is not a copy
    previous_kubeconfig = os.environ.get('KUBECONFIG')
    started = threading.Event()
    try:
        kopf.set_default_registry(registry)
        _load_handlers(handlers)

        @kopf.on.login(registry=registry)
        def _fake_cluster_login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=cluster.url, insecure=True, default_namespace=namespace or 'default')

        @kopf.on.startup(registry=registry)
        def _fake_cluster_started(**_: Any) -> None:
            started.set()

        kubernetes.client.Configuration.set_default(cluster.configuration())
        os.environ['KUBECONFIG'] = str(cluster.kubeconfig)
        args = ['run', '--standalone', *(['--namespace', namespace] if namespace else ['--all-namespaces']),
                *(['--verbose'] if verbose else [])]
        own_settings = operator_settings(settings)
        runner = kopf.testing.KopfRunner(args, registry=registry, settings=own_settings, timeout=stop_timeout)
        with runner:
            deadline = time.monotonic() + startup_timeout
            while not started.wait(0.05):
                if runner.future.done():
                    break  # it exited during startup: the runner re-raises its error on exit
                if time.monotonic() > deadline:
                    raise TimeoutError(f'the operator did not start within {startup_timeout} s')
            yield runner
    finally:
        if own_settings is not None and settings is None:  # its executor thread would outlive the operator
            own_settings.execution.executor.shutdown(wait=False)
        kopf.set_default_registry(previous_registry)
        kubernetes.client.Configuration.set_default(previous_config)
        if previous_kubeconfig is None:
            os.environ.pop('KUBECONFIG', None)
        else:
            os.environ['KUBECONFIG'] = previous_kubeconfig
