"""The pipeline core: the vocabulary and the logic that both executors (the local runner and the
Kopf operator) share — the stage table and stage references, the planner, the progress scan,
the run's store and spec acceptance, and how a stage process is started and what it reads.

Nothing here imports `stages/` or `engines/` at module level, so the operator loads none of the
ML code; only `pipeline.process` (the stage process itself) reaches down into `stages/`.
"""
