"""The bounds a config's values keep besides their types: sizes only a typo reaches, the shape of
a run's name, the dataset options that count something."""
from __future__ import annotations

import re


# Upper limits that only a typo reaches (schedule.epochs=1e12 exhausted memory while planning).
MAX_EPOCHS = 100_000
MAX_EVALUATIONS = 100_000
# What a config may hold: each far above a real run, far below what takes memory or time to
# plan before the first round (a sweep lists its trials, a schedule its steps, up front).
MAX_NAME_LENGTH = 100        # runs/<name>-<timestamp> must stay a valid file name (255 bytes)
MAX_SEED = 2**32 - 1         # the largest seed every generator in use takes (numpy's legacy, networkx's)
MAX_MILESTONES = 100
MAX_ELASTIC_STEPS = 1_000
MAX_TRIALS = 10_000          # a sweep's trials: grid points x tune.num_samples

# `name` becomes a directory name under runs/: no separators, no `..`.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Dataset options that count something: a positive integer or the dataset cannot be made.
POSITIVE_INT_DATA_OPTIONS = ("num_samples", "num_features", "num_classes", "template_len", "final_seq_length")
