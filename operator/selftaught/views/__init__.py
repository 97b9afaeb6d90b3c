"""What people see of a run, read from the spec and the store: the plan and what it costs before
launch (`plan_text.py` prints `estimate.py`'s numbers), progress inside running stages (`live.py`,
which the operator's status shows too, and `display.py`'s bar or lines on a terminal), a run's
state from its store alone (`overview.py`, `selftaught status`), and its HTML report
(`html_report.py` with `plots.py`'s matplotlib figures, drawn only in a stage or a CLI process).

Views stand on the pipeline core and never run a stage; every executor may show them.
"""
