"""The API server: kmock's Kubernetes emulator (:class:`ClusterEmulator`, an aiohttp handler) with the
API-server behaviour operators rely on and kmock leaves out — object metadata, status subresources, patches and
preconditions, label and field selectors, watches that resume from a resourceVersion, paging, admission
(defaulting, mutating webhooks, schema checks, field validation), finalizers, garbage collection and CRDs that
serve their resources with their schemas. cluster.py serves it on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import copy
import dataclasses
import itertools
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import attrs
import json_merge_patch
import jsonpatch
import jsonschema
import kmock
import kmock._internal.parsing

from .objects import NAME_ALPHABET, Body, timestamp
from .schemas import builtin_validator, drop_field, format_field_path, jsonschema_of, prune_and_default, unknown_fields

__all__ = ['DEFAULT_RESOURCES', 'KUBERNETES_VERSION', 'ClusterEmulator', 'ResourceSpec', 'api_version']

KUBERNETES_VERSION = '1.33'  # what /version reports and which built-in schemas objects are checked against

ALL_VERBS = frozenset({'create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'})
STATUS = frozenset({'status'})
NO_SUBRESOURCES: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class ResourceSpec:
    """A resource the fake API server serves, as if its CRD were installed or it were built in."""

    name: str  # "group/version/plural", or "v1/plural" for the core group
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = STATUS
    custom: bool = False  # CRD-defined: no strategic-merge patches, no built-in schema check


DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec('batch/v1/jobs', 'Job'),
    ResourceSpec('v1/pods', 'Pod'),
    ResourceSpec('v1/services', 'Service'),
    ResourceSpec('v1/events', 'Event', subresources=NO_SUBRESOURCES),
    ResourceSpec('v1/secrets', 'Secret', subresources=NO_SUBRESOURCES),
    ResourceSpec('v1/configmaps', 'ConfigMap', subresources=NO_SUBRESOURCES),
    ResourceSpec('v1/persistentvolumeclaims', 'PersistentVolumeClaim'),
    ResourceSpec('v1/serviceaccounts', 'ServiceAccount', subresources=NO_SUBRESOURCES),
    ResourceSpec('apps/v1/deployments', 'Deployment'),
    ResourceSpec('coordination.k8s.io/v1/leases', 'Lease', subresources=NO_SUBRESOURCES),
    # Kopf needs these two served: without them it silently starts no watchers (see shared/testing.md).
    ResourceSpec('v1/namespaces', 'Namespace', namespaced=False),
    ResourceSpec('apiextensions.k8s.io/v1/customresourcedefinitions', 'CustomResourceDefinition',
                 namespaced=False),
)

_JOBS = kmock.resource('batch/v1/jobs')
_NAMESPACES = kmock.resource('v1/namespaces')
_CRDS = kmock.resource('apiextensions.k8s.io/v1/customresourcedefinitions')
_UNCHECKED_KINDS = frozenset({'Event'})  # written by Kopf itself, not by the code under test
_DNS1123_SUBDOMAIN = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')
_DNS1123_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?')
_DNS1035_LABEL = re.compile(r'[a-z]([-a-z0-9]*[a-z0-9])?')
_GO_TRUE = frozenset({'1', 't', 'T', 'true', 'TRUE', 'True'})  # strconv.ParseBool
_MERGE_PATCH = 'application/merge-patch+json'
_STRATEGIC_PATCH = 'application/strategic-merge-patch+json'
_JSON_PATCH = 'application/json-patch+json'
_PODS = kmock.resource('v1/pods')
_FIELD_VALIDATION = ('Ignore', 'Warn', 'Strict')  # ?fieldValidation=; the API server's default is Warn


def api_version(res: kmock.resource) -> str:
    return f'{res.group}/{res.version}' if res.group else str(res.version)


def _qualified(res: kmock.resource) -> str:
    return f'{res.plural}.{res.group}' if res.group else str(res.plural)


def _error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A ``Status`` response the way the real API server words it (clients branch on ``code``)."""
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or None)


def _not_found(res: kmock.resource, name: str) -> kmock.KubernetesError:
    return _error(404, 'NotFound', f'{_qualified(res)} "{name}" not found', name=name, kind=res.plural)


# --------------------------------------------------------------------------------------------------------------
# Selectors: the bits of API machinery that kmock does not do.
# --------------------------------------------------------------------------------------------------------------

