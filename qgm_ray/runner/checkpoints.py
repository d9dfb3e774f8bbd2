"""checkpoints/round_<t>.pt: the restore points of a run. The store saves, lists, iterates and
validates them; which one a run goes on from is decided here too (the newest that is this run's).

A checkpoint is one torch file: the run's state record, the config's replay fingerprint and the
engine's state. Saved through a temporary file (a reader never sees half of one); loaded with
`weights_only` (a checkpoint cannot run code); only the newest `fault_tolerance.keep` stay.
"""
from __future__ import annotations

import hashlib
import numbers
import re
from pathlib import Path
from typing import Callable, Iterator, Optional

from qgm_ray import errors
from qgm_ray.config import Config
from qgm_ray.outputs import OutputError, RunDir, WriteError, atomic_write
from qgm_ray.runner.plan import RunState

# Keys whose change makes a checkpoint meaningless for --resume (replay would differ).
REPLAY_KEYS = ("seed", "data", "model", "topology", "algorithm", "schedule", "elastic")
# Replayed too, fingerprinted only where the run uses it (compression.op other than none), so
# the checkpoints of runs written before the section existed stay resumable.
REPLAY_KEYS_WHERE_USED = ("compression",)
DIFFERENT_CONFIG = "it was written with a different config"

_NAME = re.compile(r"^round_(\d+)\.pt$")


def replay_fingerprint(cfg: Config) -> str:
    d = cfg.to_dict()
    if cfg.algorithm.slowmo_tau == 0:
        # SlowMo off: its keys change nothing, and leaving them out keeps the checkpoints of
        # runs written before they existed resumable.
        for key in ("slowmo_tau", "slowmo_beta", "slowmo_alpha"):
            d["algorithm"].pop(key)
    if not d["algorithm"].get("options"):
        d["algorithm"].pop("options", None)   # as for SlowMo: runs from before the key stay resumable
    text = repr([(k, d[k]) for k in REPLAY_KEYS])
    if cfg.compression.op != "none":
        text += repr([(k, d[k]) for k in REPLAY_KEYS_WHERE_USED])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def round_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


class CheckpointStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @classmethod
    def of(cls, run_dir: str | Path) -> "CheckpointStore":
        """The store of a run directory."""
        return cls(RunDir(run_dir).checkpoints)

    def path(self, round_: int) -> Path:
        return self.directory / f"round_{round_:08d}.pt"

    def save(self, round_: int, payload: dict, keep: int) -> Path:
        import torch
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError(self.directory, e) from None
        path = self.path(round_)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:   # a file object: a full disk surfaces as its OSError
                torch.save(payload, f)
        atomic_write(path, write)
        for old in self.list()[:-keep]:
            try:
                old.unlink()
            except OSError:
                pass
        return path

    def list(self) -> list[Path]:
        """Every checkpoint file, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.iterdir() if _NAME.match(p.name)), key=round_of)

    def newest_round(self) -> Optional[int]:
        kept = self.list()
        return round_of(kept[-1]) if kept else None

    def check(self) -> None:
        """Before a resume writes anything: every checkpoint is a file."""
        for p in self.list():
            if not p.is_file():
                raise OutputError(f"{p} is not a checkpoint file (a directory?); move it away")

    def iterate(self, log: Callable[[str], None] = print) -> Iterator[tuple[Path, dict]]:
        """(path, payload) of every checkpoint that loads, newest first; a truncated or corrupt
        one is reported and skipped."""
        import torch
        for path in reversed(self.list()):
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable file means: fall back
                log(f"checkpoint {path} is unreadable ({errors.described(e)}); "
                    f"falling back to the previous one")
                continue
            yield path, payload

    def latest(self, log: Callable[[str], None] = print) -> Optional[dict]:
        """The newest checkpoint that loads."""
        return next((payload for _, payload in self.iterate(log)), None)

    def valid(self, fingerprint: str, total_rounds: int, log: Callable[[str], None] = print,
              problems: Optional[list] = None) -> Iterator[tuple[Path, dict]]:
        """This run's checkpoints that load and hold what they should, newest first. One that
        loads but holds the wrong content (another config's, no engine state) is skipped, with
        a line, and the previous one is tried; `problems` collects why."""
        for path, ckpt in self.iterate(log):
            why = problem(ckpt, fingerprint, total_rounds)
            if why is None:
                yield path, ckpt
                continue
            if problems is not None:
                problems.append(why)
            log(f"checkpoint {path} cannot be used: {why}; falling back to the previous one")


def problem(ckpt, fingerprint: str, total_rounds: int) -> Optional[str]:
    """Why a checkpoint that loads cannot be this run's restore point (None: it can)."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("engine"), dict):
        return "it holds no engine state"
    if ckpt.get("fingerprint") != fingerprint:
        return DIFFERENT_CONFIG
    try:
        state = RunState.from_checkpoint(ckpt)
    except (TypeError, ValueError) as e:
        return f"its run record is malformed ({e})"
    if not (isinstance(state.round, numbers.Integral) and 0 <= state.round <= total_rounds
            and isinstance(state.bytes_sent, numbers.Integral)
            and all(isinstance(x, numbers.Real) for x in state.pending_losses)
            and all(a is None or isinstance(a, numbers.Real)
                    for a in (state.final_test_accuracy, state.best_test_accuracy))):
        return "its run record is malformed"
    return None
