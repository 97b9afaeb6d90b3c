"""The client side: what a test calls the API server with (synchronous HTTP, as ``kubectl`` would), and what
client-go does for the cluster's components (Events through its recorder, its wording of failed requests)."""
from __future__ import annotations

import collections
import contextlib
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import kmock
import kubernetes.client
import urllib3

from .objects import Body, job_finished, timestamp

__all__ = ['PATCH_TYPES', 'ApiError', 'Client', 'EventRecorder', 'client_error', 'unless_gone']

T = TypeVar('T')

PATCH_TYPES = {'merge': 'application/merge-patch+json', 'strategic': 'application/strategic-merge-patch+json',
               'json': 'application/json-patch+json'}


class ApiError(Exception):
    """An HTTP error answered by the fake API server (``status`` is the HTTP code, ``reason`` the K8s reason)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.reason = body.get('reason', '') if isinstance(body, dict) else ''
        self.message = (body.get('message') or '') if isinstance(body, dict) else str(body or '')
        super().__init__(f'{status} {self.reason}: {self.message}')



class Client:
    """Thin synchronous helpers over HTTP that return plain dicts, so tests see what clients see.

    ``resource`` arguments are ``"group/version/plural"`` (``"v1/pods"`` for the core group) or a bare plural if
    it is unambiguous. A subclass says where the server is (:attr:`url`) and which resources it serves
    (:meth:`_resolve`).
    """

    def __init__(self) -> None:
        self._http = urllib3.PoolManager(maxsize=16, retries=False)
        self.warnings: list[str] = []  # texts of the `Warning` headers the helpers received, oldest first

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _resolve(self, resource: str) -> tuple[kmock.resource, bool]:
        """The served resource a name means, and whether it is namespaced."""
        raise NotImplementedError

    def configuration(self) -> kubernetes.client.Configuration:
        config = kubernetes.client.Configuration()
        config.host = self.url
        return config

    def api_client(self) -> kubernetes.client.ApiClient:
        """A ``kubernetes`` client pointed at this cluster; close it (or use ``with``) when done."""
        return kubernetes.client.ApiClient(self.configuration())

    def path(self, resource: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The URL path of a collection or an object, e.g. ``/apis/batch/v1/namespaces/ns/jobs/x/status``."""
        res, namespaced = self._resolve(resource)
        if not namespaced and namespace is not None:
            raise ValueError(f'{resource} is cluster-scoped, but a namespace was given')
        parts = ['/api/v1' if res.group == '' else f'/apis/{res.group}/{res.version}']
        if namespace is not None:
            parts.append(f'namespaces/{namespace}')
        parts.append(str(res.plural))
        parts += [part for part in (name, subresource) if part is not None]
        return '/'.join(parts)

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                content_type: str = 'application/json', timeout: float = 30.0) -> Any:
        """One raw HTTP call: returns the decoded JSON, raises :class:`ApiError` on HTTP errors."""
        url = self.url + path + (f'?{urllib.parse.urlencode(params)}' if params else '')
        response = self._http.request(method, url, body=None if body is None else json.dumps(body).encode(),
                                      headers={'Content-Type': content_type, 'Accept': 'application/json'},
                                      timeout=timeout)
        payload = json.loads(response.data) if response.data else None
        for header in response.headers.getlist('Warning'):
            self.warnings += [json.loads(text) for text in re.findall(r'\d{3} \S+ ("(?:[^"\\]|\\.)*")', header)]
        if response.status >= 400:
            raise ApiError(response.status, payload)
        return payload

    def _object(self, method: str, path: str, **kwargs: Any) -> Body:
        result: Body = self.request(method, path, **kwargs)
        return result

    def get(self, resource: str, namespace: str | None, name: str, *, subresource: str | None = None
            ) -> Body | None:
        """The object, or ``None`` if it does not exist."""
        try:
            return self._object('GET', self.path(resource, namespace, name, subresource))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, resource: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Body]:
        """Objects in a namespace (or in all namespaces, if ``None``), optionally filtered by selectors."""
        params = {key: value for key, value in (('labelSelector', label_selector),
                                                ('fieldSelector', field_selector)) if value}
        items: list[Body] = self.request('GET', self.path(resource, namespace), params=params)['items']
        return items

    @staticmethod
    def _validation(field_validation: str | None) -> dict[str, str] | None:
        return {'fieldValidation': field_validation} if field_validation else None

    def create(self, resource: str, body: Mapping[str, Any], namespace: str | None = None, *,
               field_validation: str | None = None) -> Body:
        """Create an object; the namespace defaults to the body's, then to ``default`` (as kubectl does).

        ``field_validation`` (``Strict``/``Warn``/``Ignore``; the server's default is ``Warn``) is the query
        parameter: unknown fields are a 400 with ``Strict``, else dropped (``Warn`` adds to :attr:`warnings`).
        """
        _, namespaced = self._resolve(resource)
        if namespaced:
            namespace = namespace or (body.get('metadata') or {}).get('namespace') or 'default'
        return self._object('POST', self.path(resource, namespace), body=body,
                            params=self._validation(field_validation))

    def patch(self, resource: str, namespace: str | None, name: str, patch: Any, *,
              subresource: str | None = None, patch_type: str = 'merge', field_validation: str | None = None
              ) -> Body:
        """Patch an object: ``patch_type`` is ``merge`` (default), ``strategic`` or ``json``."""
        return self._object('PATCH', self.path(resource, namespace, name, subresource), body=patch,
                            content_type=PATCH_TYPES[patch_type], params=self._validation(field_validation))

    def replace(self, resource: str, namespace: str | None, name: str, body: Mapping[str, Any], *,
                subresource: str | None = None, field_validation: str | None = None) -> Body:
        """PUT the whole object (a ``metadata.resourceVersion`` in it makes it conditional)."""
        return self._object('PUT', self.path(resource, namespace, name, subresource), body=body,
                            params=self._validation(field_validation))

    def delete(self, resource: str, namespace: str | None, name: str, *, propagation: str | None = None
               ) -> Body | None:
        """Delete an object; returns its last state, or ``None`` if it did not exist."""
        body = {'propagationPolicy': propagation} if propagation else None
        try:
            return self._object('DELETE', self.path(resource, namespace, name), body=body)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    # ---- waiting ----------------------------------------------------------------------------------------------

    @staticmethod
    def wait_for(predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
                 message: str = '') -> T:
        """Poll ``predicate`` until it returns something truthy, and return that; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(message or f'not true within {timeout} s: {predicate!r}')
            time.sleep(interval)

    def wait_for_job(self, namespace: str, name: str, timeout: float = 30.0) -> Body:
        """Wait until a Job has a ``Complete`` or ``Failed`` condition; returns the Job."""
        def finished() -> Body | None:
            job = self.get('batch/v1/jobs', namespace, name)
            return job if job is not None and job_finished(job) else None
        return self.wait_for(finished, timeout, message=f'Job {namespace}/{name} did not finish in {timeout} s')


_GENERIC_ERRORS = {  # client-go's texts for an error response without a Status message
    400: 'the server rejected our request for an unknown reason', 403: 'the server does not allow access to the '
    'requested resource', 404: 'the server could not find the requested resource', 409: 'the server reported a '
    'conflict', 422: 'the server rejected our request due to an error in our request', 429: 'the server has '
    'received too many requests and has asked us to try again later', 503: 'the server is currently unable to '
    'handle the request'}


def client_error(error: ApiError, verb: str = 'post', resource: str = 'pods') -> str:
    """How a Go client's error reads: the server's Status message, or client-go's generic text."""
    if error.message:
        return error.message
    text = _GENERIC_ERRORS.get(error.status, 'an error on the server ("unknown") has prevented the request from '
                                             'succeeding')
    return f'{text} ({verb} {resource})'


