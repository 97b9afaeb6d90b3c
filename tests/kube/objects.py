"""Kubernetes objects as plain dicts: what every component of the cluster stamps on them and reads from them."""
from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

__all__ = ['NAME_ALPHABET', 'Body', 'job_condition', 'job_finished', 'pod_condition', 'timestamp']

Body = dict[str, Any]

NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'  # what the real API server uses for generateName (and the
# controllers for the names of the pods they create)


def timestamp() -> str:
    """Now, as metadata and status timestamps read (RFC 3339, whole seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def job_condition(job: Mapping[str, Any], type_: str) -> Body | None:
    """The Job's condition of that type if its status is "True" (e.g. ``Complete``, ``Failed``)."""
    for condition in (job.get('status') or {}).get('conditions') or []:
        if condition.get('type') == type_ and condition.get('status') == 'True':
            return condition  # type: ignore[no-any-return]
    return None


def job_finished(job: Mapping[str, Any]) -> bool:
    return job_condition(job, 'Complete') is not None or job_condition(job, 'Failed') is not None


def pod_condition(pod: Mapping[str, Any], type_: str) -> Body | None:
    """The Pod's condition of that type, whatever its status (e.g. ``PodScheduled``, ``DisruptionTarget``)."""
    for condition in (pod.get('status') or {}).get('conditions') or []:
        if condition.get('type') == type_:
            return condition  # type: ignore[no-any-return]
    return None
