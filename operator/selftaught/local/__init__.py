"""The local executor, `selftaught run`: the planner's stages as processes on this machine.

`runner.py` runs them one stage after another (the same command a pod runs), `lease.py` keeps a
second runner off the same run, `subprocesses.py` makes sure no stage process outlives the runner,
`placement.py` decides which GPUs each process gets, and `machine.py` looks at the GPUs there are.
"""
