"""The seal of Tune's state (qgm_ray.seal): `tune --resume` unpickles only a state this user's
qgm-ray wrote; the driver reseals it as Tune saves it."""
from __future__ import annotations

from pathlib import Path

from qgm_ray.tune.names import EXPERIMENT


SEAL = "tune.seal"    # the keyed digest of EXPERIMENT, next to it (see seal_state)
SEAL_EVERY_S = 1.0    # while Tune runs, the state is resealed at most this often


def seal_state(sweep_dir: Path) -> bool:
    """Seal Tune's state as it is now. Tune saves it between steps of its loop, and the driver
    reseals after each step (throttled), after fit and before an immediate exit: a sweep killed
    outright (SIGKILL) resumes unless Tune wrote in the last moment before."""
    from qgm_ray import seal
    state = Path(sweep_dir) / EXPERIMENT
    if not state.is_dir():
        return False
    try:
        key = seal.load_key(create=False)
    except seal.SealError:
        return False
    return seal.seal(state, Path(sweep_dir) / SEAL, key)


def verify_state(sweep_dir: Path) -> None:
    """Before Tune unpickles anything of a sweep to resume: SealError (one line) unless its state
    is what this user's qgm-ray sealed."""
    from qgm_ray import seal
    seal.verify(Path(sweep_dir) / EXPERIMENT, Path(sweep_dir) / SEAL, f"--resume {sweep_dir}")
