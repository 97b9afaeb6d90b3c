"""The cluster: the API server (apiserver.py) served on 127.0.0.1 from its own thread and event loop, the
client helpers a test calls it with (client.py), and the controllers that stop with it (a kubelet, Kueue)."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import kmock

from .apiserver import DEFAULT_RESOURCES, KUBERNETES_VERSION, ClusterEmulator, ResourceSpec, api_version
from .client import Client
from .kubelet import Kubelet
from .kueue import Kueue
from .objects import Body

__all__ = ['FakeCluster']

logger = logging.getLogger(__name__)

T = TypeVar('T')


class FakeCluster(Client):
    """A Kubernetes API server on 127.0.0.1 (random port), served from its own thread and event loop.

    Use it as a context manager (or ``start()``/``stop()``). The :class:`Client` helpers (``get``, ``create``,
    ``wait_for_job``, ...) talk to it over HTTP.
    """

    def __init__(self, *, resources: Iterable[ResourceSpec] = DEFAULT_RESOURCES,
                 namespaces: Iterable[str] = ('default',), validate: str | None = KUBERNETES_VERSION,
                 startup_timeout: float = 10.0, request_history: int | None = None) -> None:
        super().__init__()
        self._request_history = request_history
        self._resource_specs = tuple(resources)
        self._namespaces = tuple(namespaces)
        self._validate = validate
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._tmpdir: Path | None = None
        self._emulator: ClusterEmulator | None = None
        self._url: str | None = None
        self.kubelet: Kubelet | None = None
        self.kueue: Kueue | None = None

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FakeCluster:
        if self._thread is not None:
            raise RuntimeError('the cluster is already started')
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve_forever, args=(ready,), name='fake-kube-apiserver',
                                        daemon=True)
        self._thread.start()
        try:
            if not ready.wait(self._startup_timeout) or self._startup_error is not None:
                raise RuntimeError('the fake API server did not start') from self._startup_error
            self._tmpdir = Path(tempfile.mkdtemp(prefix='fake-cluster-'))
            self.kubeconfig.write_text(json.dumps({
                'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'fake',
                'clusters': [{'name': 'fake', 'cluster': {'server': self.url}}],
                'users': [{'name': 'fake', 'user': {'token': 'fake'}}],
                'contexts': [{'name': 'fake', 'context': {'cluster': 'fake', 'user': 'fake',
                                                          'namespace': 'default'}}],
            }))
            for namespace in self._namespaces:
                self.create('v1/namespaces', {'metadata': {'name': namespace}})
        except BaseException:
            self.stop()  # `with` does not call __exit__ when __enter__ fails: leave no thread or files behind
            raise
        return self

    def stop(self) -> None:
        """Stop the kubelet and Kueue (if started via :meth:`start_kubelet`/:meth:`start_kueue`) and the API
        server. Idempotent."""
        if self.kubelet is not None:
            self.kubelet.stop()
        if self.kueue is not None:
            self.kueue.stop()
        if self._thread is not None and self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=30)
        self._thread = None
        self._http.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _serve_forever(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as e:  # surfaced by start() if it happens before the server is up
            self._startup_error = e
            logger.exception('the fake API server crashed')
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        emulator = ClusterEmulator(validate=self._validate, request_history=self._request_history)
        for spec in self._resource_specs:
            emulator.install(spec)
        # NB: aiohttp's RawTestServer rather than kmock.Server: the latter patches aiohttp's DNS resolution
        # process-wide and fails on exit if two servers are stopped in other than the reverse order.
        # No access log: requests are recorded in `emulator.requests`, and Kopf's log stays readable.
        server = aiohttp.test_utils.RawTestServer(emulator, host='127.0.0.1')
        async with emulator:
            await server.start_server(access_log=None)
            try:
                self._emulator = emulator
                self._url = str(server.make_url('')).rstrip('/')
                ready.set()
                await self._stopping.wait()
                emulator.close_watches()
            finally:
                await server.close()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError('the cluster is not started')
        return self._url

    @property
    def emulator(self) -> ClusterEmulator:
        """The kmock handler, e.g. for ``cluster.emulator['create batch/v1/jobs'] << 500`` (set up before use)."""
        if self._emulator is None:
            raise RuntimeError('the cluster is not started')
        return self._emulator

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig file pointing at this cluster (``kubernetes.config.load_kube_config(str(path))``)."""
        if self._tmpdir is None:
            raise RuntimeError('the cluster is not started')
        return self._tmpdir / 'kubeconfig'

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the emulator's event loop: the thread-safe way to touch ``emulator`` state directly."""
        async def call() -> T:
            return fn()
        if self._loop is None:
            raise RuntimeError('the cluster is not started')
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def install(self, spec: ResourceSpec) -> None:
        """Serve another resource (as if its CRD were applied), without a schema."""
        self.call(lambda: self.emulator.install(spec))

    def install_crd(self, crd: Mapping[str, Any]) -> Body:
        """Create a CRD object (e.g. loaded from a manifest); its resources then get served with its schema.

        If it exists, it is replaced, as ``kubectl apply`` of a newer manifest does: stored objects then read
        through the new schema (its defaults filled, undeclared fields pruned) and writes are checked against it.
        """
        resource = 'apiextensions.k8s.io/v1/customresourcedefinitions'
        name = (crd.get('metadata') or {}).get('name', '')
        current = self.get(resource, None, name) if name else None
        if current is None:
            return self.create(resource, dict(crd))
        body = copy.deepcopy(dict(crd))
        meta = body.setdefault('metadata', {})
        meta['resourceVersion'] = current['metadata']['resourceVersion']
        for key in ('labels', 'annotations', 'finalizers'):  # kept unless the manifest sets them
            if key in current['metadata'] and key not in meta:
                meta[key] = current['metadata'][key]
        return self.replace(resource, None, name, body)

    def history(self, resource: str, namespace: str | None, name: str) -> list[Body | None]:
        """Every stored version of an object, oldest first (``None`` marks a deletion)."""
        res, _ = self._resolve(resource)

        def versions() -> list[Body | None]:
            if (res, namespace, name) not in self.emulator.objects:
                return []
            return [None if v is None else copy.deepcopy(v.raw)
                    for v in self.emulator.objects[res, namespace, name].history]
        return self.call(versions)

    def start_kubelet(self, **options: Any) -> Kubelet:
        """Start a :class:`Kubelet` that stops together with this cluster."""
        if self.kubelet is not None:
            raise RuntimeError('a kubelet is already attached to this cluster')
        self.kubelet = Kubelet(self, **options).start()
        return self.kubelet

    def start_kueue(self, **options: Any) -> Kueue:
        """Start a :class:`Kueue` that stops together with this cluster."""
        if self.kueue is not None:
            raise RuntimeError('Kueue is already running on this cluster')
        self.kueue = Kueue(self, **options).start()
        return self.kueue

    # ---- what the client asks ---------------------------------------------------------------------------------

    def _resolve(self, resource: str) -> tuple[kmock.resource, bool]:
        def resolve() -> tuple[kmock.resource, bool]:
            known = [kmock.resource(key) for key in self.emulator.resources]
            if resource.count('/') >= 1:
                candidates = [kmock.resource(resource)]
            else:
                candidates = [res for res in known if res.plural == resource]
            found = [res for res in candidates if res in self.emulator.resources]
            if len(found) != 1:
                raise KeyError(f'unknown or ambiguous resource {resource!r}; served: '
                               f'{sorted(f"{api_version(r)}/{r.plural}" for r in known)}')
            return found[0], bool(self.emulator.resources[found[0]].namespaced)
        return self.call(resolve)
