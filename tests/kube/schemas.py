"""OpenAPI schemas as the API server applies them: a CRD's structural schema prunes unknown fields, fills
defaults and validates custom resources; built-in kinds are checked against their published (strict) schemas."""
from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import referencing

from .objects import Body

__all__ = ['builtin_validator', 'drop_field', 'format_field_path', 'jsonschema_of', 'prune_and_default', 'unknown_fields']


def prune_and_default(value: Any, schema: Mapping[str, Any], path: tuple[str | int, ...] = (),
                      pruned: list[tuple[str | int, ...]] | None = None) -> Any:
    """Drop undeclared fields and non-nullable nulls, then fill defaults — what the API server does to CRs.

    The paths of dropped unknown fields are appended to ``pruned`` (for ``fieldValidation`` warnings/errors).
    """
    if isinstance(value, dict) and (schema.get('type') == 'object' or 'properties' in schema):
        properties: Mapping[str, Any] = schema.get('properties') or {}
        extra = schema.get('additionalProperties')
        keep_unknown = extra is True or bool(schema.get('x-kubernetes-preserve-unknown-fields'))
        result: Body = {}
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is None:
                if keep_unknown:
                    result[key] = item
                elif pruned is not None:
                    pruned.append((*path, key))
                continue  # pruned — with only a warning header: a classic source of "my status field vanished"
            if item is None and not sub.get('nullable'):
                continue
            result[key] = prune_and_default(item, sub, (*path, key), pruned)
        for key, sub in properties.items():
            if key not in result and 'default' in sub:
                result[key] = prune_and_default(copy.deepcopy(sub['default']), sub)
        return result
    if isinstance(value, list) and isinstance(schema.get('items'), dict):
        return [prune_and_default(item, schema['items'], (*path, i), pruned) for i, item in enumerate(value)]
    return value


def format_field_path(path: Iterable[str | int]) -> str:
    """``spec.template.spec.containers[0].name``: how the API server names a field in messages."""
    text = ''
    for part in path:
        text += f'[{part}]' if isinstance(part, int) else (f'.{part}' if text else str(part))
    return text


@functools.cache
def builtin_validator(kubernetes_version: str, api_version: str, kind: str) -> Any:
    """kubernetes-validate's strict schema of a built-in kind, compiled once (``None`` if it has none).

    The same lookup as ``kubernetes_validate.validate``, which re-reads and recompiles the schemas on every call.
    """
    utils = kubernetes_validate.utils
    wanted = utils.major_minor(kubernetes_version)
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted][-1]
    directory = f'kubernetes-json-schema/v{version}-local-strict'
    group_version = re.sub(r'^([^./]*)(?:\.[^/]*)?/', r'\1-', api_version)
    try:
        schema = utils.schema_contents(f'{directory}/{kind.lower()}-{group_version}.json', kubernetes_version)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f'{directory}/_definitions.json', kubernetes_version)
    registry = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def unknown_fields(validator: Any, obj: Body) -> list[tuple[str | int, ...]]:
    """Paths of the fields a built-in kind's schema does not declare (``additionalProperties: false``)."""
    found = []
    for error in validator.iter_errors(obj):
        if error.validator == 'additionalProperties' and isinstance(error.instance, dict):
            known = set(error.schema.get('properties') or {})
            patterns = list(error.schema.get('patternProperties') or {})
            found += [(*error.absolute_path, key) for key in error.instance
                      if key not in known and not any(re.search(pattern, key) for pattern in patterns)]
    return found


def drop_field(obj: Any, path: tuple[str | int, ...]) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj.pop(path[-1], None)


def jsonschema_of(schema: Any, *, reject_unknown: bool = False) -> Any:
    """Turn an OpenAPI v3 CRD schema into plain JSON Schema: ``nullable`` becomes a ``null`` type,
    boolean ``exclusiveMinimum``/``exclusiveMaximum`` their numeric form. ``reject_unknown`` makes an
    undeclared (e.g. misspelt) field an error, where the API server would silently prune it."""
    if isinstance(schema, list):
        return [jsonschema_of(item, reject_unknown=reject_unknown) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: jsonschema_of(value, reject_unknown=reject_unknown)
              for key, value in schema.items() if not key.startswith('x-kubernetes-')}
    if schema.get('nullable') and isinstance(result.get('type'), str):
        result['type'] = [result['type'], 'null']
    result.pop('nullable', None)
    if schema.get('x-kubernetes-int-or-string'):
        result.setdefault('anyOf', [{'type': 'integer'}, {'type': 'string'}])
    for exclusive, bound in (('exclusiveMinimum', 'minimum'), ('exclusiveMaximum', 'maximum')):
        if isinstance(schema.get(exclusive), bool):  # OpenAPI 3.0 flag → JSON Schema's number form
            flag = result.pop(exclusive)
            if flag and bound in result:
                result[exclusive] = result.pop(bound)
    if reject_unknown and 'properties' in schema and not schema.get('x-kubernetes-preserve-unknown-fields'):
        result.setdefault('additionalProperties', False)
    return result
