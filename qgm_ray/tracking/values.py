"""A run as trackers take it: its config as flat parameters, a metrics row as floats by column,
its end (summary.json's status) in each tracker's terms."""
from __future__ import annotations

import json


# A run's end (summary.json's status) in each tracker's terms: TensorBoard's hparams session
# status, MLflow's run status, W&B's exit code. A diverged run is a result, not a failure.
ENDS = {"completed": ("STATUS_SUCCESS", "FINISHED", 0), "diverged": ("STATUS_SUCCESS", "FINISHED", 0),
        "stopped": ("STATUS_ABORTED", "KILLED", 1), "failed": ("STATUS_FAILURE", "FAILED", 1)}


def flat_params(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {dotted.key: bool | int | float | str}: what hyper-parameter views
    take. A list, an empty mapping or null is its JSON text, so every key keeps a value."""
    out: dict = {}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, full + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[full] = value
        else:
            out[full] = json.dumps(value, default=str)
    return out


def row_values(row: dict, columns) -> dict:
    """{column: float} of a metrics row, `round` (the step) included; a column the row leaves
    empty (None or '') is not sent."""
    out = {}
    for c in columns:
        v = row.get(c)
        if v is None or v == "":
            continue
        out[c] = float(v)
    return out
