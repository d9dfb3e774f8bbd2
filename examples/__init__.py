"""Bring your own method: a rule, a model, a dataset and a graph written outside qgm_ray/,
referenced from a config as "examples.<module>:<name>" (README, "Bring your own method")."""