@contextlib.contextmanager
def unless_gone() -> Iterator[None]:
    """Ignore 404s: the object was deleted (e.g. a Pod collected with its Job), there is nothing to update."""
    try:
        yield
    except ApiError as e:
        if e.status != 404:
            raise


class EventRecorder:
    """Posts core/v1 Events for one component as client-go's recorder does: the same event again (same object,
    type, reason and message) bumps the Event's ``count`` and ``lastTimestamp``; once an object has had 10
    different messages for one reason, further ones go into one Event whose message starts with
    ``(combined from similar events): `` (its count bumped, its message the latest) — client-go's aggregator."""

    MAX_SIMILAR = 10

    def __init__(self, cluster: Client, component: str) -> None:
        self.cluster, self.component = cluster, component
        self._seen: dict[tuple[Any, ...], list[Any]] = {}  # key -> [Event name, count]
        self._messages: collections.defaultdict[tuple[Any, ...], set[str]] = collections.defaultdict(set)
        self._lock = threading.Lock()

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str, *,
               field_path: str | None = None, host: str | None = None) -> None:
        meta = obj['metadata']
        namespace = meta.get('namespace') or 'default'
        involved = {'apiVersion': obj.get('apiVersion'), 'kind': obj.get('kind'), 'namespace': meta.get('namespace'),
                    'name': meta['name'], 'uid': meta['uid']}
        if field_path:
            involved['fieldPath'] = field_path
        similar = (meta['uid'], field_path, type_, reason)
        now = timestamp()
        with self._lock, unless_gone():
            messages = self._messages[similar]
            if message in messages or len(messages) < self.MAX_SIMILAR:
                messages.add(message)
                key: tuple[Any, ...] = (*similar, message)
            else:
                key, message = similar, f'(combined from similar events): {message}'
            seen = self._seen.get(key)
            if seen is not None:
                seen[1] += 1
                self.cluster.patch('v1/events', namespace, seen[0],
                                   {'count': seen[1], 'lastTimestamp': now, 'message': message})
                return
            name = f'{meta["name"]}.{time.time_ns():x}'
            self.cluster.create('v1/events', {
                'metadata': {'name': name, 'namespace': namespace}, 'involvedObject': involved,
                'type': type_, 'reason': reason, 'message': message,
                'source': {'component': self.component, **({'host': host} if host else {})},
                'firstTimestamp': now, 'lastTimestamp': now, 'count': 1, 'eventTime': None,
                'reportingComponent': self.component, 'reportingInstance': host or '',
            }, namespace=namespace)
            self._seen[key] = [name, 1]
