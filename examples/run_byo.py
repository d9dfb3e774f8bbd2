"""The Python API on examples/byo.yaml: one run on each engine, then a sweep over the rule's
own knob. Run from the repository root, with qgm-ray installed (`make` or `pip install -e .`):
`python examples/run_byo.py`; byo.yaml names its plug-ins `examples.<module>:<attr>`, found
from the working directory."""
from pathlib import Path

import qgm_ray

if __name__ == "__main__":
    config = Path(__file__).with_name("byo.yaml")
    local = qgm_ray.run(config, ["backend=local", "progress=false"], log=None)
    on_ray = qgm_ray.run(config, {"backend": "ray", "progress": False}, log=None)
    print(local.history[["round", "train_loss", "test_accuracy"]].to_string(index=False))
    same = local.history["test_accuracy"].equals(on_ray.history["test_accuracy"])
    print(f"local {local.final_test_accuracy:.4f}, ray {on_ray.final_test_accuracy:.4f}, identical: {same}")
    sweep = qgm_ray.sweep(config, ["progress=false"], log=None)
    print(sweep.results[["algorithm.options.clip", "final_test_accuracy", "status"]].to_string(index=False))
