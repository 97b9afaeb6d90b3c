"""Logging a run to Weights & Biases through the `wandb` client: one W&B run per selftaught run,
resumed by its id by every stage process that logs (`resume="allow"`), each metric at the step of
its iteration (`define_metric` with `iteration` as its step), the report and the best judge as
artifacts. In offline mode each process writes its own folder under WANDB_DIR, all with the
run's id, which `wandb sync` uploads as one run."""

from __future__ import annotations

import itertools
import secrets
import tempfile
from pathlib import Path
from typing import Any

from selftaught.api.spec import SelfTaughtRun, WandbTracking
from selftaught.store import Store
from selftaught.views.tracking.items import Item
from selftaught.views.tracking.ledger import Ledger


class WandbBackend:
    name = "wandb"

    def __init__(self, run: SelfTaughtRun, settings: WandbTracking, timeout: int) -> None:
        self.run = run
        self.settings = settings
        self.timeout = timeout
        self.run_id = ""
        self.remote: Any = None

    def open(self, ledger: Ledger, store: Store) -> None:
        import wandb

        recorded = ledger.remote_run() or ledger.claim_run({"runId": secrets.token_hex(6)})  # W&B ids: [a-z0-9]
        self.run_id = recorded["runId"]
        self.remote = wandb.init(
            project=self.settings.project,
            entity=self.settings.entity,
            id=self.run_id,
            name=self.run.metadata.name,
            resume="allow",
            mode=self.settings.mode,
            reinit="create_new",
            settings=wandb.Settings(init_timeout=float(self.timeout), silent=True, console="off", x_disable_stats=True),
        )
        self.remote.define_metric("iteration")
        self.remote.define_metric("*", step_metric="iteration")

    def log(self, item: Item, store: Store) -> dict[str, Any]:
        import wandb

        if item.params:
            self.remote.config.update(item.params, allow_val_change=True)
        for step, metrics in itertools.groupby(sorted(item.metrics, key=lambda m: m.step), key=lambda m: m.step):
            self.remote.log({"iteration": step, **{m.name: m.value for m in metrics}})
        if item.artifacts or item.documents:
            artifact = wandb.Artifact(f"{self.run.metadata.name}-{item.key.replace('.', '-')}", type="report" if item.final else "evaluation")
            with tempfile.TemporaryDirectory(prefix="selftaught-track-") as scratch:
                for key, path in item.artifacts:
                    local = Path(scratch) / path
                    local.parent.mkdir(parents=True, exist_ok=True)
                    store.download_file(key, local)
                    artifact.add_file(str(local), name=path)
                for path, content in item.documents:
                    local = Path(scratch) / path
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text(content)
                    artifact.add_file(str(local), name=path)
                self.remote.log_artifact(artifact)  # uploaded by W&B's own process; offline: kept in the run's folder
        if item.model is not None:
            model = item.model
            artifact = wandb.Artifact(f"{self.run.metadata.name}-judge", type="model", metadata={"source": model.source, **model.tags})
            artifact.add_reference(model.source if "://" in model.source else f"file://{model.source}", checksum=False)
            self.remote.log_artifact(artifact, aliases=["best"])
            self.remote.summary.update({"best.iteration": model.iteration, "best.source": model.source})
        if item.final:
            self.remote.summary.update({"finished": True})
        return {}

    def close(self) -> None:
        if self.remote is not None:
            self.remote.finish()
            self.remote = None

    def training_environment(self, label: str) -> dict[str, str]:
        """What points the Trainer's W&B callback (`report_to: wandb`) at this run: its loss (and
        a GRPO trainer's reward) per step, grouped under the train stage's name."""
        env = {"WANDB_PROJECT": self.settings.project, "WANDB_RUN_ID": self.run_id, "WANDB_RESUME": "allow", "WANDB_MODE": self.settings.mode}
        if self.settings.entity:
            env["WANDB_ENTITY"] = self.settings.entity
        return env
