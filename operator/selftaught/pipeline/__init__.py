"""The pipeline core: what every executor (the local runner, the Kopf operator, the stage process
and the judge's server) shares — the stage table and stage references (`table.py`), the planner
(`planner.py`), the progress scan (`scan.py`), the run's store and spec acceptance
(`runstore.py`), how a stage process is started and the document it reads (`launch.py`), and
which checkpoint serves as the run's judge and the document a server reads (`served.py`).

The core imports neither `stages/` nor `engines/` nor any ML library, so the operator loads none
of them; what people see of a run is `views/`, what runs a stage is `stage_process.py`. Import
contracts in pyproject.toml check both, and the order of the modules here.
"""
