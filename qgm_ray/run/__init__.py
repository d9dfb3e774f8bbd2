"""One training run, in parts: the plan and state record (plan), the straight loop (loop), the
metrics file (metrics_file), the checkpoint store (checkpoints), the recovery policy (recovery),
and the run that composes them with the run directory and the signals (runner).

The package imports nothing heavy by itself: a reader of metrics.csv (report, api) imports
`qgm_ray.run.metrics_file` without torch or the engines.
"""
