"""Experiment tracking: a run's parameters, stage figures, accuracy per iteration, report and best
judge, logged to MLflow and/or W&B through their own clients (docs/tracking.md).

Who logs: the stage process, after it published a stage (and, for the run's last stage, wrote
the report) — the one executor both the local runner and the operator start, in the images that
carry the clients, so the operator process imports no tracking client and a pod logs what it
made. Each `sync` logs every item of the run the store holds that the ledger has no record of
(`ledger.py`), so whatever an earlier stage could not log is logged by the next, and
`selftaught track` does the same after the fact. A train stage also hands its Trainer the
environment of its `report_to` callbacks (`training_environment`).

A server that is down never fails or stalls a run: each call is bounded by
`tracking.timeoutSeconds`, the first failure ends the try (one timeout per stage at most), and
what was left is recorded in the store (`failed.json`), which `selftaught status` and the
operator's status show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from selftaught.api.spec import SelfTaughtRun
from selftaught.store import Store
from selftaught.views.tracking.items import Item, run_items
from selftaught.views.tracking.ledger import Ledger, describe, failures

log = logging.getLogger("selftaught.tracking")

__all__ = ["Outcome", "describe", "failures", "sync", "training_environment"]


class Backend(Protocol):
    name: str

    def open(self, ledger: Ledger, store: Store) -> None: ...

    def log(self, item: Item, store: Store) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def training_environment(self, label: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class Target:
    """A configured backend before its client is imported: its name, where it logs (the ledger's
    key) and how to make it."""

    name: str
    where: dict[str, Any]
    make: Callable[[], Backend]


def targets(run: SelfTaughtRun) -> list[Target]:
    """The run's configured backends (their clients are imported by `make`, only when used)."""
    tracking = run.spec.tracking
    found: list[Target] = []
    if (mlflow := tracking.mlflow) is not None:

        def make_mlflow() -> Backend:
            from selftaught.views.tracking.mlflow_client import MlflowBackend

            return MlflowBackend(run, mlflow, tracking.timeout_seconds)

        found.append(Target("mlflow", {"trackingUri": mlflow.tracking_uri, "experiment": mlflow.experiment}, make_mlflow))
    if (wandb := tracking.wandb) is not None:

        def make_wandb() -> Backend:
            from selftaught.views.tracking.wandb_client import WandbBackend

            return WandbBackend(run, wandb, tracking.timeout_seconds)

        found.append(Target("wandb", {"project": wandb.project, "entity": wandb.entity, "mode": wandb.mode}, make_wandb))
    return found


@dataclass
class Outcome:
    """What one sync did, per backend: items logged now, and what is left with why."""

    logged: dict[str, list[str]] = field(default_factory=dict)
    left: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _error_text(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, ImportError):  # an image or environment without the clients
        text += ": install them with pip install 'selftaught[tracking]'"
    return f"{type(error).__name__}: {text[:300]}"


def sync(store: Store, run: SelfTaughtRun) -> Outcome:
    """Log whatever of the run is in its store and not yet logged, to every configured backend.
    Never raises: a backend that fails is recorded in the store and named in the outcome."""
    outcome = Outcome()
    configured = targets(run)
    if not configured:
        return outcome
    items = run_items(store, run)
    for target in configured:
        ledger = Ledger(store, target.name, target.where)
        done = ledger.logged()
        pending = [item for item in items if item.key not in done]
        outcome.logged[target.name], outcome.left[target.name] = [], []
        if not pending:
            continue
        current = ""
        try:
            backend = target.make()
            backend.open(ledger, store)
            for item in pending:
                current = item.key
                details = backend.log(item, store)
                ledger.record(item.key, **details)
                outcome.logged[target.name].append(item.key)
            backend.close()
        except Exception as error:  # the server, the network, credentials, a missing client: the run goes on
            left = [item.key for item in pending if item.key not in outcome.logged[target.name]]
            outcome.left[target.name], outcome.errors[target.name] = left, _error_text(error)
            log.warning("%s: could not log %s (%s); %d item(s) left for the next try", target.name, current or "the run", outcome.errors[target.name], len(left))
            try:
                ledger.fail(left, outcome.errors[target.name])
            except Exception:
                log.warning("the tracking failure could not be recorded in the store", exc_info=True)
            continue
        ledger.clear_failure()
    return outcome


def training_environment(store: Store, run: SelfTaughtRun, label: str) -> dict[str, str]:
    """The environment a train stage's Trainer needs to send its curves to every backend that
    answers (`SELFTAUGHT_REPORT_TO` names them, read by `engines/training.py`); a backend that
    does not answer gets no curves, never a failed stage."""
    env: dict[str, str] = {}
    reporting = []
    for target in targets(run):
        ledger = Ledger(store, target.name, target.where)
        try:
            backend = target.make()
            backend.open(ledger, store)
            env.update(backend.training_environment(label))
            backend.close()
        except Exception as error:
            log.warning("%s: the training curves of %s will not be logged (%s)", target.name, label, _error_text(error))
            continue
        reporting.append(target.name)
    if reporting:
        env["SELFTAUGHT_REPORT_TO"] = ",".join(reporting)
    return env
