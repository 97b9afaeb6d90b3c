"""The judge's server in a pass: the actor beside `serving.py`'s pure builders and decision.

It looks at the server's Deployment (as the watch last saw it), asks `decide_serving` what to do,
does it (create, replace or delete the Deployment and its Service; look at pods that are not
ready) and answers what `status.serving` should say and when to look again. It writes no status:
the reconciler does, in its one status write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from selftaught.api.spec import SelfTaughtRun
from selftaught.api.status import Phase, ServingStatus
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import owned_by, run_owner
from selftaught.controller.kube import InvalidObject, Kube, api_message, server_problem
from selftaught.controller.report import Reporter
from selftaught.controller.serving import build_service, decide_serving, endpoint, pod_ready, serve_labels, serve_name, wanted_choice
from selftaught.errors import StorageUnavailable
from selftaught.pipeline.scan import Progress, iteration_summaries
from selftaught.pipeline.served import ALL_ITERATIONS, Choice, NothingToServe, choose

FAILED = "the run failed: nothing new is served until it succeeds"
#: how often a server that is not ready yet has its pods looked at (they are not watched), at
#: most: a shorter resync (`SELFTAUGHT_RESYNC_SECONDS`) looks sooner
SERVER_LOOK_SECONDS = 15.0

#: (namespace, run name) -> that run's judge's server Deployment, as the watch last saw it
ServerSource = Callable[[str, str], list[dict[str, Any]]]
Serving = tuple[ServingStatus | None, float | None]  # what status.serving says, and when to look again


class ServingActor:
    def __init__(self, kube: Kube, config: OperatorConfig, report: Reporter, servers: ServerSource):
        self.kube, self.config, self.report, self.servers = kube, config, report, servers

    def running(self, obj: dict[str, Any], run: SelfTaughtRun, progress: Progress, *, succeeded: bool, failed: bool = False) -> Serving:
        """Put the server in place, roll it out, or remove it. The choice is read from the store's
        numbers once the run succeeded."""
        previous = (obj.get("status") or {}).get("serving")
        if not run.spec.serve.enabled and not previous and not self._server_of(obj):
            return None, None
        choice, problem = None, FAILED if failed else None
        if succeeded and run.spec.serve.enabled:
            try:
                choice = choose(iteration_summaries(progress, limit=ALL_ITERATIONS), run.spec.models.seed, run.spec.serve.iteration)
            except NothingToServe as error:
                problem = str(error)
        return self._act(obj, run, choice, problem)

    def finished(self, obj: dict[str, Any], run: SelfTaughtRun, scan: Callable[[SelfTaughtRun], Progress]) -> Serving:
        """A finished run's server, between edits: kept in place (a Deployment deleted by hand
        comes back). The choice is the one the status records (or, where none is, read from the
        store once, with `scan`)."""
        status = obj.get("status") or {}
        if status.get("phase") != Phase.SUCCEEDED:
            return self._act(obj, run, None, FAILED)
        if (choice := wanted_choice(run, self._server_of(obj), status.get("serving"))) is not None or not run.spec.serve.enabled:
            return self._act(obj, run, choice, None)
        try:
            progress = scan(run)
        except StorageUnavailable as error:
            return ServingStatus(message=f"cannot read the run's store to choose a checkpoint: {error}"), 15.0
        return self.running(obj, run, progress, succeeded=True)

    def _server_of(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        return next((d for d in self.servers(meta["namespace"], meta["name"]) if owned_by(d, meta.get("uid"))), None)

    def _act(self, obj: dict[str, Any], run: SelfTaughtRun, choice: Choice | None, problem: str | None) -> Serving:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], serve_name(meta["name"])
        observed = self._server_of(obj)
        had_status = bool((obj.get("status") or {}).get("serving"))
        pods = self.kube.server_pods(namespace, serve_labels(meta["name"])) if observed is not None and run.spec.serve.enabled else []
        waiting = server_problem([pod for pod in pods if not pod_ready(pod)])
        action = decide_serving(
            run, self.config, choice=choice, problem=problem, observed=observed, had_status=had_status, pods=pods, waiting=waiting
        )  # fmt: skip
        if action.delete:
            self.kube.delete_deployment(namespace, name)
            self.kube.delete_service(namespace, name)
            if observed is not None:
                self.report.event(obj, "Normal", "ServingStopped", f"removed the judge's server {name} (serve.enabled is false)")
        if action.apply is None:
            if not action.unsettled or observed is None:
                return action.status, None
            # loading (minutes for a big checkpoint), rolling out, or stuck: pods are not watched,
            # so look at them now and again until the server serves what it should
            if waiting is not None:
                self.report.server_waiting(obj, observed, waiting)
            return action.status, min(SERVER_LOOK_SECONDS, self.config.resync_seconds)
        deployment = action.apply
        kopf.append_owner_reference(deployment, owner=run_owner(obj))
        service = build_service(run)
        kopf.append_owner_reference(service, owner=run_owner(obj))
        try:
            if observed is None:
                self.kube.create_deployment(deployment)
            else:
                self.kube.replace_deployment(deployment, observed["metadata"].get("resourceVersion"))
            self.kube.create_service(service)
        except InvalidObject as error:  # refused every time until the spec changes: say so
            self.report.event(obj, "Warning", "ServingRefused", f"the API server refused the judge's server {name}: {error}")
            return ServingStatus(message=f"InvalidServer: the API server refused the Deployment or Service {name}: {error}"), None
        except ApiException as error:
            if error.status == 409:
                raise  # a stale read: the pass reads the run again and retries
            detail = api_message(error)
            self.report.event(obj, "Warning", "ServingFailed", f"cannot put the judge's server {name} in place: {detail}")
            return ServingStatus(message=f"retrying: cannot put the judge's server in place: {detail}"), 10.0
        served = action.status
        verb = "started" if observed is None else "rolling out"
        self.report.event(obj, "Normal", "ServingStarted" if observed is None else "ServingUpdated", f"{verb} the judge's server {name}: {served.message if served else ''}; endpoint {endpoint(run)}")
        return served, None
