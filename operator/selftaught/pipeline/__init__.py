"""The pipeline core: the vocabulary and the logic that both executors (the local runner and the
Kopf operator) share — the stage table and stage references, the planner, the progress scan,
the run's store and spec acceptance, how a stage process is started and what it reads — and what
people see of a run: its cost estimate, progress inside running stages, and its report.

Nothing here imports `stages/` or `engines/` at module level, so the operator loads none of the
ML code; only `pipeline.process` (the stage process itself) reaches down into `stages/`, and
`pipeline.plan` (for `selftaught plan` and `run`, never the operator) reads a local checkpoint's
size with `engines/weights.py`.
"""