def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` value sets."""
    terms, depth, current = [], 0, ''
    for char in text:
        depth += char == '('
        depth -= char == ')'
        if char == ',' and depth == 0:
            terms.append(current)
            current = ''
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def _label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Compile ``a=b,c!=d,e in (f,g),h notin (i),j,!k`` into a predicate over a labels dict."""
    requirements: list[tuple[str, str, frozenset[str]]] = []  # (key, operator, values)
    for term in _split_selector(text):
        if m := re.fullmatch(r'([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)', term):
            requirements.append((m[1], m[2], frozenset(v.strip() for v in m[3].split(',') if v.strip())))
        elif m := re.fullmatch(r'([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)', term):
            requirements.append((m[1], 'notin' if m[2] == '!=' else 'in', frozenset({m[3]})))
        elif m := re.fullmatch(r'!\s*([^\s!=(),]+)', term):
            requirements.append((m[1], 'absent', frozenset()))
        elif m := re.fullmatch(r'[^\s!=(),]+', term):
            requirements.append((m[0], 'present', frozenset()))
        else:
            raise ValueError(f'unable to parse requirement: {term!r}')

    def match(labels: Mapping[str, str]) -> bool:
        for key, operator, values in requirements:
            value = labels.get(key)
            if ((operator == 'in' and value not in values) or (operator == 'notin' and value in values)
                    or (operator == 'present' and key not in labels) or (operator == 'absent' and key in labels)):
                return False
        return True
    return match


def _field_value(obj: Any, path: str) -> str:
    for part in path.split('.'):
        obj = obj.get(part) if isinstance(obj, dict) else None
    if isinstance(obj, bool):
        return 'true' if obj else 'false'
    return '' if obj is None else str(obj)


def _field_selector(text: str) -> Callable[[Body], bool]:
    """Compile ``metadata.name=x,status.phase!=Running`` into a predicate over an object."""
    requirements: list[tuple[str, bool, str]] = []  # (path, equal, value)
    for term in _split_selector(text):
        m = re.fullmatch(r'([\w.]+)\s*(==|=|!=)\s*(.*)', term)
        if m is None:
            raise ValueError(f'invalid field selector: {term!r}')
        requirements.append((m[1], m[2] != '!=', m[3].strip()))
    return lambda obj: all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)


def _install_parsing_fixes() -> None:
    """Work around two request-parsing gaps of kmock 0.8 (only these cases change; the rest is kmock's).

    * ``/api/v1/namespaces[/name[/status]]`` is read as a *namespaced* path: ``/api/v1/namespaces/foo`` means
      "namespace foo, no resource", and the bare collection crashes the parser — so Namespace objects could
      not be created, read or listed.
    * ``?watch=True`` (what the ``kubernetes`` client sends) is not a watch for kmock, only ``watch=true`` is;
      the API server parses it with Go's ``strconv.ParseBool``.
    """
    parsing = kmock._internal.parsing
    if getattr(parsing.parse_path, '_fake_cluster_fix', False):
        return
    original_parse_path, original_guess_k8s = parsing.parse_path, parsing.guess_k8s

    def parse_path(path: str) -> kmock._internal.parsing.ParsedPath:
        parts = path.strip('/').split('/')
        if parts[:3] == ['api', 'v1', 'namespaces'] and (
                len(parts) <= 4 or (len(parts) == 5 and parts[4] in ('status', 'finalize'))):
            return parsing.ParsedPath(group='', version='v1', plural='namespaces',
                                      name=parts[3] if len(parts) > 3 else None,
                                      subresource=parts[4] if len(parts) > 4 else None)
        return original_parse_path(path)

    def guess_k8s(k8s: kmock._internal.parsing.ParsedPath, method: kmock.method, query: dict[str, str]
                  ) -> kmock.action | None:
        if k8s.group is not None and method == kmock.method.GET and query.get('watch') in _GO_TRUE:
            return kmock.action.WATCH
        return original_guess_k8s(k8s, method, query)

    parse_path._fake_cluster_fix = True  # type: ignore[attr-defined]
    parsing.parse_path, parsing.guess_k8s = parse_path, guess_k8s


_install_parsing_fixes()


# --------------------------------------------------------------------------------------------------------------
# The API server.
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Change:
    """One stored write; watches replay these from any resourceVersion, so list-then-watch loses nothing."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: Body
    old: Body | None  # the previous state: a label-selector watch must see objects leave or enter its set


def _sees(view: kmock.View, request: kmock.Request) -> bool:
    """Whether a view sees the request being served. kmock answers by iterating the view, i.e. every
    request served so far, once per reaction per request (O(history) each, a quadratic test); a chain of
    plain filters and priorities over the root sees it iff every filter's criteria accept it. Anything
    else (slices like ``[:1]`` count earlier requests, exclusions, groups) asks kmock."""
    while True:
        if isinstance(view, kmock.Root):
            return True  # the request was appended to the root's history before it was handled
        if type(view) is kmock.Filter:
            if not view.criteria(request):
                return False
        elif type(view) is not kmock.Priority:
            return request in view
        view = view._source


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API-server semantics operators depend on.

    kmock stores and serves objects; this adds: uid/resourceVersion/creationTimestamp/generation, apiVersion and
    kind, generateName, status subresources (the main endpoint ignores ``status``, ``/status`` ignores the rest),
    merge/strategic/JSON patches and PUT, resourceVersion preconditions (409), no-op writes that change nothing,
    label and field selectors on list/watch/deletecollection, watches that resume from a resourceVersion,
    finalizers, ownerReference garbage collection (background), namespace deletion, built-in defaulting and
    schema checks for Jobs/Pods/Secrets/Services, ``fieldValidation`` (unknown fields dropped with a ``Warning``
    header, or a 400 when ``Strict``), ``limit``/``continue`` paging, and CRDs: creating one installs its resource
    with its schema, updating it changes the schema (stored objects are read through the new one).

    All methods run on the emulator's event loop and never await while writing, so every write is atomic.
    The mutations happen in kmock's *fallback* reactions, so a test's own reaction on the emulator
    (e.g. ``cluster.emulator['create batch/v1/jobs'] << 500``) replaces the write instead of answering on top of it.
    """

    validate: str | None = KUBERNETES_VERSION  # built-in schemas to check against; None to skip
    # kmock keeps every request for assertions (the handler's and each reaction's): load tests keep only
    # the newest N, so that the emulator's heap does not grow with every request (None keeps all).
    request_history: int | None = None
    bookmark_interval: float = 30.0  # Kopf calls a watch dead after 70 s of silence

    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)
    _schemas: dict[kmock.resource, Any] = attrs.field(factory=dict, init=False)
    _validators: dict[kmock.resource, Any] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _changes: collections.defaultdict[kmock.resource, list[_Change]] = attrs.field(
        factory=lambda: collections.defaultdict(list), init=False)
    _watchers: collections.defaultdict[kmock.resource, set[asyncio.Queue[_Change | None]]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False)
    _service_ips: Iterator[int] = attrs.field(factory=lambda: itertools.count(10), init=False)
    # Mutating admission webhooks: fn(resource, obj, old) changes obj in place before validation (old is None
    # on create). Called on the emulator's loop: keep them quick, and add/remove them via FakeCluster.call().
    webhooks: list[Callable[[kmock.resource, Body, Body | None], None]] = attrs.field(factory=list, init=False)
    _warnings: list[str] = attrs.field(factory=list, init=False)  # of the write being served
    _order: list[kmock.Reaction] = attrs.field(factory=list, init=False)  # see _by_priority
    _order_key: tuple[int, ...] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # registers _serve_list/_serve_watch/... (overridden below) as fallbacks
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.DELETE] << self._serve_delete_collection

    # ---- resources --------------------------------------------------------------------------------------------

    def install(self, spec: ResourceSpec, schema: Mapping[str, Any] | None = None) -> None:
        """Serve a resource (discovery included); ``schema`` is a CRD's openAPIV3Schema for custom resources."""
        res = kmock.resource(spec.name)
        self.resources[res] = kmock.ResourceInfo(
            kind=spec.kind, singular=spec.kind.lower(), namespaced=spec.namespaced,
            verbs=ALL_VERBS, subresources=spec.subresources)
        if spec.custom:
            self._custom.add(res)
        if schema is not None:
            self._schemas[res] = schema

    def uninstall(self, name: str) -> None:
        """Stop serving a resource and delete its objects, as deleting its CRD does."""
        res = kmock.resource(name)
        for key in [key for key in self._objects if key[0] == res]:
            obj = self._objects[key]
            if not obj.deleted:
                self._store(res, 'DELETED', copy.deepcopy(obj.raw), obj.raw)
        self._schemas.pop(res, None)
        self._custom.discard(res)
        if res in self.resources:
            del self.resources[res]

    def close_watches(self) -> None:
        """End every open watch stream, so that the HTTP server can shut down without waiting for them."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    @property
    def watch_count(self) -> int:
        """How many watch streams are open now (e.g. to see that an operator is watching)."""
        return sum(len(queues) for queues in self._watchers.values())

    # ---- request plumbing -------------------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> Any:
        # Deliberately skip KubernetesEmulator._handle: it stores writes naively *before* reactions run.
        # Here, the fallback reactions below do all the writing. Otherwise this is kmock's RawHandler._handle
        # (the first enabled reaction, by priority, that sees the request), except for how "sees" is found.
        if self.request_history is not None and len(self._requests) > 2 * self.request_history:
            del self._requests[: -self.request_history]
            for reaction in self._payloads:  # each reaction keeps the requests it served, too
                del reaction._requests[: -self.request_history]
        for payload in self._by_priority():
            if not payload._disabled.is_set() and _sees(payload._source, request):
                try:
                    return await payload(request)
                except kmock.ReactionMismatchError:  # either mismatch or depletion
                    payload._disabled.set()
                except NotImplementedError:  # matched, but non-actionable (nothing to respond with)
                    pass
        raise NotImplementedError('Undefined server behaviour: no reaction matching the request is defined.')

    def _by_priority(self) -> list[kmock.Reaction]:
        """The reactions in kmock's serving order (highest priority first, equals in the order they were
        added), sorted once per set of reactions rather than on every request."""
        key = tuple(map(id, self._payloads))
        if self._order_key != key:
            priorities = [tuple(-p for p in payload.priorities) for payload in self._payloads]
            depth = max(map(len, priorities), default=0)
            padded = [priority + (0,) * (depth - len(priority)) for priority in priorities]
            self._order = [self._payloads[i] for i in sorted(range(len(padded)), key=padded.__getitem__)]
            self._order_key = key
        return self._order

    async def _serve_server_version(self, request: kmock.Request) -> Any:
        major, minor = KUBERNETES_VERSION.split('.')
        return {'major': major, 'minor': minor, 'gitVersion': f'v{KUBERNETES_VERSION}.0-fake',
                'platform': 'linux/amd64'}

    def _resource(self, request: kmock.Request) -> tuple[kmock.resource, kmock.ResourceInfo]:
        res = request.resource
        if res is None or res.plural is None or res not in self.resources:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        info = self.resources[res]
        if not info.namespaced and request.namespace is not None:
            raise _error(404, 'NotFound', f'{_qualified(res)} is not namespaced')
        return res, info

    def _current(self, res: kmock.resource, namespace: str | None, name: str) -> Body | None:
        key = (res, namespace, name)
        if key in self._objects and not self._objects[key].deleted:
            return self._objects[key].raw
        return None

    def _live(self, res: kmock.resource | None = None) -> Iterator[tuple[kmock.resource, Body]]:
        for (key_res, _, _), obj in list(self._objects.items()):
            if (res is None or key_res == res) and not obj.deleted:
                yield key_res, obj.raw

    def _existing(self, request: kmock.Request, res: kmock.resource, info: kmock.ResourceInfo) -> Body:
        if request.name is None:
            raise _error(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        if info.namespaced and request.namespace is None:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        obj = self._current(res, request.namespace, request.name)
        if obj is None:
            raise _not_found(res, request.name)
        return self._present(res, obj)

    def _present(self, res: kmock.resource, obj: Body) -> Body:
        """An object as read from storage: a custom resource goes through its CRD's *current* schema (pruned and
        defaulted on every read, as the API server does when it decodes from etcd; never written back)."""
        if res not in self._schemas:
            return obj
        schema, _ = self._custom_validator(res)
        content = prune_and_default({key: value for key, value in obj.items()
                                     if key not in ('metadata', 'apiVersion', 'kind')}, schema)
        return {'apiVersion': obj['apiVersion'], 'kind': obj['kind'], 'metadata': obj['metadata'], **content}

    def _field_validation(self, request: kmock.Request) -> str:
        directive = request.params.get('fieldValidation') or 'Warn'
        if directive not in _FIELD_VALIDATION:
            raise _error(400, 'BadRequest', f'fieldValidation: Unsupported value: "{directive}": supported values: '
                                            f'"Ignore", "Strict", "Warn"')
        self._warnings = []
        return directive

    def _unknown(self, obj: Body, paths: list[tuple[str | int, ...]], directive: str, patch: bool) -> None:
        """Unknown fields (already dropped from ``obj``): a 400 if ``Strict``, warnings if ``Warn``."""
        if not paths:
            return
        unknown = [f'unknown field "{format_field_path(path)}"' for path in paths]
        if directive == 'Strict':
            message = 'strict decoding error: ' + ', '.join(unknown)
            if not patch:  # how the create/update handlers word a body that cannot be decoded
                kind, version = obj.get('kind'), str(obj.get('apiVersion', '')).rpartition('/')[2]
                message = f'{kind} in version "{version}" cannot be handled as a {kind}: {message}'
            raise _error(400, 'BadRequest', message)
        if directive == 'Warn':
            self._warnings += unknown

    def _reply(self, payload: Body, status: int = 200) -> Any:
        """The response, with the write's warnings as ``Warning: 299 - "..."`` headers (RFC 7234 style)."""
        if not self._warnings and status == 200:
            return payload
        headers = {'Warning': ', '.join('299 - ' + json.dumps(text) for text in self._warnings)} if self._warnings else {}
        return kmock.Response(status=status, payload=payload, headers=headers)  # type: ignore[attr-defined]

    def _custom_validator(self, res: kmock.resource) -> tuple[Body, Any]:
        """The CRD's schema and a compiled validator, built once per schema (compiling a large
        schema on every write made the emulator, not the code under test, the bottleneck)."""
        source = self._schemas[res]
        cached = self._validators.get(res)
        if cached is not None and cached[0] is source:
            return cached[1], cached[2]
        schema = dict(source)
        schema['properties'] = {key: value for key, value in (schema.get('properties') or {}).items()
                                if key not in ('metadata', 'apiVersion', 'kind')}
        schema['required'] = [key for key in schema.get('required') or [] if key != 'metadata']
        converted = jsonschema_of(schema)
        validator = jsonschema.validators.validator_for(converted)(converted)
        self._validators[res] = (source, schema, validator)
        return schema, validator

    @staticmethod
    def _content_type(request: kmock.Request) -> str:
        for key, value in request.headers.items():
            if key.lower() == 'content-type':
                return value.split(';')[0].strip().lower()
        return ''

    def _matcher(self, request: kmock.Request) -> Callable[[Body], bool]:
        try:
            labels = _label_selector(request.params.get('labelSelector', ''))
            fields = _field_selector(request.params.get('fieldSelector', ''))
        except ValueError as e:
            raise _error(400, 'BadRequest', str(e)) from e
        namespace, name = request.namespace, request.name

        def match(obj: Body) -> bool:
            meta = obj.get('metadata') or {}
            return ((namespace is None or meta.get('namespace') == namespace)
                    and (name is None or meta.get('name') == name)
                    and labels(meta.get('labels') or {}) and fields(obj))
        return match

    def _list_body(self, res: kmock.resource, info: kmock.ResourceInfo, items: list[Body]) -> Body:
        return {'apiVersion': api_version(res), 'kind': f'{info.kind}List',
                'metadata': {'resourceVersion': str(self._rv)}, 'items': items}

    # ---- reads ------------------------------------------------------------------------------------------------

    def _serve_list(self, request: kmock.Request) -> Any:  # type: ignore[override]
        res, info = self._resource(request)
        match = self._matcher(request)
        params = request.params
        try:
            limit = int(params.get('limit') or 0)
        except ValueError:
            raise _error(400, 'BadRequest', f'invalid limit: {params.get("limit")!r}') from None
        # Pages of one list are cut from one snapshot (the first page's resourceVersion), in etcd's key order.
        rv, start = self._decode_continue(params['continue']) if params.get('continue') else (self._rv, '')
        objects = self._snapshot(res, rv) if start else [obj for _, obj in self._live(res)]
        items = sorted((obj for obj in objects if match(obj) and self._storage_key(obj) >= start),
                       key=self._storage_key)
        body = self._list_body(res, info, [self._present(res, obj) for obj in items[:limit or None]])
        body['metadata']['resourceVersion'] = str(rv)
        if 0 < limit < len(items):
            body['metadata']['continue'] = self._encode_continue(rv, self._storage_key(items[limit - 1]) + '\x00')
            if not params.get('labelSelector') and not params.get('fieldSelector'):
                body['metadata']['remainingItemCount'] = len(items) - limit
        return body

    @staticmethod
    def _storage_key(obj: Body) -> str:
        meta = obj['metadata']
        return f'{meta["namespace"]}/{meta["name"]}' if meta.get('namespace') else meta['name']

    @staticmethod
    def _encode_continue(rv: int, start: str) -> str:
        token = json.dumps({'v': 'meta.k8s.io/v1', 'rv': rv, 'start': start}, separators=(',', ':'))
        return base64.urlsafe_b64encode(token.encode()).decode().rstrip('=')

    def _decode_continue(self, token: str) -> tuple[int, str]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + '=' * (-len(token) % 4)))
            if data.get('v') != 'meta.k8s.io/v1' or not data.get('start'):
                raise ValueError(token)
            return int(data['rv']), str(data['start'])
        except (ValueError, TypeError, AttributeError, KeyError):
            raise _error(400, 'BadRequest', 'continue key is not valid: incorrect encoded start resourceVersion '
                                            '(version meta.k8s.io/v1)') from None

    def _snapshot(self, res: kmock.resource, rv: int) -> list[Body]:
        """The objects of a resource as they were at a resourceVersion, replayed from the change log."""
        state: dict[str, Body] = {}
        for change in self._changes[res]:
            if change.rv > rv:
                break
            if change.type == 'DELETED':
                state.pop(self._storage_key(change.obj), None)
            else:
                state[self._storage_key(change.obj)] = change.obj
        return list(state.values())

    def _serve_fetch(self, request: kmock.Request) -> Any:  # type: ignore[override]
        res, info = self._resource(request)
        if request.subresource is not None and (request.subresource != 'status' or 'status' not in info.subresources):
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        return self._existing(request, res, info)

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:  # type: ignore[override]
        # Everything up to the first yield runs before the response starts: errors become proper 4xx answers,
        # and the snapshot + subscription happen with no await in between, so no change can slip through.
        res, info = self._resource(request)
        match = self._matcher(request)
        params = request.params
        since = params.get('resourceVersion', '')
        bookmarks = params.get('allowWatchBookmarks') == 'true'
        timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        backlog: list[Body] = []
        if since in ('', '0') or params.get('sendInitialEvents') == 'true':
            backlog = [{'type': 'ADDED', 'object': self._present(res, obj)} for _, obj in self._live(res) if match(obj)]
            if params.get('sendInitialEvents') == 'true' and bookmarks:
                backlog.append(self._bookmark(res, info, initial_events_end=True))
        else:
            try:
                since_rv = int(since)
            except ValueError:
                raise _error(400, 'BadRequest', f'invalid resourceVersion: {since!r}') from None
            for change in self._changes[res]:
                if change.rv > since_rv and (event := self._event(change, match)) is not None:
                    backlog.append({**event, 'object': self._present(res, event['object'])})
        queue: asyncio.Queue[_Change | None] = asyncio.Queue()
        self._watchers[res].add(queue)
        try:
            yield b''  # start the streaming response
            for event in backlog:
                yield event
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                wait = self.bookmark_interval
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return
                try:
                    async with asyncio.timeout(wait):
                        live = await queue.get()
                except TimeoutError:
                    if bookmarks and queue.empty():
                        yield self._bookmark(res, info)
                    continue
                if live is None:  # the server is shutting down
                    return
                if (event := self._event(live, match)) is not None:
                    yield {**event, 'object': self._present(res, event['object'])}
        finally:
            self._watchers[res].discard(queue)

    def _bookmark(self, res: kmock.resource, info: kmock.ResourceInfo, initial_events_end: bool = False) -> Body:
        meta: Body = {'resourceVersion': str(self._rv)}
        if initial_events_end:
            meta['annotations'] = {'k8s.io/initial-events-end': 'true'}
        return {'type': 'BOOKMARK', 'object': {'apiVersion': api_version(res), 'kind': info.kind, 'metadata': meta}}

    @staticmethod
    def _event(change: _Change, match: Callable[[Body], bool]) -> Body | None:
        """What one watcher sees of a change: objects entering/leaving its selector are ADDED/DELETED."""
        now = change.type != 'DELETED' and match(change.obj)
        before = change.old is not None and match(change.old)
        if change.type == 'DELETED':
            return {'type': 'DELETED', 'object': change.obj} if before or match(change.obj) else None
        if now and (before or change.type == 'ADDED'):
            return {'type': change.type, 'object': change.obj}
        if now:
            return {'type': 'ADDED', 'object': change.obj}
        if before:
            return {'type': 'DELETED', 'object': change.obj}
        return None

    # ---- writes -----------------------------------------------------------------------------------------------

    def _store(self, res: kmock.resource, kind: str, obj: Body, old: Body | None) -> None:
        self._rv += 1
        obj['metadata']['resourceVersion'] = str(self._rv)
        key = (res, obj['metadata'].get('namespace'), obj['metadata']['name'])
        if kind == 'DELETED':
            self._objects[key].delete()  # soft: kmock keeps the history for assertions
        elif key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        change = _Change(self._rv, kind, obj, old)
        self._changes[res].append(change)
        for queue in self._watchers[res]:
            queue.put_nowait(change)

    def _serve_create(self, request: kmock.Request) -> Any:  # type: ignore[override]
        res, info = self._resource(request)
        if request.subresource is not None:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        directive = self._field_validation(request)
        body = request.data
        if not isinstance(body, dict) or not isinstance(body.get('metadata', {}), dict):
            raise _error(400, 'BadRequest', 'the request body must be a JSON object with object metadata')
        obj = copy.deepcopy(body)
        meta = obj.setdefault('metadata', {})
        namespace: str | None = None
        if info.namespaced:
            namespace = request.namespace
            if namespace is None:
                raise _error(404, 'NotFound', 'the server could not find the requested resource')
            if meta.get('namespace') not in (None, '', namespace):
                raise _error(400, 'BadRequest', 'the namespace of the provided object does not match the '
                                                'namespace sent on the request')
            meta['namespace'] = namespace
        else:
            meta.pop('namespace', None)
        name = meta.get('name') or self._generate_name(res, namespace, meta.get('generateName'), info.kind)
        self._check_name(res, info, name)
        if self._current(res, namespace, name) is not None:
            raise _error(409, 'AlreadyExists', f'{_qualified(res)} "{name}" already exists', name=name,
                         kind=res.plural)
        for key in ('deletionTimestamp', 'deletionGracePeriodSeconds', 'resourceVersion', 'managedFields',
                    'selfLink'):
            meta.pop(key, None)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=timestamp(), generation=1)
        obj = {'apiVersion': api_version(res), 'kind': info.kind,
               **{key: value for key, value in obj.items() if key not in ('apiVersion', 'kind')}}
        if 'status' in info.subresources:
            obj.pop('status', None)  # the status is written through /status only, by controllers
        obj = self._admit(res, info, obj, None, directive)
        self._store(res, 'ADDED', obj, None)
        if res == _CRDS:
            self._install_crd(obj, None)
        return self._reply(obj, status=201)

    def _serve_update(self, request: kmock.Request) -> Any:  # type: ignore[override]
        res, info = self._resource(request)
        current = self._existing(request, res, info)
        directive = self._field_validation(request)
        content_type, patch = self._content_type(request), request.data
        # Status codes as in the API server's patch handler: an undecodable patch is a 400, one that cannot
        # be applied (a failed "test", a missing path, an unknown op) or yields no object is a 422.
        if content_type == _JSON_PATCH:
            if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
                raise _error(400, 'BadRequest', 'a JSON patch must be a list of operations')
            try:
                new = jsonpatch.apply_patch(current, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise _error(422, 'Invalid', str(e)) from e
        elif content_type in (_MERGE_PATCH, _STRATEGIC_PATCH):
            if content_type == _STRATEGIC_PATCH and res in self._custom:
                raise _error(415, 'UnsupportedMediaType', 'the body of the request was in an unknown format - '
                             'accepted media types include: application/json-patch+json, '
                             'application/merge-patch+json, application/apply-patch+yaml')
            if patch is None or (content_type == _STRATEGIC_PATCH and not isinstance(patch, dict)):
                raise _error(400, 'BadRequest', 'the patch is not a JSON object')
            # No Python library does strategic merge (it needs each built-in type's patch-merge keys), so it is
            # approximated by a JSON merge patch: lists are replaced, not merged by key; no $patch directives.
            new = json_merge_patch.merge(copy.deepcopy(current), patch)  # merges into its first argument
        else:
            raise _error(415, 'UnsupportedMediaType', f'unsupported patch type: {content_type!r}')
        if not isinstance(new, dict):
            raise _error(422, 'Invalid', f'the patched document is not an object: {new!r}')
        return self._reply(self._update(res, info, request.subresource, current, new, directive, patch=True))

    def _serve_replace(self, request: kmock.Request) -> Any:
        res, info = self._resource(request)
        current = self._existing(request, res, info)
        directive = self._field_validation(request)
        body = request.data
        if not isinstance(body, dict):
            raise _error(400, 'BadRequest', 'the request body must be a JSON object')
        meta = body.get('metadata') or {}
        if meta.get('name') not in (None, request.name):
            raise _error(400, 'BadRequest', 'the name of the object does not match the name on the URL')
        return self._reply(self._update(res, info, request.subresource, current, body, directive))

    def _update(self, res: kmock.resource, info: kmock.ResourceInfo, subresource: str | None,
                current: Body, new: Body, directive: str = 'Warn', patch: bool = False) -> Body:
        old_meta = current['metadata']
        new = copy.deepcopy(new)  # the request's body stays as kmock recorded it
        # A resourceVersion in the new object (the PUT body, or what a patch left or put there) is a precondition.
        precondition = new['metadata'].get('resourceVersion') if isinstance(new.get('metadata'), dict) else None
        if precondition and precondition != old_meta['resourceVersion']:
            raise _error(409, 'Conflict', f'Operation cannot be fulfilled on {_qualified(res)} '
                         f'"{old_meta["name"]}": the object has been modified; please apply your changes to the '
                         f'latest version and try again', name=old_meta['name'], kind=res.plural)
        if subresource is not None and (subresource != 'status' or 'status' not in info.subresources):
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        if subresource == 'status':  # only the status changes through /status
            status = new.get('status')
            new = copy.deepcopy(current)
            new.pop('status', None)
            if status is not None:
                new['status'] = status
        else:
            if not isinstance(new.get('metadata'), dict):
                new['metadata'] = {}
            for key in ('name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'deletionTimestamp',
                        'deletionGracePeriodSeconds'):
                if key in old_meta:
                    new['metadata'][key] = old_meta[key]
                else:
                    new['metadata'].pop(key, None)
            new['apiVersion'], new['kind'] = current['apiVersion'], current['kind']
            if 'status' in info.subresources:  # the main endpoint ignores status changes
                new.pop('status', None)
                if 'status' in current:
                    new['status'] = copy.deepcopy(current['status'])
        new['metadata'].pop('resourceVersion', None)
        new = self._admit(res, info, new, current, directive, patch)
        if new == {**current, 'metadata': {k: v for k, v in old_meta.items() if k != 'resourceVersion'}}:
            return current  # a no-op write: no new resourceVersion, no watch event — as in Kubernetes
        if self._essence(new, info) != self._essence(current, info):
            new['metadata']['generation'] = old_meta.get('generation', 1) + 1
        self._store(res, 'MODIFIED', new, current)
        if res == _CRDS:
            self._install_crd(new, current)
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            return self._purge(res, new)
        return new

    @staticmethod
    def _essence(obj: Body, info: kmock.ResourceInfo) -> Body:
        """What ``metadata.generation`` tracks: all but metadata (and status, if it is a subresource)."""
        skipped = {'metadata', 'status'} if 'status' in info.subresources else {'metadata'}
        return {key: value for key, value in obj.items() if key not in skipped}

    def _serve_delete(self, request: kmock.Request) -> Any:  # type: ignore[override]
        res, info = self._resource(request)
        if request.subresource is not None:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        current = self._existing(request, res, info)
        options = request.data if isinstance(request.data, dict) else {}
        preconditions = options.get('preconditions') or {}
        for field, actual in (('uid', current['metadata']['uid']),
                              ('resourceVersion', current['metadata']['resourceVersion'])):
            if preconditions.get(field) and preconditions[field] != actual:
                raise _error(409, 'Conflict', f'Precondition failed: {field} in precondition: '
                             f'{preconditions[field]}, {field} in object meta: {actual}')
        return self._delete(res, current, self._propagation(request))

    def _serve_delete_collection(self, request: kmock.Request) -> Any:
        if request.name is not None:
            raise NotImplementedError  # not ours: named deletes are served by _serve_delete
        res, info = self._resource(request)
        match = self._matcher(request)
        propagation = self._propagation(request)
        deleted = []
        for _, obj in list(self._live(res)):
            current = self._current(res, obj['metadata'].get('namespace'), obj['metadata']['name'])
            if current is not None and match(current):  # an earlier deletion's cascade may have taken it
                deleted.append(self._delete(res, current, propagation))
        return self._list_body(res, info, deleted)

    @staticmethod
    def _propagation(request: kmock.Request) -> str:
        options = request.data if isinstance(request.data, dict) else {}
        policy = options.get('propagationPolicy') or request.params.get('propagationPolicy')
        if policy is None and options.get('orphanDependents') is True:
            policy = 'Orphan'
        return policy or 'Background'  # NB: a real API server orphans a batch/v1 Job's pods by default

    def _delete(self, res: kmock.resource, current: Body, propagation: str) -> Body:
        meta = current['metadata']
        if meta.get('deletionTimestamp'):
            return current
        if meta.get('finalizers'):
            new = copy.deepcopy(current)
            new['metadata'].update(deletionTimestamp=timestamp(), deletionGracePeriodSeconds=0)
            self._store(res, 'MODIFIED', new, current)
            return new
        return self._purge(res, current, propagation)

    def _purge(self, res: kmock.resource, current: Body, propagation: str = 'Background') -> Body:
        gone = copy.deepcopy(current)
        self._store(res, 'DELETED', gone, current)
        uid = gone['metadata']['uid']
        if res == _NAMESPACES:
            for child_res, obj in list(self._live()):
                if obj['metadata'].get('namespace') == gone['metadata']['name']:
                    self._delete_if_live(child_res, obj)
        if res == _CRDS:
            for spec, _ in self._crd_resources(gone):
                self.uninstall(spec.name)
        if propagation != 'Orphan':
            self._collect_garbage(uid)
        return gone

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete the dependents whose owners are all gone (background propagation)."""
        live = list(self._live())
        live_uids = {obj['metadata']['uid'] for _, obj in live}
        for res, obj in live:
            owners = {ref.get('uid') for ref in obj['metadata'].get('ownerReferences') or []}
            if owner_uid in owners and not owners & live_uids:
                self._delete_if_live(res, obj)

    def _delete_if_live(self, res: kmock.resource, obj: Body) -> None:
        """Delete an object unless an earlier cascade step already did (a cascade can reach it twice)."""
        current = self._current(res, obj['metadata'].get('namespace'), obj['metadata']['name'])
        if current is not None and current['metadata']['uid'] == obj['metadata']['uid']:
            self._delete(res, current, 'Background')

    # ---- admission: names, defaults, validation ---------------------------------------------------------------

    def _generate_name(self, res: kmock.resource, namespace: str | None, prefix: str | None, kind: str | None
                       ) -> str:
        if not prefix:
            raise _error(422, 'Invalid', f'{kind} is invalid: metadata.name: Required value: name or '
                                         f'generateName is required')
        for _ in range(100):
            name = prefix[:58] + ''.join(random.choices(NAME_ALPHABET, k=5))
            if self._current(res, namespace, name) is None:
                return name
        raise _error(500, 'InternalError', 'unable to generate a unique name')

    @staticmethod
    def _check_name(res: kmock.resource, info: kmock.ResourceInfo, name: str) -> None:
        pattern, limit = _DNS1123_SUBDOMAIN, 253
        if res.group == '' and res.plural in ('services',):
            pattern, limit = _DNS1035_LABEL, 63
        elif res.group == '' and res.plural == 'namespaces':
            pattern, limit = _DNS1123_LABEL, 63
        elif res == _JOBS:
            limit = 63  # the name becomes a label value on the Job's pods
        if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
            raise _error(422, 'Invalid', f'{info.kind} "{name}" is invalid: metadata.name: Invalid value: '
                         f'"{name}": must be a lowercase RFC 1123 name of at most {limit} characters')

    def _admit(self, res: kmock.resource, info: kmock.ResourceInfo, obj: Body, old: Body | None,
               directive: str = 'Warn', patch: bool = False) -> Body:
        """Defaulting, mutating webhooks, then validation — the API server's admission order."""
        if res == _JOBS:
            self._admit_job(obj, old)
        elif res == kmock.resource('v1/secrets'):
            self._admit_secret(obj)
        elif res == kmock.resource('v1/services'):
            self._admit_service(obj, old)
        elif res == kmock.resource('v1/pods') and old is None:
            obj.setdefault('status', {}).setdefault('phase', 'Pending')
        elif res == _NAMESPACES:
            obj.setdefault('spec', {})
            obj['status'] = {**(obj.get('status') or {}),
                             'phase': 'Terminating' if obj['metadata'].get('deletionTimestamp') else 'Active'}
        elif res == _CRDS:
            self._admit_crd(obj, old)
        for webhook in list(self.webhooks):
            webhook(res, obj, old)
        if res in self._schemas:
            obj = self._check_custom(res, info, obj, directive, patch)
        elif self.validate and res not in self._custom and info.kind not in _UNCHECKED_KINDS:
            self._check_builtin(obj, directive, patch)
        return obj

    def _check_builtin(self, obj: Body, directive: str = 'Warn', patch: bool = False) -> None:
        """Unknown fields are dropped (and reported per ``fieldValidation``); invalid values are a 422."""
        validator = builtin_validator(self.validate or KUBERNETES_VERSION, str(obj.get('apiVersion')),
                                      str(obj.get('kind')))
        if validator is None:
            return
        unknown = unknown_fields(validator, obj)
        for path in unknown:
            drop_field(obj, path)
        self._unknown(obj, unknown, directive, patch)
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is not None:
            path = format_field_path(error.absolute_path) or '<root>'
            raise _error(422, 'Invalid', f'{obj.get("kind")} "{obj["metadata"].get("name")}" is invalid: '
                                         f'{path}: {error.message}')

    def _check_custom(self, res: kmock.resource, info: kmock.ResourceInfo, obj: Body, directive: str = 'Warn',
                      patch: bool = False) -> Body:
        """Prune, default and validate a custom resource against its CRD schema (metadata is never pruned)."""
        schema, validator = self._custom_validator(res)
        pruned: list[tuple[str | int, ...]] = []
        content = prune_and_default({key: value for key, value in obj.items()
                                     if key not in ('metadata', 'apiVersion', 'kind')}, schema, (), pruned)
        self._unknown(obj, pruned, directive, patch)
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(content))
            if error is not None:
                raise error
        except jsonschema.ValidationError as e:
            path = format_field_path(e.absolute_path) or '<root>'
            raise _error(422, 'Invalid', f'{info.kind}.{res.group} "{obj["metadata"].get("name")}" is invalid: '
                                         f'{path}: {e.message}') from None
        return {'apiVersion': obj['apiVersion'], 'kind': obj['kind'], 'metadata': obj['metadata'], **content}

    @staticmethod
    def _admit_job(job: Body, old: Body | None) -> None:
        spec = job.setdefault('spec', {})
        meta = job['metadata']
        if old is not None:
            for field in ('template', 'completionMode', 'selector', 'completions', 'backoffLimitPerIndex',
                          'podFailurePolicy', 'manualSelector'):
                if old.get('spec', {}).get(field) != spec.get(field):
                    raise _error(422, 'Invalid', f'Job.batch "{meta["name"]}" is invalid: spec.{field}: '
                                                 f'Invalid value: field is immutable')
            return
        spec.setdefault('completionMode', 'NonIndexed')
        if spec['completionMode'] == 'Indexed' and spec.get('completions') is None:
            raise _error(422, 'Invalid', f'Job.batch "{meta["name"]}" is invalid: spec.completions: Required '
                                         f'value: when completion mode is Indexed')
        if spec.get('completions') is None and spec.get('parallelism') is None:
            spec['completions'] = 1
        spec.setdefault('parallelism', 1)
        spec.setdefault('backoffLimit', 2147483647 if spec.get('backoffLimitPerIndex') is not None else 6)
        spec.setdefault('suspend', False)
        spec.setdefault('podReplacementPolicy', 'TerminatingOrFailed')
        uid, name = meta['uid'], meta['name']
        labels = {'batch.kubernetes.io/controller-uid': uid, 'batch.kubernetes.io/job-name': name,
                  'controller-uid': uid, 'job-name': name}
        spec.setdefault('selector', {'matchLabels': {'batch.kubernetes.io/controller-uid': uid}})
        template = spec.setdefault('template', {})
        template_meta = template.setdefault('metadata', {})
        template_meta['labels'] = {**(template_meta.get('labels') or {}), **labels}
        restart_policy = (template.get('spec') or {}).get('restartPolicy')
        if restart_policy not in ('Never', 'OnFailure'):
            raise _error(422, 'Invalid', f'Job.batch "{name}" is invalid: spec.template.spec.restartPolicy: '
                                         f'Required value: valid values: "OnFailure", "Never"')
        if isinstance(spec.get('podFailurePolicy'), dict):
            if restart_policy != 'Never':
                raise _error(422, 'Invalid', f'Job.batch "{name}" is invalid: spec.template.spec.restartPolicy: '
                                             f'Invalid value: "{restart_policy}": only "Never" is supported when '
                                             f'podFailurePolicy is specified')
            for i, rule in enumerate(spec['podFailurePolicy'].get('rules') or []):
                if rule.get('action') == 'FailIndex' and spec.get('backoffLimitPerIndex') is None:
                    raise _error(422, 'Invalid', f'Job.batch "{name}" is invalid: spec.podFailurePolicy.rules[{i}]'
                                                 f'.action: Invalid value: "FailIndex": requires the '
                                                 f'backoffLimitPerIndex to be set')
                for pattern in rule.get('onPodConditions') or []:
                    pattern.setdefault('status', 'True')  # API defaulting

    @staticmethod
    def _admit_secret(secret: Body) -> None:
        data = dict(secret.get('data') or {})
        for key, value in (secret.pop('stringData', None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, TypeError):
                raise _error(422, 'Invalid', f'Secret "{secret["metadata"]["name"]}" is invalid: data[{key}]: '
                                             f'illegal base64 data') from None
        if data:
            secret['data'] = data

    def _admit_service(self, service: Body, old: Body | None) -> None:
        spec = service.setdefault('spec', {})
        spec.setdefault('type', 'ClusterIP')
        if old is not None:
            for field in ('clusterIP', 'clusterIPs'):
                if field in old.get('spec', {}):
                    spec[field] = old['spec'][field]
        elif not spec.get('clusterIP'):
            n = next(self._service_ips)
            spec['clusterIP'] = f'10.96.{n // 250}.{n % 250 + 1}'
        if spec.get('clusterIP'):
            spec.setdefault('clusterIPs', [spec['clusterIP']])

    @staticmethod
    def _admit_crd(crd: Body, old: Body | None) -> None:
        now = timestamp()
        names = (crd.get('spec') or {}).get('names') or {}
        storage = [v['name'] for v in (crd.get('spec') or {}).get('versions') or [] if v.get('storage')]
        stored = list(((old or {}).get('status') or {}).get('storedVersions') or [])  # only ever grows
        crd['status'] = {
            'acceptedNames': names,
            'storedVersions': stored + [version for version in storage if version not in stored],
            'conditions': [
                {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
                 'message': 'no conflicts found', 'lastTransitionTime': now},
                {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                 'message': 'the initial names have been accepted', 'lastTransitionTime': now},
            ],
        }

    @staticmethod
    def _crd_resources(crd: Body) -> list[tuple[ResourceSpec, Any]]:
        spec = crd.get('spec') or {}
        names = spec.get('names') or {}
        result = []
        for version in spec.get('versions') or []:
            if not version.get('served', True):
                continue
            subresources = frozenset((version.get('subresources') or {}).keys()) & {'status', 'scale'}
            schema = (version.get('schema') or {}).get('openAPIV3Schema')
            result.append((ResourceSpec(f'{spec.get("group")}/{version["name"]}/{names.get("plural")}',
                                        names.get('kind', ''), namespaced=spec.get('scope') != 'Cluster',
                                        subresources=subresources, custom=True), schema))
        return result

    def _install_crd(self, crd: Body, old: Body | None) -> None:
        """Serve a CRD's versions with their schemas; an update swaps the schemas (objects stay stored)."""
        served = self._crd_resources(crd)
        for spec, schema in served:
            self._schemas.pop(kmock.resource(spec.name), None)  # a schema removed by the update is gone too
            self.install(spec, schema=schema)
        names = {spec.name for spec, _ in served}
        for spec, _ in self._crd_resources(old) if old is not None else []:
            res = kmock.resource(spec.name)
            if spec.name not in names and res in self.resources:  # a version no longer served
                del self.resources[res]
                self._schemas.pop(res, None)
