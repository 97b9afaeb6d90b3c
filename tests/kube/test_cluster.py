"""Tests of the fake cluster itself: the behaviour that operator tests built on it rely on."""
from __future__ import annotations

import base64
import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import kubernetes.client
import kubernetes.watch
import pytest
import urllib3

from . import (
    DEFAULT_RESOURCES,
    ApiError,
    DenyingWebhook,
    FakeCluster,
    Kubelet,
    ObjectCountQuota,
    ResourceSpec,
    job_condition,
    pod_condition,
    run_operator,
)

RUNS = 'example.com/v1alpha1/runs'  # a custom resource, served without a schema
JOBS = 'batch/v1/jobs'
PODS = 'v1/pods'


TERMINATION_MESSAGE = 'TERMINATION_MESSAGE_PATH'  # where a process finds its termination-message file


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(resources=(*DEFAULT_RESOURCES, ResourceSpec(RUNS, 'Run', custom=True))) as fake:
        yield fake


@pytest.fixture
def kubelet(cluster: FakeCluster, tmp_path: Path) -> Kubelet:
    return cluster.start_kubelet(cwd=tmp_path, log_dir=tmp_path / 'logs', termination_message_env=TERMINATION_MESSAGE)


def job(name: str, script: str, *, env: list[dict[str, Any]] | None = None, image: str = 'app:test',
        labels: dict[str, str] | None = None, pod: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A Job manifest whose container runs a Python snippet with this interpreter (``pod``: pod spec fields)."""
    return {
        'metadata': {'name': name, **({'labels': labels} if labels else {})},
        'spec': {
            'backoffLimit': 0,
            **spec,
            'template': {'spec': {'restartPolicy': 'Never', **(pod or {}), 'containers': [{
                'name': 'main', 'image': image,
                'command': [sys.executable, '-c', textwrap.dedent(script)], 'env': env or [],
                **({'resources': resources} if resources else {}),
            }]}},
        },
    }


def names(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(obj['metadata']['name'] for obj in objs)


# ---- the API server --------------------------------------------------------------------------------------------

def test_server_assigns_metadata_like_kubernetes(cluster: FakeCluster) -> None:
    run = cluster.create(RUNS, {'metadata': {'name': 'r1'}, 'spec': {'model': 'm'}, 'status': {'phase': 'X'}})
    meta = run['metadata']
    assert run['apiVersion'] == 'example.com/v1alpha1' and run['kind'] == 'Run'
    assert re.fullmatch(r'[0-9a-f-]{36}', meta['uid'])
    assert meta['resourceVersion'].isdigit() and meta['generation'] == 1 and meta['namespace'] == 'default'
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', meta['creationTimestamp'])
    assert 'status' not in run  # a status subresource: only /status writes it

    other = cluster.create(RUNS, {'metadata': {'generateName': 'run-'}, 'spec': {}})
    assert re.fullmatch(r'run-[a-z0-9]{5}', other['metadata']['name'])
    assert other['metadata']['uid'] != meta['uid']
    assert int(other['metadata']['resourceVersion']) > int(meta['resourceVersion'])

    with pytest.raises(ApiError) as conflict:
        cluster.create(RUNS, {'metadata': {'name': 'r1'}, 'spec': {}})
    assert conflict.value.status == 409 and conflict.value.reason == 'AlreadyExists'
    with pytest.raises(ApiError) as invalid:
        cluster.create(RUNS, {'metadata': {'name': 'Not_A_Name'}, 'spec': {}})
    assert invalid.value.status == 422


def test_generation_bumps_only_on_spec_changes(cluster: FakeCluster) -> None:
    cluster.create(RUNS, {'metadata': {'name': 'r1'}, 'spec': {'steps': 1}})

    def patch(body: Any, **kwargs: Any) -> dict[str, Any]:
        return cluster.patch(RUNS, 'default', 'r1', body, **kwargs)

    labelled = patch({'metadata': {'labels': {'a': 'b'}}})
    assert labelled['metadata']['generation'] == 1
    changed = patch({'spec': {'steps': 2}})
    assert changed['metadata']['generation'] == 2
    assert int(changed['metadata']['resourceVersion']) > int(labelled['metadata']['resourceVersion'])

    status = patch({'status': {'phase': 'Running'}}, subresource='status')
    assert status['status'] == {'phase': 'Running'} and status['metadata']['generation'] == 2
    ignored = patch({'status': {'phase': 'Hacked'}, 'spec': {'steps': 2}})  # main endpoint ignores status
    assert ignored['status'] == {'phase': 'Running'}
    assert ignored['metadata']['resourceVersion'] == status['metadata']['resourceVersion']  # a no-op write

    json_patched = patch([{'op': 'replace', 'path': '/spec/steps', 'value': 3}], patch_type='json')
    assert json_patched['spec'] == {'steps': 3} and json_patched['metadata']['generation'] == 3
    with pytest.raises(ApiError) as stale:  # resourceVersion preconditions: optimistic concurrency
        patch({'metadata': {'resourceVersion': status['metadata']['resourceVersion']}, 'spec': {'steps': 4}})
    assert stale.value.status == 409
    with pytest.raises(ApiError) as unsupported:  # as for any custom resource: no strategic merge
        patch({'spec': {'steps': 5}}, patch_type='strategic')
    assert unsupported.value.status == 415

    replaced = cluster.replace(RUNS, 'default', 'r1', {**json_patched, 'spec': {'steps': 9}})
    assert replaced['spec'] == {'steps': 9} and replaced['metadata']['generation'] == 4
    assert [v['spec'] for v in cluster.history(RUNS, 'default', 'r1') if v] == [
        {'steps': 1}, {'steps': 1}, {'steps': 2}, {'steps': 2}, {'steps': 3}, {'steps': 9}]


def test_patches_follow_the_rfcs_and_fail_with_the_api_servers_codes(cluster: FakeCluster) -> None:
    cluster.create('v1/configmaps', {'metadata': {'name': 'c', 'labels': {'a': '1', 'b': '2'}},
                                     'data': {'x': '1', 'y': '2'}})
    path = cluster.path('v1/configmaps', 'default', 'c')

    def patch(body: Any, patch_type: str = 'merge') -> dict[str, Any]:
        return cluster.patch('v1/configmaps', 'default', 'c', body, patch_type=patch_type)

    def status_of(body: Any, patch_type: str = 'merge') -> int:
        with pytest.raises(ApiError) as error:
            patch(body, patch_type)
        return error.value.status

    merged = patch({'metadata': {'labels': {'a': None, 'c': '3'}}, 'data': {'y': None}})  # RFC 7386: null deletes
    assert merged['metadata']['labels'] == {'b': '2', 'c': '3'} and merged['data'] == {'x': '1'}
    rv = merged['metadata']['resourceVersion']
    assert patch({'data': {'gone': None}})['metadata']['resourceVersion'] == rv  # deleting nothing is a no-op

    ops = [{'op': 'test', 'path': '/data/x', 'value': '1'}, {'op': 'copy', 'from': '/data/x', 'path': '/data/z'},
           {'op': 'move', 'from': '/metadata/labels/b', 'path': '/metadata/labels/d'},
           {'op': 'remove', 'path': '/data/x'}, {'op': 'add', 'path': '/data/a~1b', 'value': 'slash'}]
    json_patched = patch(ops, 'json')
    assert json_patched['data'] == {'z': '1', 'a/b': 'slash'}
    assert json_patched['metadata']['labels'] == {'c': '3', 'd': '2'}

    # A failed "test" applies nothing (the patch is atomic): 422 Invalid, as from the real API server.
    with pytest.raises(ApiError) as failed:
        patch([{'op': 'remove', 'path': '/data/z'}, {'op': 'test', 'path': '/data/a~1b', 'value': 'nope'}], 'json')
    assert failed.value.status == 422 and failed.value.reason == 'Invalid'
    assert cluster.get('v1/configmaps', 'default', 'c') == json_patched
    assert status_of([{'op': 'remove', 'path': '/data/missing'}], 'json') == 422
    assert status_of([{'op': 'replace', 'path': '/metadata/resourceVersion', 'value': rv}], 'json') == 409  # stale
    assert status_of([{'op': 'frobnicate', 'path': '/data/z'}], 'json') == 422
    assert status_of([{'op': 'replace', 'path': '', 'value': [1]}], 'json') == 422  # not an object any more
    assert status_of({'op': 'remove', 'path': '/data/z'}, 'json') == 400  # not a list: cannot be decoded
    assert status_of(['remove /data/z'], 'json') == 400
    assert status_of(['not', 'an', 'object']) == 422  # merged, it replaces the whole object
    assert status_of(['a list'], 'strategic') == 400
    for content_type in ('application/merge-patch+json', 'application/json-patch+json'):  # not JSON at all
        malformed = urllib3.request('PATCH', cluster.url + path, body=b'{"data": ',
                                    headers={'Content-Type': content_type})
        assert malformed.status == 400 and json.loads(malformed.data)['reason'] == 'BadRequest', content_type
    assert cluster.get('v1/configmaps', 'default', 'c') == json_patched


def test_label_and_field_selectors_filter_lists(cluster: FakeCluster) -> None:
    cluster.create('v1/namespaces', {'metadata': {'name': 'other'}})
    for name, namespace, labels in [('a', 'default', {'app': 'x', 'tier': 'web'}), ('b', 'default', {'app': 'x'}),
                                    ('c', 'default', {'app': 'y'}), ('d', 'default', {}),
                                    ('e', 'other', {'app': 'x'})]:
        cluster.create('v1/configmaps', {'metadata': {'name': name, 'labels': labels}}, namespace=namespace)

    def select(selector: str, namespace: str | None = 'default') -> list[str]:
        return names(cluster.list('v1/configmaps', namespace, label_selector=selector))

    assert select('app=x') == ['a', 'b']
    assert select('app==x', None) == ['a', 'b', 'e']
    assert select('app!=x') == ['c', 'd']
    assert select('app in (x, y),!tier') == ['b', 'c']
    assert select('app notin (x)') == ['c', 'd']
    assert select('tier') == ['a']
    assert select('app=x,tier=web') == ['a']
    assert names(cluster.list('v1/configmaps', None, field_selector='metadata.name=e')) == ['e']
    assert names(cluster.list('v1/configmaps', field_selector='metadata.namespace!=default')) == ['e']
    with pytest.raises(ApiError) as bad:
        select('app=(x')
    assert bad.value.status == 400


def test_watch_resumes_from_a_resource_version_and_honours_selectors(cluster: FakeCluster) -> None:
    cluster.create('v1/configmaps', {'metadata': {'name': 'before', 'labels': {'app': 'x'}}})
    listed = cluster.request('GET', cluster.path('v1/configmaps', 'default'))
    cluster.create('v1/configmaps', {'metadata': {'name': 'after', 'labels': {'app': 'x'}}})
    cluster.create('v1/configmaps', {'metadata': {'name': 'unrelated', 'labels': {'app': 'y'}}})
    cluster.patch('v1/configmaps', 'default', 'after', {'metadata': {'labels': {'app': 'z'}}})

    with cluster.api_client() as client:
        events = list(kubernetes.watch.Watch().stream(
            kubernetes.client.CoreV1Api(client).list_namespaced_config_map, 'default', label_selector='app=x',
            resource_version=listed['metadata']['resourceVersion'], timeout_seconds=1))
    # Only what happened after the list; the object leaving the selector is seen as deleted.
    assert [(e['type'], e['object'].metadata.name) for e in events] == [('ADDED', 'after'), ('DELETED', 'after')]


def test_deleting_an_owner_collects_its_dependents(cluster: FakeCluster) -> None:
    def owned(name: str, *owners: dict[str, Any]) -> None:
        refs = [{'apiVersion': o['apiVersion'], 'kind': o['kind'], 'name': o['metadata']['name'],
                 'uid': o['metadata']['uid']} for o in owners]
        cluster.create('v1/configmaps', {'metadata': {'name': name, 'ownerReferences': refs}})

    run = cluster.create(RUNS, {'metadata': {'name': 'run', 'finalizers': ['example.com/cleanup']}, 'spec': {}})
    other = cluster.create(RUNS, {'metadata': {'name': 'other'}, 'spec': {}})
    owned('single', run)
    owned('shared', run, other)

    deleting = cluster.delete(RUNS, 'default', 'run')
    assert deleting is not None and deleting['metadata']['deletionTimestamp']  # held by its finalizer
    assert names(cluster.list('v1/configmaps')) == ['shared', 'single']
    cluster.patch(RUNS, 'default', 'run', {'metadata': {'finalizers': None}})  # released: deleted now
    assert cluster.get(RUNS, 'default', 'run') is None
    assert names(cluster.list('v1/configmaps')) == ['shared']  # still has a live owner
    cluster.delete(RUNS, 'default', 'other')
    assert cluster.list('v1/configmaps') == []

    orphaning = cluster.create(RUNS, {'metadata': {'name': 'orphaning'}, 'spec': {}})
    owned('orphan', orphaning)
    cluster.delete(RUNS, 'default', 'orphaning', propagation='Orphan')
    assert names(cluster.list('v1/configmaps')) == ['orphan']


def test_the_kubernetes_client_works_against_it(cluster: FakeCluster) -> None:
    with cluster.api_client() as client:
        core, batch = kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)

        core.create_namespaced_secret('default', kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name='creds', labels={'app': 'st'}),
            string_data={'token': 't0k3n'}))
        secret = core.read_namespaced_secret('creds', 'default')
        assert base64.b64decode(secret.data['token']) == b't0k3n' and secret.metadata.uid
        assert [s.metadata.name for s in core.list_namespaced_secret('default', label_selector='app=st').items] == [
            'creds']

        created = batch.create_namespaced_job('default', job('train', 'pass', suspend=True))
        assert created.metadata.creation_timestamp.year >= 2024 and created.spec.template.metadata.labels[
            'job-name'] == 'train'
        patched = batch.patch_namespaced_job('train', 'default', {'metadata': {'labels': {'stage': 'sft'}}})
        assert patched.metadata.labels == {'stage': 'sft'}
        batch.patch_namespaced_job_status('train', 'default', {'status': {'active': 1}})
        assert batch.read_namespaced_job_status('train', 'default').status.active == 1
        with pytest.raises(kubernetes.client.ApiException) as immutable:
            batch.patch_namespaced_job('train', 'default', {'spec': {'completions': 5}})
        assert immutable.value.status == 422
        assert [j.metadata.name for j in batch.list_job_for_all_namespaces().items] == ['train']

        args = ('example.com', 'v1alpha1', 'default', 'runs')
        custom.create_namespaced_custom_object(*args, {'apiVersion': 'example.com/v1alpha1',
                                                       'kind': 'Run', 'metadata': {'name': 'r'},
                                                       'spec': {'iterations': 2}})
        custom.patch_namespaced_custom_object(*args, 'r', {'spec': {'iterations': 3}})
        custom.patch_namespaced_custom_object_status(*args, 'r', {'status': {'phase': 'Running'}})
        run = custom.get_namespaced_custom_object(*args, 'r')
        assert run['spec'] == {'iterations': 3} and run['status'] == {'phase': 'Running'}
        assert run['metadata']['generation'] == 2
        assert [r['metadata']['name'] for r in custom.list_namespaced_custom_object(*args)['items']] == ['r']
        stale = {**run, 'metadata': {**run['metadata'], 'resourceVersion': '1'}}
        with pytest.raises(kubernetes.client.ApiException) as conflict:
            custom.replace_namespaced_custom_object(*args, 'r', stale)
        assert conflict.value.status == 409
        with pytest.raises(kubernetes.client.ApiException) as missing:
            core.read_namespaced_pod('nope', 'default')
        assert missing.value.status == 404

        batch.delete_namespaced_job('train', 'default', propagation_policy='Background')
        assert batch.list_namespaced_job('default').items == []


def test_an_applied_crd_serves_its_resource_with_schema(cluster: FakeCluster) -> None:
    spec_schema = {'type': 'object', 'required': ['model'], 'properties': {
        'model': {'type': 'string'}, 'iterations': {'type': 'integer', 'default': 1, 'minimum': 1}}}
    cluster.install_crd({
        'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
        'metadata': {'name': 'evaluators.example.com'},
        'spec': {'group': 'example.com', 'scope': 'Namespaced',
                 'names': {'plural': 'evaluators', 'singular': 'evaluator', 'kind': 'Evaluator'},
                 'versions': [{'name': 'v1alpha1', 'served': True, 'storage': True,
                               'subresources': {'status': {}},
                               'schema': {'openAPIV3Schema': {'type': 'object', 'properties': {
                                   'spec': spec_schema,
                                   'status': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True},
                               }}}}]},
    })
    created = cluster.create('example.com/v1alpha1/evaluators',
                             {'metadata': {'name': 'e'}, 'spec': {'model': 'tiny', 'typo': 1}})
    assert created['spec'] == {'model': 'tiny', 'iterations': 1}  # unknown fields pruned, defaults filled
    with pytest.raises(ApiError) as invalid:
        cluster.create('example.com/v1alpha1/evaluators', {'metadata': {'name': 'bad'}, 'spec': {'iterations': 0}})
    assert invalid.value.status == 422 and 'model' in invalid.value.message
    status = cluster.patch('evaluators', 'default', 'e', {'status': {'anything': {'goes': 1}}}, subresource='status')
    assert status['status'] == {'anything': {'goes': 1}}


def test_unknown_fields_are_dropped_with_a_warning_or_rejected_when_strict(cluster: FakeCluster) -> None:
    typo = job('typo', 'pass', suspend=True)
    typo['spec']['template']['spec']['affinty'] = {}
    with pytest.raises(ApiError) as strict:
        cluster.create(JOBS, typo, field_validation='Strict')
    assert strict.value.status == 400 and strict.value.reason == 'BadRequest'
    assert strict.value.message == ('Job in version "v1" cannot be handled as a Job: strict decoding error: unknown '
                                    'field "spec.template.spec.affinty"')

    created = cluster.create(JOBS, typo)  # the default, Warn: dropped, with a Warning header
    assert 'affinty' not in created['spec']['template']['spec']
    assert cluster.warnings[-1:] == ['unknown field "spec.template.spec.affinty"']
    with pytest.raises(ApiError) as strict_patch:
        cluster.patch(JOBS, 'default', 'typo', {'metadata': {'labelz': {'a': 'b'}}}, field_validation='Strict')
    assert strict_patch.value.status == 400
    assert strict_patch.value.message == 'strict decoding error: unknown field "metadata.labelz"'
    warned = len(cluster.warnings)
    cluster.patch(JOBS, 'default', 'typo', {'metadata': {'labelz': {'a': 'b'}}}, field_validation='Ignore')
    assert len(cluster.warnings) == warned  # dropped silently

    with pytest.raises(ApiError) as invalid:  # a bad value is still a 422
        cluster.create(JOBS, job('bad-value', 'pass', completions='two'), field_validation='Strict')
    assert invalid.value.status == 422 and invalid.value.reason == 'Invalid'
    with cluster.api_client() as client, pytest.raises(kubernetes.client.ApiException) as via_client:
        kubernetes.client.BatchV1Api(client).create_namespaced_job('default', {**typo, 'metadata': {'name': 'x'}},
                                                                   field_validation='Strict')
    assert via_client.value.status == 400


def test_lists_come_in_pages_from_one_snapshot(cluster: FakeCluster) -> None:
    for name in 'edcba':
        cluster.create('v1/configmaps', {'metadata': {'name': name}})
    with cluster.api_client() as client:
        core = kubernetes.client.CoreV1Api(client)
        first = core.list_namespaced_config_map('default', limit=2)
        cluster.create('v1/configmaps', {'metadata': {'name': 'aa'}})  # after the first page: not in this list
        second = core.list_namespaced_config_map('default', limit=2, _continue=first.metadata._continue)
        last = core.list_namespaced_config_map('default', limit=2, _continue=second.metadata._continue)
        assert [[cm.metadata.name for cm in page.items] for page in (first, second, last)] == [
            ['a', 'b'], ['c', 'd'], ['e']]
        assert first.metadata.remaining_item_count == 3 and first.metadata._continue
        assert last.metadata._continue is None and second.metadata.resource_version == first.metadata.resource_version
        assert [cm.metadata.name for cm in core.list_namespaced_config_map('default').items] == [
            'a', 'aa', 'b', 'c', 'd', 'e']
        with pytest.raises(kubernetes.client.ApiException) as bad:
            core.list_namespaced_config_map('default', limit=2, _continue='not-a-token')
        assert bad.value.status == 400


def test_a_crd_upgrade_changes_the_schema_of_stored_objects(cluster: FakeCluster) -> None:
    def crd(spec_schema: dict[str, Any]) -> dict[str, Any]:
        return {'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
                'metadata': {'name': 'evaluators.example.com'},
                'spec': {'group': 'example.com', 'scope': 'Namespaced',
                         'names': {'plural': 'evaluators', 'singular': 'evaluator', 'kind': 'Evaluator'},
                         'versions': [{'name': 'v1alpha1', 'served': True, 'storage': True,
                                       'schema': {'openAPIV3Schema': {'type': 'object', 'properties': {
                                           'spec': spec_schema}}}}]}}
    evaluators = 'example.com/v1alpha1/evaluators'
    cluster.install_crd(crd({'type': 'object', 'properties': {'model': {'type': 'string'}}}))
    cluster.create(evaluators, {'metadata': {'name': 'old'}, 'spec': {'model': 'tiny'}})

    upgraded = cluster.install_crd(crd({'type': 'object', 'required': ['model'], 'properties': {
        'model': {'type': 'string'}, 'iterations': {'type': 'integer', 'minimum': 1, 'default': 3}}}))
    assert upgraded['metadata']['generation'] == 2 and upgraded['status']['storedVersions'] == ['v1alpha1']
    assert cluster.get(evaluators, 'default', 'old')['spec'] == {'model': 'tiny', 'iterations': 3}  # type: ignore[index]
    assert cluster.list(evaluators)[0]['spec'] == {'model': 'tiny', 'iterations': 3}
    with pytest.raises(ApiError) as invalid:
        cluster.create(evaluators, {'metadata': {'name': 'new'}, 'spec': {'model': 'm', 'iterations': 0}})
    assert invalid.value.status == 422
    with pytest.raises(ApiError) as strict:
        cluster.create(evaluators, {'metadata': {'name': 'new'}, 'spec': {'model': 'm', 'typo': 1}},
                       field_validation='Strict')
    assert strict.value.message == ('Evaluator in version "v1alpha1" cannot be handled as a Evaluator: strict '
                                    'decoding error: unknown field "spec.typo"')


def test_kmock_reactions_inject_api_errors_instead_of_writing(cluster: FakeCluster) -> None:
    cluster.emulator['create batch/v1/jobs'][:1] << 500  # only the next creation fails
    with pytest.raises(ApiError) as failed:
        cluster.create(JOBS, job('once', 'pass', suspend=True))
    assert failed.value.status == 500 and cluster.list(JOBS) == []  # nothing was stored
    assert cluster.create(JOBS, job('once', 'pass', suspend=True))['metadata']['name'] == 'once'


def test_reactions_apply_to_every_matching_request_without_rereading_the_request_history(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock finds the reaction for a request by iterating every request served so far, once per reaction:
    a long test got slower with each request. Plain filters are now checked on the request alone."""
    def history_read(self: kmock.Root) -> Iterator[kmock.Request]:
        raise AssertionError('the request history was read to serve a request')
        yield

    cluster.create(JOBS, job('kept', 'pass', suspend=True))
    cluster.emulator['create batch/v1/jobs'] << 503  # every creation, not only the next
    monkeypatch.setattr(kmock.Root, '__iter__', history_read)
    for name in ('one', 'two'):
        with pytest.raises(ApiError) as refused:
            cluster.create(JOBS, job(name, 'pass', suspend=True))
        assert refused.value.status == 503
    assert [item['metadata']['name'] for item in cluster.list(JOBS)] == ['kept']  # the fallbacks still serve


# ---- the kubelet -----------------------------------------------------------------------------------------------

def test_a_job_runs_to_completion(cluster: FakeCluster, kubelet: Kubelet) -> None:
    cluster.create(JOBS, job('hello', 'print("hello from the pod")'))
    done = cluster.wait_for_job('default', 'hello')

    status = done['status']
    assert job_condition(done, 'Complete') and job_condition(done, 'SuccessCriteriaMet')
    assert status['succeeded'] == 1 and 'failed' not in status and 'active' not in status
    assert status['startTime'] and status['completionTime']
    [pod] = cluster.list(PODS, label_selector='job-name=hello')
    assert pod['status']['phase'] == 'Succeeded' and pod['metadata']['ownerReferences'][0]['uid'] == done[
        'metadata']['uid']
    assert pod['status']['containerStatuses'][0]['state']['terminated']['reason'] == 'Completed'
    assert kubelet.started == [('hello', None)]
    assert kubelet.attempts[0].stdout == 'hello from the pod\n'


def test_an_indexed_job_runs_each_index_once_with_its_ranks_together(
        cluster: FakeCluster, kubelet: Kubelet, tmp_path: Path) -> None:
    script = '''
        import os, pathlib, sys, time
        index = int(os.environ["JOB_COMPLETION_INDEX"])
        pathlib.Path(f"start-{index}").write_text(repr(time.time()))
        if index < 2:  # ranks 0 and 1 rendezvous: they must run at the same time
            deadline = time.time() + 10
            while not pathlib.Path(f"start-{1 - index}").exists():
                if time.time() > deadline:
                    sys.exit(7)
                time.sleep(0.01)
        pathlib.Path(f"end-{index}").write_text(repr(time.time()))
    '''
    cluster.create(JOBS, job('ranks', script, completionMode='Indexed', completions=3, parallelism=2))
    done = cluster.wait_for_job('default', 'ranks')

    assert job_condition(done, 'Complete')
    assert done['status']['completedIndexes'] == '0-2' and done['status']['succeeded'] == 3
    assert sorted(kubelet.started) == [('ranks', 0), ('ranks', 1), ('ranks', 2)]
    ends = [float((tmp_path / f'end-{i}').read_text()) for i in range(2)]
    assert float((tmp_path / 'start-2').read_text()) >= min(ends)  # parallelism 2: index 2 waited for a slot
    pods = cluster.list(PODS, label_selector='batch.kubernetes.io/job-name=ranks')
    assert sorted(p['metadata']['labels']['batch.kubernetes.io/job-completion-index'] for p in pods) == ['0', '1', '2']
    assert all(re.fullmatch(rf'ranks-{p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]}'
                            r'-[a-z0-9]{5}', p['metadata']['name']) for p in pods)


def test_a_failing_job_reports_its_termination_message_and_fails_after_retries(
        cluster: FakeCluster, kubelet: Kubelet) -> None:
    script = '''
        import os, sys
        with open(os.environ["TERMINATION_MESSAGE_PATH"], "w") as f:
            f.write("loss is NaN " + "x" * 5000)
        sys.exit(3)
    '''
    cluster.create(JOBS, job('diverges', script, backoffLimit=1))
    done = cluster.wait_for_job('default', 'diverges')

    failed = job_condition(done, 'Failed')
    assert failed is not None and failed['reason'] == 'BackoffLimitExceeded' and failed['lastTransitionTime']
    assert job_condition(done, 'FailureTarget') and not job_condition(done, 'Complete')
    assert done['status']['failed'] == 2 and kubelet.started == [('diverges', None)] * 2
    for pod in cluster.list(PODS, label_selector='job-name=diverges'):
        terminated = pod['status']['containerStatuses'][0]['state']['terminated']
        assert pod['status']['phase'] == 'Failed'
        assert terminated['exitCode'] == 3 and terminated['reason'] == 'Error'
        assert terminated['message'].startswith('loss is NaN') and len(terminated['message']) == 4096


def test_injected_failures_pause_and_idle(cluster: FakeCluster, kubelet: Kubelet) -> None:
    kubelet.fail_next('flaky', exit_code=42, message='node lost')
    kubelet.pause()
    cluster.create(JOBS, job('flaky-1', 'pass', backoffLimit=1))
    time.sleep(0.3)
    assert kubelet.started == [] and cluster.list(PODS) == []  # paused: nothing happens
    kubelet.resume()
    kubelet.wait_idle(timeout=20)

    done = cluster.get(JOBS, 'default', 'flaky-1')
    assert done is not None and job_condition(done, 'Complete')
    assert done['status']['failed'] == 1 and done['status']['succeeded'] == 1
    first, second = kubelet.attempts
    assert first.injected and first.exit_code == 42 and first.pid is None and second.exit_code == 0
    pod = cluster.get(PODS, 'default', first.pod)
    assert pod is not None
    terminated = pod['status']['containerStatuses'][0]['state']['terminated']
    assert terminated == {**terminated, 'exitCode': 42, 'message': 'node lost'}


def test_a_memory_limit_kill_says_oomkilled_and_any_other_sigkill_error(cluster: FakeCluster, kubelet: Kubelet) -> None:
    kubelet.fail_next('oom', exit_code=137, reason='OOMKilled')
    kubelet.fail_next('killed', exit_code=137)
    cluster.create(JOBS, job('oom', 'pass'))
    cluster.create(JOBS, job('killed', 'pass'))
    for name, reason in (('oom', 'OOMKilled'), ('killed', 'Error')):
        cluster.wait_for_job('default', name, timeout=20)
        pod, = cluster.list(PODS, label_selector=f'job-name={name}')
        assert pod['status']['containerStatuses'][0]['state']['terminated'] == {
            **pod['status']['containerStatuses'][0]['state']['terminated'], 'exitCode': 137, 'reason': reason}


def test_a_pod_the_kubelets_admission_rejects_fails_with_its_reason_and_no_container(cluster: FakeCluster, kubelet: Kubelet) -> None:
    kubelet.reject_next('gpu', reason='OutOfnvidia.com/gpu')
    cluster.create(JOBS, job('gpu', 'pass'))
    done = cluster.wait_for_job('default', 'gpu', timeout=20)
    pod, = cluster.list(PODS, label_selector='job-name=gpu')
    assert job_condition(done, 'Failed')['reason'] == 'BackoffLimitExceeded'
    assert pod['status']['phase'] == 'Failed' and pod['status']['reason'] == 'OutOfnvidia.com/gpu'
    assert pod['status']['message'].startswith("Pod was rejected: Node didn't have enough resource: nvidia.com/gpu")
    assert 'containerStatuses' not in pod['status'] and kubelet.attempts[0].pid is None
    events = [e for e in cluster.list('v1/events') if e['involvedObject']['name'] == pod['metadata']['name']]
    assert [(e['type'], e['reason'], e['source']['component']) for e in events] == [('Warning', 'OutOfnvidia.com/gpu', 'kubelet')]


def test_a_denying_webhook_and_a_used_up_quota_refuse_creates_with_403(cluster: FakeCluster) -> None:
    with DenyingWebhook(cluster) as webhook, ObjectCountQuota(cluster, 'default', hard=1, used=0) as quota:
        with pytest.raises(ApiError) as denied:
            cluster.create(JOBS, job('policy', 'pass'))
        assert denied.value.status == 403 and denied.value.reason == 'Forbidden'
        assert 'admission webhook "validation.gatekeeper.sh" denied the request: [require-team-label]' in str(denied.value)
        webhook.denying = False
        cluster.create(JOBS, job('first', 'pass'))  # takes the quota's one Job
        with pytest.raises(ApiError) as exceeded:
            cluster.create(JOBS, job('second', 'pass'))
        assert exceeded.value.status == 403
        assert ('jobs.batch "second" is forbidden: exceeded quota: object-counts, requested: count/jobs.batch=1, '
                'used: count/jobs.batch=1, limited: count/jobs.batch=1') in str(exceeded.value)
        quota.hard = 2
        cluster.create(JOBS, job('second', 'pass'))
    assert webhook.denied == ['policy'] and quota.denied == ['second']


def test_a_pod_held_creating_waits_with_its_components_events_and_starts_once_released(cluster: FakeCluster, kubelet: Kubelet) -> None:
    kubelet.hold_creating('mount', reason='FailedAttachVolume')
    cluster.create(JOBS, job('mount', 'pass'))
    pod = cluster.wait_for(lambda: next(iter(cluster.list(PODS, label_selector='job-name=mount')), None), timeout=10)
    events = cluster.wait_for(lambda: [e for e in cluster.list('v1/events') if e['reason'] == 'FailedAttachVolume'], timeout=10)
    pod = cluster.get(PODS, 'default', pod['metadata']['name'])
    assert pod['status']['phase'] == 'Pending' and pod['spec']['nodeName']
    assert pod['status']['containerStatuses'][0]['state'] == {'waiting': {'reason': 'ContainerCreating'}}
    assert events[0]['source']['component'] == 'attachdetach-controller' and 'Multi-Attach error' in events[0]['message']
    assert events[0]['involvedObject']['name'] == pod['metadata']['name'] and kubelet.attempts[0].pid is None
    kubelet.release_creating()
    assert job_condition(cluster.wait_for_job('default', 'mount', timeout=20), 'Complete')


def test_env_comes_from_values_secrets_fields_and_the_test(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.create('v1/secrets', {'metadata': {'name': 'hub'}, 'data': {'token': base64.b64encode(b's3cr3t').decode()},
                                  'stringData': {'user': 'alice'}})
    env: list[dict[str, Any]] = [
        {'name': 'PLAIN', 'value': 'x'},
        {'name': 'EXPANDED', 'value': '$(PLAIN)-y'},
        {'name': 'TOKEN', 'valueFrom': {'secretKeyRef': {'name': 'hub', 'key': 'token'}}},
        {'name': 'USER', 'valueFrom': {'secretKeyRef': {'name': 'hub', 'key': 'user'}}},
        {'name': 'RANK', 'valueFrom': {'fieldRef': {
            'fieldPath': "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {'name': 'LATE', 'valueFrom': {'secretKeyRef': {'name': 'late', 'key': 'k'}}},
        {'name': 'MASTER_ADDR', 'value': 'ranks-0.ranks.default.svc'},
    ]
    script = '''
        import json, os, pathlib
        pathlib.Path(f"env-{os.environ['JOB_COMPLETION_INDEX']}.json").write_text(json.dumps(dict(os.environ)))
    '''

    def rewrite(job_body: dict[str, Any], index: int | None, env: dict[str, str]) -> dict[str, str]:
        return {**env, 'MASTER_ADDR': '127.0.0.1'}  # a headless Service's DNS name, made local

    with Kubelet(cluster, cwd=tmp_path, log_dir=tmp_path / 'logs', extra_env={'EXTRA': '1'},
                 rewrite_env=rewrite, termination_message_env=TERMINATION_MESSAGE) as kubelet:
        cluster.create(JOBS, job('envy', script, env=env, completionMode='Indexed', completions=2, parallelism=2))
        kubelet.wait_idle(timeout=20)  # blocked on the missing Secret "late": nothing runs, and that is idle
        assert kubelet.started == [('envy', 0), ('envy', 1)] and not list(tmp_path.glob('env-*'))
        waiting = cluster.list(PODS)[0]['status']['containerStatuses'][0]['state']['waiting']
        assert waiting == {'reason': 'CreateContainerConfigError', 'message': 'secret "late" not found'}

        cluster.create('v1/secrets', {'metadata': {'name': 'late'}, 'stringData': {'k': 'v'}})
        done = cluster.wait_for_job('default', 'envy')
    assert job_condition(done, 'Complete') and kubelet.started == [('envy', 0), ('envy', 1)]
    for index in (0, 1):
        seen = json.loads((tmp_path / f'env-{index}.json').read_text())
        assert {key: seen.get(key) for key in ('PLAIN', 'EXPANDED', 'TOKEN', 'USER', 'RANK', 'JOB_COMPLETION_INDEX',
                                               'LATE', 'EXTRA', 'MASTER_ADDR')} == {
            'PLAIN': 'x', 'EXPANDED': 'x-y', 'TOKEN': 's3cr3t', 'USER': 'alice', 'RANK': str(index),
            'JOB_COMPLETION_INDEX': str(index), 'LATE': 'v', 'EXTRA': '1', 'MASTER_ADDR': '127.0.0.1'}
        assert seen['PATH'].split(os.pathsep)[0] == os.path.dirname(sys.executable)
        assert 'PYTEST_CURRENT_TEST' not in seen  # the host's environment does not leak in
        assert seen['TERMINATION_MESSAGE_PATH']


def test_a_suspended_job_does_not_run_until_resumed(cluster: FakeCluster, kubelet: Kubelet) -> None:
    cluster.create(JOBS, job('later', 'pass', suspend=True))
    kubelet.wait_idle(timeout=20)
    suspended = cluster.get(JOBS, 'default', 'later')
    assert suspended is not None and job_condition(suspended, 'Suspended') and kubelet.started == []
    assert cluster.list(PODS) == []

    cluster.patch(JOBS, 'default', 'later', {'spec': {'suspend': False}})
    done = cluster.wait_for_job('default', 'later')
    assert job_condition(done, 'Complete') and kubelet.started == [('later', None)]
    resumed = [c for c in done['status']['conditions'] if c['type'] == 'Suspended']
    assert resumed[0]['status'] == 'False' and resumed[0]['reason'] == 'JobResumed'


def test_deleting_a_running_job_kills_its_process(cluster: FakeCluster, kubelet: Kubelet) -> None:
    cluster.create(JOBS, job('forever', 'import time; time.sleep(60)'))
    cluster.wait_for(lambda: [p for p in cluster.list(PODS) if p['status']['phase'] == 'Running'])
    [attempt] = kubelet.attempts
    assert attempt.pid is not None and attempt.running

    cluster.delete(JOBS, 'default', 'forever')
    cluster.wait_for(lambda: attempt.exit_code is not None, timeout=10)
    assert attempt.killed and attempt.exit_code == 128 + 15  # SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(attempt.pid, 0)
    assert cluster.list(PODS) == []  # garbage-collected with their Job
    kubelet.wait_idle(timeout=10)


# ---- what real clusters do to Jobs: scheduling, images, quotas, evictions, queues, TTLs ------------------------

def events(cluster: FakeCluster, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    """The Events about an object, as ``kubectl describe`` lists them."""
    selector = f'involvedObject.name={name}' + (f',reason={reason}' if reason else '')
    return cluster.list('v1/events', 'default', field_selector=selector)


def pods_of(cluster: FakeCluster, job_name: str) -> list[dict[str, Any]]:
    return cluster.list(PODS, label_selector=f'job-name={job_name}')


def waiting(pod: dict[str, Any]) -> dict[str, Any] | None:
    statuses = (pod.get('status') or {}).get('containerStatuses') or [{}]
    return statuses[0].get('state', {}).get('waiting')


def test_pods_that_fit_no_node_stay_pending_unschedulable(cluster: FakeCluster, tmp_path: Path) -> None:
    gpu_node = {'name': 'gpu-node-1', 'labels': {'pool': 'gpu'},
                'allocatable': {'nvidia.com/gpu': '8', 'cpu': '64', 'memory': '512Gi'},
                'taints': [{'key': 'nvidia.com/gpu', 'value': 'present', 'effect': 'NoSchedule'}]}
    tolerate = {'tolerations': [{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}]}
    gpus = {'limits': {'nvidia.com/gpu': '8'}, 'requests': {'cpu': '500m', 'memory': '64Gi'}}
    with Kubelet(cluster, cwd=tmp_path, log_dir=tmp_path / 'logs', nodes=[gpu_node], retry_interval=0.2) as kubelet:
        cluster.create(JOBS, job('huge', 'pass', pod=tolerate, resources={'limits': {'nvidia.com/gpu': '16'}}))
        cluster.create(JOBS, job('picky', 'pass', pod={**tolerate, 'nodeSelector': {'pool': 'cpu'}}))
        cluster.create(JOBS, job('untolerated', 'pass'))
        # Two ranks of 8 GPUs each on one 8-GPU node: the second waits for the first to finish.
        cluster.create(JOBS, job('ranks', 'import time; time.sleep(0.5)', pod=tolerate, resources=gpus,
                                 completionMode='Indexed', completions=2, parallelism=2))
        assert job_condition(cluster.wait_for_job('default', 'ranks'), 'Complete')
        kubelet.wait_idle(timeout=20)  # unschedulable pods block their Jobs: that is idle

        def scheduled(name: str) -> dict[str, Any] | None:
            [pod] = pods_of(cluster, name)
            return pod_condition(pod, 'PodScheduled')
        preempt = 'preemption: 0/1 nodes are available: 1'
        assert scheduled('huge') == {
            'type': 'PodScheduled', 'status': 'False', 'reason': 'Unschedulable', 'lastProbeTime': None,
            'lastTransitionTime': scheduled('huge')['lastTransitionTime'],  # type: ignore[index]
            'message': f'0/1 nodes are available: 1 Insufficient nvidia.com/gpu. {preempt} No preemption victims '
                       f'found for incoming pod.'}
        assert scheduled('picky')['message'] == (  # type: ignore[index]
            f"0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. {preempt} Preemption "
            f"is not helpful for scheduling.")
        assert scheduled('untolerated')['message'] == (  # type: ignore[index]
            f'0/1 nodes are available: 1 node(s) had untolerated taint {{nvidia.com/gpu: present}}. {preempt} '
            f'Preemption is not helpful for scheduling.')
        [huge] = pods_of(cluster, 'huge')
        assert huge['status']['phase'] == 'Pending' and 'nodeName' not in huge['spec']
        # One Event per pod, its count bumped by each retry of the scheduler.
        cluster.wait_for(lambda: events(cluster, huge['metadata']['name'])[0]['count'] >= 3)
        [event] = events(cluster, huge['metadata']['name'])
        assert (event['type'], event['reason'], event['source']['component']) == (
            'Warning', 'FailedScheduling', 'default-scheduler')
        assert event['message'] == scheduled('huge')['message']  # type: ignore[index]
        second = next(p for p in pods_of(cluster, 'ranks') if p['metadata']['annotations'][
            'batch.kubernetes.io/job-completion-index'] == '1')
        assert [c['status'] for c in cluster.history(PODS, 'default', second['metadata']['name'])[-1]['status'][
            'conditions']] == ['True'] and second['spec']['nodeName'] == 'gpu-node-1'
        assert any(v and pod_condition(v, 'PodScheduled') and pod_condition(v, 'PodScheduled')['status'] == 'False'
                   for v in cluster.history(PODS, 'default', second['metadata']['name']))

        kubelet.nodes.append({'name': 'cpu-node-1', 'labels': {'pool': 'cpu'}})  # a node joins
        done = cluster.wait_for_job('default', 'picky')
    assert job_condition(done, 'Complete') and pods_of(cluster, 'picky')[0]['spec']['nodeName'] == 'cpu-node-1'


def test_bad_and_invalid_images_wait_like_the_kubelet(cluster: FakeCluster, tmp_path: Path) -> None:
    image = 'ghcr.io/example/train:0.0.0-typo'
    with Kubelet(cluster, cwd=tmp_path, log_dir=tmp_path / 'logs', retry_interval=0.4) as kubelet:
        kubelet.bad_images = {image}
        cluster.create(JOBS, job('pull', 'pass', image=image))
        cluster.create(JOBS, job('upper', 'pass', image='ghcr.io/Example/train:1'))
        cluster.create(JOBS, job('spaces', 'pass', image='python 3.11'))
        pod = cluster.wait_for(lambda: [p for p in pods_of(cluster, 'pull') if (waiting(p) or {}).get('reason')
                                        == 'ImagePullBackOff'])[0]
        kubelet.wait_idle(timeout=20)
        name = pod['metadata']['name']
        not_found = ('rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/example/train:'
                     '0.0.0-typo": failed to resolve reference "ghcr.io/example/train:0.0.0-typo": '
                     'ghcr.io/example/train:0.0.0-typo: not found')
        states = [waiting(v) for v in cluster.history(PODS, 'default', name) if v and waiting(v)]
        assert states[:2] == [
            {'reason': 'ErrImagePull', 'message': not_found},
            {'reason': 'ImagePullBackOff', 'message': f'Back-off pulling image "{image}": ErrImagePull: {not_found}'}]
        seen = {(e['type'], e['reason'], e['message']) for e in events(cluster, name)}
        assert seen >= {('Normal', 'Pulling', f'Pulling image "{image}"'),
                        ('Warning', 'Failed', f'Failed to pull image "{image}": {not_found}'),
                        ('Warning', 'Failed', 'Error: ErrImagePull'),
                        ('Normal', 'BackOff', f'Back-off pulling image "{image}"'),
                        ('Warning', 'Failed', 'Error: ImagePullBackOff')}
        assert all(e['source'] == {'component': 'kubelet', 'host': 'fake-node'}
                   and e['involvedObject']['fieldPath'] == 'spec.containers{main}' for e in events(cluster, name))

        [upper], [spaces] = pods_of(cluster, 'upper'), pods_of(cluster, 'spaces')
        assert waiting(upper) == {'reason': 'InvalidImageName', 'message': (
            'Failed to apply default image tag "ghcr.io/Example/train:1": couldn\'t parse image name '
            '"ghcr.io/Example/train:1": invalid reference format: repository name (Example/train) must be '
            'lowercase')}
        assert waiting(spaces) == {'reason': 'InvalidImageName', 'message': (
            'Failed to apply default image tag "python 3.11": couldn\'t parse image name "python 3.11": invalid '
            'reference format')}
        assert {e['reason'] for e in events(cluster, upper['metadata']['name'])} == {'InspectFailed', 'Failed'}
        assert sorted(kubelet.started) == [('pull', None), ('spaces', None), ('upper', None)] and not any(
            a.pid for a in kubelet.attempts)

        kubelet.bad_images = set()  # the tag got pushed: the next pull succeeds
        assert job_condition(cluster.wait_for_job('default', 'pull'), 'Complete')


def test_missing_secrets_and_keys_wait_with_the_kubelets_messages(cluster: FakeCluster, kubelet: Kubelet) -> None:
    cluster.create('v1/secrets', {'metadata': {'name': 'hub'}, 'stringData': {'user': 'alice'}})
    cluster.create(JOBS, job('no-key', 'pass', env=[
        {'name': 'TOKEN', 'valueFrom': {'secretKeyRef': {'name': 'hub', 'key': 'token'}}}]))
    cluster.create(JOBS, job('no-map', 'pass', env=[
        {'name': 'X', 'valueFrom': {'configMapKeyRef': {'name': 'settings', 'key': 'x'}}}]))
    kubelet.wait_idle(timeout=20)
    [no_key], [no_map] = pods_of(cluster, 'no-key'), pods_of(cluster, 'no-map')
    assert waiting(no_key) == {'reason': 'CreateContainerConfigError',
                               'message': "couldn't find key token in Secret default/hub"}
    assert waiting(no_map) == {'reason': 'CreateContainerConfigError', 'message': 'configmap "settings" not found'}
    [event] = events(cluster, no_key['metadata']['name'], 'Failed')
    assert event['type'] == 'Warning' and event['message'] == "Error: couldn't find key token in Secret default/hub"

    cluster.patch('v1/secrets', 'default', 'hub', {'stringData': {'token': 't'}})
    assert job_condition(cluster.wait_for_job('default', 'no-key'), 'Complete')


def test_refused_pods_leave_the_job_active_with_failed_create_events(cluster: FakeCluster, tmp_path: Path) -> None:
    quota = 'exceeded quota: gpu-quota, requested: nvidia.com/gpu=8, used: nvidia.com/gpu=0, limited: nvidia.com/gpu=4'
    cluster.emulator['create v1/pods'][:1] << 403  # any refusal by the API server, here the next one, a bare 403
    with Kubelet(cluster, cwd=tmp_path, log_dir=tmp_path / 'logs', retry_interval=0.05) as kubelet:
        cluster.create(JOBS, job('forbidden', 'pass'))
        assert job_condition(cluster.wait_for_job('default', 'forbidden'), 'Complete')
        assert [e['message'] for e in events(cluster, 'forbidden', 'FailedCreate')] == [
            'Error creating: the server does not allow access to the requested resource (post pods)']

        kubelet.refuse_pods('quota', quota)
        cluster.create(JOBS, job('quota-1', 'pass', completionMode='Indexed', completions=2, parallelism=2))
        kubelet.wait_idle(timeout=20)  # no pods to run: idle
        # One Event per retry (each names another generated pod name), then client-go's aggregate, its count bumped.
        combined = '(combined from similar events): '
        cluster.wait_for(lambda: [e for e in events(cluster, 'quota-1', 'FailedCreate')
                                  if e['message'].startswith(combined) and e['count'] >= 2], timeout=20)
        failed_create = events(cluster, 'quota-1', 'FailedCreate')
        assert len(failed_create) == 11
        for event in failed_create:
            assert event['type'] == 'Warning' and event['source']['component'] == 'job-controller'
            assert event['involvedObject']['kind'] == 'Job'
            assert re.fullmatch(rf'({re.escape(combined)})?Error creating: pods "quota-1-0-[a-z0-9]{{5}}" is '
                                rf'forbidden: {re.escape(quota)}', event['message'])
        stuck = cluster.get(JOBS, 'default', 'quota-1')
        assert stuck is not None and 'active' not in stuck['status'] and 'conditions' not in stuck['status']
        assert pods_of(cluster, 'quota-1') == [] and kubelet.started == [('forbidden', None)]

        kubelet.allow_pods('quota')
        assert job_condition(cluster.wait_for_job('default', 'quota-1'), 'Complete')


POLICY = {'rules': [
    {'action': 'Ignore', 'onPodConditions': [{'type': 'DisruptionTarget'}]},
    {'action': 'FailJob', 'onExitCodes': {'containerName': 'main', 'operator': 'In', 'values': [3]}},
]}


def test_an_evicted_pod_is_replaced_when_the_policy_ignores_disruptions(
        cluster: FakeCluster, kubelet: Kubelet, tmp_path: Path) -> None:
    script = '''
        import pathlib, time
        if not pathlib.Path("ran-once").exists():
            pathlib.Path("ran-once").write_text("x")
            time.sleep(60)
    '''
    cluster.create(JOBS, job('drained', script, podFailurePolicy=POLICY, completionMode='Indexed', completions=1))
    cluster.wait_for(lambda: (tmp_path / 'ran-once').exists())
    attempt = kubelet.evict('drained', 0)  # a node drain: the Eviction API

    done = cluster.wait_for_job('default', 'drained')
    assert job_condition(done, 'Complete') and 'failed' not in done['status']  # not counted: backoffLimit is 0
    assert kubelet.started == [('drained', 0), ('drained', 0)]
    assert attempt.killed and attempt.exit_code == 143 and attempt.disruption == 'EvictionByEvictionAPI'
    assert cluster.get(PODS, 'default', attempt.pod) is None  # deleted by the eviction, once accounted
    last = [v for v in cluster.history(PODS, 'default', attempt.pod) if v][-1]
    assert last['status']['phase'] == 'Failed'
    assert last['status']['containerStatuses'][0]['state']['terminated']['exitCode'] == 143
    disruption = pod_condition(last, 'DisruptionTarget')
    assert disruption is not None and (disruption['status'], disruption['reason'], disruption['message']) == (
        'True', 'EvictionByEvictionAPI', 'Eviction API: evicting')


def test_a_lost_node_kills_its_pods_at_once_and_the_control_plane_marks_them_failed_and_disrupted(
        cluster: FakeCluster, kubelet: Kubelet, tmp_path: Path) -> None:
    """A spot VM reclaimed without a word: no SIGTERM, no grace period, no kubelet to report the container's end;
    the taint manager marks the pod, PodGC writes its phase, the replacement waits for a node."""
    script = '''
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, lambda *_: pathlib.Path("got-sigterm").write_text("x"))
        if not pathlib.Path("ran-once").exists():
            pathlib.Path("ran-once").write_text("x")
            time.sleep(60)
    '''
    cluster.create(JOBS, job('spot', script, podFailurePolicy=POLICY, completionMode='Indexed', completions=1))
    cluster.wait_for(lambda: (tmp_path / 'ran-once').exists())
    [attempt] = kubelet.lose_node('fake-node')

    replacement = cluster.wait_for(lambda: [p for p in pods_of(cluster, 'spot') if p['metadata']['name'] != attempt.pod])
    assert attempt.killed and attempt.node_lost and attempt.exit_code == 137 and attempt.grace == 0.0
    assert not (tmp_path / 'got-sigterm').exists()  # SIGKILL: nothing ran on its way out
    last = [v for v in cluster.history(PODS, 'default', attempt.pod) if v][-1]
    assert last['status']['phase'] == 'Failed' and 'running' in last['status']['containerStatuses'][0]['state']
    disruption = pod_condition(last, 'DisruptionTarget')
    assert disruption is not None and (disruption['reason'], disruption['message']) == (
        'DeletionByTaintManager', 'Taint manager: deleting due to NoExecute taint')
    assert [e['reason'] for e in events(cluster, attempt.pod, 'TaintManagerEviction')] == ['TaintManagerEviction']
    cluster.wait_for(lambda: cluster.get(PODS, 'default', attempt.pod) is None)  # deleted, once accounted
    scheduled = cluster.wait_for(lambda: pod_condition(cluster.get(PODS, 'default', replacement[0]['metadata']['name']) or {}, 'PodScheduled'))
    assert (scheduled['status'], scheduled['reason']) == ('False', 'Unschedulable')  # no node is left

    kubelet.nodes.append({'name': 'spot-2'})  # the node pool brings a new node
    done = cluster.wait_for_job('default', 'spot')
    assert job_condition(done, 'Complete') and 'failed' not in done['status']
    assert [a.node for a in kubelet.attempts] == ['fake-node', 'spot-2']


def test_an_eviction_gives_the_pod_its_grace_period_to_save_then_kills_it(cluster: FakeCluster, kubelet: Kubelet,
                                                                          tmp_path: Path) -> None:
    script = '''
        import pathlib, signal, time
        def save(*_):
            pathlib.Path("saved").write_text("x")
            time.sleep(60)  # saving takes longer than the grace period
        signal.signal(signal.SIGTERM, save)
        pathlib.Path("started").write_text("x")
        time.sleep(60)
    '''
    cluster.create(JOBS, job('drain', script, pod={'terminationGracePeriodSeconds': 1}, podFailurePolicy=POLICY,
                             completionMode='Indexed', completions=1))
    cluster.wait_for(lambda: (tmp_path / 'started').exists())
    attempt = kubelet.evict('drain', 0)
    cluster.wait_for(lambda: attempt.exit_code is not None, timeout=10)
    assert attempt.grace == 1.0 and attempt.exit_code == 137 and (tmp_path / 'saved').exists()  # SIGTERM, then SIGKILL
    assert pod_condition([v for v in cluster.history(PODS, 'default', attempt.pod) if v][-1], 'DisruptionTarget')[
        'reason'] == 'EvictionByEvictionAPI'  # type: ignore[index]
    with pytest.raises(ValueError, match='lose_node'):
        kubelet.evict('drain', 0, reason='DeletionByPodGC')
    cluster.delete(JOBS, 'default', 'drain', propagation='Background')


def test_pod_failure_policies_fail_the_job_or_the_index(cluster: FakeCluster, kubelet: Kubelet) -> None:
    kubelet.fail_next('bad-input', exit_code=3)
    cluster.create(JOBS, job('bad-input', 'pass', podFailurePolicy=POLICY, backoffLimit=5))
    failed = job_condition(cluster.wait_for_job('default', 'bad-input'), 'Failed')
    [pod] = pods_of(cluster, 'bad-input')
    assert failed is not None and failed['reason'] == 'PodFailurePolicy' and failed['message'] == (
        f'Container main for pod default/{pod["metadata"]["name"]} failed with exit code 3 matching FailJob rule '
        f'at index 1')

    on_condition = {'rules': [{'action': 'FailJob', 'onPodConditions': [{'type': 'DisruptionTarget'}]}]}
    cluster.create(JOBS, job('pressure', 'import time; time.sleep(60)', podFailurePolicy=on_condition,
                             backoffLimit=5))
    cluster.wait_for(lambda: [p for p in pods_of(cluster, 'pressure') if p['status']['phase'] == 'Running'])
    attempt = kubelet.evict('pressure', reason='TerminationByKubelet')  # node-pressure: SIGKILL, pod stays
    failed = job_condition(cluster.wait_for_job('default', 'pressure'), 'Failed')
    assert failed is not None and failed['message'] == (
        f'Pod default/{attempt.pod} has condition DisruptionTarget matching FailJob rule at index 0')
    evicted = cluster.get(PODS, 'default', attempt.pod)
    assert evicted is not None and evicted['status']['phase'] == 'Failed' and evicted['status']['reason'] == 'Evicted'
    assert attempt.exit_code == 137 and pod_condition(evicted, 'DisruptionTarget')['reason'] == (  # type: ignore[index]
        'TerminationByKubelet')
    assert [e['type'] for e in events(cluster, attempt.pod, 'Evicted')] == ['Warning']

    per_index = {'rules': [{'action': 'FailIndex', 'onExitCodes': {'operator': 'In', 'values': [3]}}]}
    kubelet.fail_next('shards', exit_code=3)
    cluster.create(JOBS, job('shards', 'pass', podFailurePolicy=per_index, completionMode='Indexed', completions=2,
                             backoffLimitPerIndex=2))
    done = cluster.wait_for_job('default', 'shards')
    assert job_condition(done, 'Failed')['reason'] == 'FailedIndexes'  # type: ignore[index]
    assert done['status']['failedIndexes'] == '0' and done['status']['completedIndexes'] == '1'
    assert sorted(kubelet.started[-2:]) == [('shards', 0), ('shards', 1)]  # index 0 not retried, despite its limit


def test_kueue_keeps_queued_jobs_suspended_until_admitted(cluster: FakeCluster, kubelet: Kubelet) -> None:
    kueue = cluster.start_kueue()
    queued = cluster.create(JOBS, job('queued', 'pass', labels={'kueue.x-k8s.io/queue-name': 'user-queue'}))
    assert queued['spec']['suspend'] is True  # Kueue's webhook
    free = cluster.create(JOBS, job('free', 'pass'))
    assert free['spec']['suspend'] is False
    cluster.wait_for_job('default', 'free')
    kubelet.wait_idle(timeout=20)
    waiting_job = cluster.get(JOBS, 'default', 'queued')
    suspended = job_condition(waiting_job or {}, 'Suspended')
    assert suspended is not None and (suspended['reason'], suspended['message']) == ('JobSuspended', 'Job suspended')
    assert kubelet.started == [('free', None)] and pods_of(cluster, 'queued') == []
    [created] = events(cluster, 'queued', 'CreatedWorkload')
    assert re.fullmatch(r'Created Workload: default/job-queued-[0-9a-f]{5}', created['message'])

    kueue.admit('default', 'queued')
    done = cluster.wait_for_job('default', 'queued')
    assert job_condition(done, 'Complete') and kubelet.started == [('free', None), ('queued', None)]
    assert [e['message'] for e in events(cluster, 'queued', 'Started')] == ['Admitted by clusterQueue cluster-queue']
    assert [e['message'] for e in events(cluster, 'queued', 'Resumed')] == ['Job resumed']


def test_kueue_preemption_suspends_an_admitted_job_and_requeues_it(cluster: FakeCluster, kubelet: Kubelet,
                                                                     tmp_path: Path) -> None:
    kueue = cluster.start_kueue(admit=True)
    script = '''
        import pathlib, time
        if not pathlib.Path("ran-once").exists():
            pathlib.Path("ran-once").write_text("x")
            time.sleep(60)
    '''
    cluster.create(JOBS, job('low', script, labels={'kueue.x-k8s.io/queue-name': 'user-queue'}))
    cluster.wait_for(lambda: (tmp_path / 'ran-once').exists())
    [victim] = kubelet.attempts
    kueue.preempt('default', 'low')

    cluster.wait_for(lambda: victim.exit_code is not None, timeout=10)
    assert victim.killed and victim.exit_code == 143  # the Job controller deleted it: SIGTERM
    cluster.wait_for(lambda: cluster.get(PODS, 'default', victim.pod) is None)
    last = [v for v in cluster.history(PODS, 'default', victim.pod) if v][-1]
    assert pod_condition(last, 'DisruptionTarget') is None  # a suspended Job's pods carry no disruption condition
    [stopped] = events(cluster, 'low', 'Stopped')
    assert re.fullmatch(r'Preempted to accommodate a workload \(UID: [0-9a-f-]{36}, JobUID: [0-9a-f-]{36}\) due to '
                        r'prioritization in the ClusterQueue', stopped['message'])
    kubelet.wait_idle(timeout=10)
    held = cluster.get(JOBS, 'default', 'low')
    assert held is not None and held['spec']['suspend'] is True and len(kubelet.attempts) == 1  # admit=True waits too

    kueue.admit('default', 'low')
    assert job_condition(cluster.wait_for_job('default', 'low'), 'Complete') and len(kubelet.attempts) == 2


def test_finished_jobs_are_deleted_after_their_ttl(cluster: FakeCluster, kubelet: Kubelet) -> None:
    cluster.create(JOBS, job('short-lived', 'pass', ttlSecondsAfterFinished=1))
    cluster.create(JOBS, job('kept', 'pass'))
    cluster.wait_for_job('default', 'short-lived')
    finished = time.monotonic()
    assert pods_of(cluster, 'short-lived') != []
    cluster.wait_for(lambda: cluster.get(JOBS, 'default', 'short-lived') is None, timeout=10)
    assert 0.5 <= time.monotonic() - finished <= 3
    assert pods_of(cluster, 'short-lived') == []  # with its pods
    assert cluster.get(JOBS, 'default', 'kept') is not None


def test_deleting_a_job_kills_all_its_pods(cluster: FakeCluster, kubelet: Kubelet) -> None:
    cluster.create(JOBS, job('pair', 'import time; time.sleep(60)', completionMode='Indexed', completions=2,
                             parallelism=2))
    cluster.wait_for(lambda: len([p for p in pods_of(cluster, 'pair') if p['status']['phase'] == 'Running']) == 2)
    with cluster.api_client() as client:
        kubernetes.client.BatchV1Api(client).delete_namespaced_job('pair', 'default', propagation_policy='Background')
    kubelet.wait_idle(timeout=10)
    assert all(a.killed and a.exit_code == 143 for a in kubelet.attempts)
    assert pods_of(cluster, 'pair') == []


# ---- Kopf ------------------------------------------------------------------------------------------------------

HANDLERS = '''
import kopf
import kubernetes.client

@kopf.on.create('example.com', 'v1alpha1', 'runs')
def start(name, namespace, uid, patch, **_):
    owner = {'apiVersion': 'example.com/v1alpha1', 'kind': 'Run', 'name': name, 'uid': uid,
             'controller': True}
    kubernetes.client.BatchV1Api().create_namespaced_job(namespace, {
        'metadata': {'name': f'{name}-train', 'ownerReferences': [owner], 'labels': {'run': name}},
        'spec': {'backoffLimit': 0, 'template': {'spec': {'restartPolicy': 'Never', 'containers': [
            {'name': 'train', 'image': 'app:test', 'command': ['python', '-c', 'print("trained")']}]}}},
    })
    patch.status['phase'] = 'Training'

@kopf.on.field('batch', 'v1', 'jobs', field='status.succeeded', labels={'run': kopf.PRESENT})
def finished(new, namespace, labels, **_):
    if new:
        kubernetes.client.CustomObjectsApi().patch_namespaced_custom_object_status(
            'example.com', 'v1alpha1', namespace, 'runs', labels['run'],
            {'status': {'phase': 'Succeeded'}})
'''


def phase(cluster: FakeCluster, name: str) -> str | None:
    run = cluster.get(RUNS, 'default', name)
    return None if run is None else (run.get('status') or {}).get('phase')


def test_an_operator_runs_end_to_end_and_survives_a_restart(
        cluster: FakeCluster, kubelet: Kubelet, tmp_path: Path) -> None:
    module = tmp_path / 'handlers.py'
    module.write_text(HANDLERS)

    with run_operator(cluster, module):
        cluster.create(RUNS, {'metadata': {'name': 'first'}, 'spec': {}})
        cluster.wait_for(lambda: phase(cluster, 'first') == 'Succeeded', timeout=20)

    cluster.create(RUNS, {'metadata': {'name': 'second'}, 'spec': {}})  # while the operator is down
    time.sleep(0.2)
    assert phase(cluster, 'second') is None

    with run_operator(cluster, module) as runner:
        cluster.wait_for(lambda: phase(cluster, 'second') == 'Succeeded', timeout=20)
    assert kubelet.started == [('first-train', None), ('second-train', None)]  # nothing handled twice
    assert "Handler 'start' succeeded" in runner.output

    cluster.delete(RUNS, 'default', 'first')
    assert cluster.get(JOBS, 'default', 'first-train') is None  # owned, so collected


def test_an_operator_can_be_a_callable_registering_handlers(cluster: FakeCluster) -> None:
    def register(registry: kopf.OperatorRegistry) -> None:
        @kopf.on.create('example.com', 'v1alpha1', 'runs', registry=registry)
        def seen(patch: kopf.Patch, **_: Any) -> None:
            patch.status['phase'] = 'Seen'

    default_registry = kopf.get_default_registry()
    cluster.create(RUNS, {'metadata': {'name': 'existing'}, 'spec': {}})
    with run_operator(cluster, register):
        cluster.wait_for(lambda: phase(cluster, 'existing') == 'Seen')
    assert kopf.get_default_registry() is default_registry  # the harness's registry does not leak
