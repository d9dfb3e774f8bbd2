"""One training run, in parts: the plan and state record (plan), the straight loop (loop), the
metrics file (metrics_file), the checkpoint store (checkpoints), the recovery policy (recovery),
the data and checks before anything is written (prepare), a restore point taken (restore),
what a run's end says (outcome), and the run that composes them with the run directory and the
signals (run: Run, run()). Not `qgm_ray/run/`: `qgm_ray.run` is the Python API's function.

The package imports nothing heavy by itself: a reader of metrics.csv (report, api) imports
`qgm_ray.runner.metrics_file` without torch or the engines.
"""
