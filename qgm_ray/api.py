"""The Python API: load a config, run it, sweep it, read the results back.

    import qgm_ray
    result = qgm_ray.run("examples/byo.yaml", ["backend=local"], output_dir="runs/byo")
    result.summary["final_test_accuracy"], result.history.tail(), result.run_dir

    sweep = qgm_ray.sweep("examples/byo.yaml", {"tune.grid": {"algorithm.options.clip": [0.5, 1.0]}})
    sweep.results[["algorithm.options.clip", "final_test_accuracy"]]

`run` and `sweep` are what `python main.py` and `python main.py tune` call (runner.run.run,
tune.run_sweep): same outputs, same numbers. A config is a YAML path, a dict (nested like
the YAML, or with dotted keys) or a Config; overrides are `"a.b=VALUE"` strings (VALUE
parsed as YAML, as `--set`) or a {dotted key: value} dict.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from qgm_ray.config import Config, config_dict, from_dict, layered, parse_override, read_yaml, set_dotted, _merge
from qgm_ray import errors
from qgm_ray.errors import ConfigError

ConfigLike = Union[str, Path, Mapping[str, Any], Config, None]
Overrides = Union[Sequence[str], Mapping[str, Any], None]


def _override_values(overrides: Overrides) -> dict:
    """{dotted key: value} from `"a.b=VALUE"` strings or a mapping; anything else is one
    ConfigError line naming what was given."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        bad = [key for key in overrides if not isinstance(key, str) or not key.strip()]
        if bad:
            raise ConfigError(f"overrides: keys must be dotted config keys (strings such as 'data.alpha'), "
                              f"got {bad[0]!r}")
        return dict(overrides)
    if isinstance(overrides, str):   # one "a.b=c" string, not its characters
        overrides = [overrides]
    if isinstance(overrides, (bytes, bytearray)) or not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides must be a list of 'key=value' strings or a {{dotted key: value}} dict, "
                          f"got {type(overrides).__name__}")
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"overrides: each item must be a 'key=value' string (as --set), "
                              f"got {type(item).__name__} {_short(item)}")
    return dict(parse_override(item) for item in overrides)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _nested(d: Mapping[str, Any]) -> dict:
    """{"data.alpha": 1, "model": {...}} -> nested dict (dotted keys set one by one)."""
    out: dict = {}
    for key, value in d.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        if "." in key:
            set_dotted(out, key, copy.deepcopy(value))
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], dict(value))
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out


def load_config(path_or_dict: ConfigLike = None, overrides: Overrides = ()) -> Config:
    """A validated Config: the built-in defaults <- a YAML file, a dict or a Config <- overrides.

    None means the built-in defaults: the run `python main.py` makes. Raises ConfigError (one
    line naming the key) on bad input.
    """
    values = _override_values(overrides)
    if path_or_dict is None or isinstance(path_or_dict, (str, Path)):
        given = read_yaml(path_or_dict) if path_or_dict is not None else {}
    elif isinstance(path_or_dict, Config):
        given = path_or_dict.to_dict()
    elif isinstance(path_or_dict, Mapping):
        given = _nested(path_or_dict)
    else:
        raise ConfigError(f"config must be a YAML path, a dict or a qgm_ray.Config, got {type(path_or_dict).__name__}")
    return from_dict(layered(given, values))


@dataclass
class RunResult:
    """What one run left behind: its summary.json, its directory and its config."""
    summary: dict
    run_dir: Path
    config: Optional[Config] = None
    _history: Any = field(default=None, repr=False)

    @property
    def history(self):
        """metrics.csv as a pandas DataFrame (one row per evaluation); read once."""
        if self._history is None:
            from qgm_ray.runner.metrics_file import MetricsFile
            self._history = MetricsFile.of(self.run_dir).frame()
        return self._history

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def final_test_accuracy(self) -> Optional[float]:
        return self.summary.get("final_test_accuracy")

    def __repr__(self) -> str:
        acc = self.final_test_accuracy
        return (f"RunResult(status={self.status!r}, final_test_accuracy="
                f"{'n/a' if acc is None else f'{acc:.4f}'}, rounds={self.summary.get('rounds')}, "
                f"run_dir='{self.run_dir}')")


def _directory(value: Any, what: str, allow_none: bool = False) -> Optional[Path]:
    """`value` as a Path, or one ConfigError line saying what `what` takes."""
    if value is None and allow_none:
        return None
    if isinstance(value, Path) or (isinstance(value, str) and value.strip()):
        return Path(value)
    raise ConfigError(f"{what} must be a directory path (a str or pathlib.Path{' or None' if allow_none else ''}), "
                      f"got {_short(value)}")


def load_run(run_dir: Union[str, Path]) -> RunResult:
    """A finished (or stopped) run directory read back: summary.json, metrics.csv, config.yaml.
    A path that is not a run directory, or a summary.json that is not a JSON object, is one
    ConfigError line."""
    path = _directory(run_dir, "load_run(run_dir)")
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(f"{path}: not a run directory (no summary.json)")
    try:
        summary = json.loads(summary_path.read_bytes())
    except OSError as e:
        raise ConfigError(f"{summary_path}: cannot read it: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
        raise ConfigError(f"{summary_path}: not a summary qgm-ray wrote (not JSON: {errors.first_line(e)})") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{summary_path}: not a summary qgm-ray wrote (a JSON {type(summary).__name__}, "
                          f"not an object)")
    cfg = from_dict(config_dict(path / "config.yaml")) if (path / "config.yaml").is_file() else None
    return RunResult(summary=summary, run_dir=path, config=cfg)


def run(config: ConfigLike, overrides: Overrides = (), output_dir: Union[str, Path, None] = None, *,
        resume: bool = False, on_eval: Optional[Callable[[dict], None]] = None,
        log: Optional[Callable[[str], None]] = print, progress: Optional[bool] = None) -> RunResult:
    """Train one run (local engine or Ray, per `backend`) and return its RunResult.

    output_dir: default `config.output_dir`, else runs/<name>-<timestamp>/. resume=True
    continues the run in output_dir from its last checkpoint (its own config.yaml; `config`
    may then be None). on_eval(row) sees every metrics row as it is written. log: where the
    progress lines go (None: nowhere). progress: the progress bar (default: the config's).
    Ctrl-C / SIGTERM stop at a round boundary with a checkpoint (status "stopped").
    """
    from qgm_ray.runner import run as runner

    output_dir = _directory(output_dir, "run(output_dir=...)", allow_none=True)
    if resume:
        if output_dir is None:
            raise ConfigError("run(resume=True) needs output_dir: the run directory to continue")
        run_path = Path(output_dir)
        if not (run_path / "config.yaml").is_file():
            raise ConfigError(f"resume {run_path}: not a run directory (no config.yaml)")
        cfg = load_config(run_path / "config.yaml", overrides)
    else:
        cfg = load_config(config, overrides)
    if progress is not None:
        cfg = dataclasses.replace(cfg, progress=bool(progress))
    summary = runner.run(cfg, output_dir, resume=resume, on_eval=on_eval, log=log or (lambda _msg: None))
    return RunResult(summary=summary, run_dir=Path(summary["run_dir"]), config=cfg)


@dataclass
class SweepResult:
    """What a sweep left behind: results.csv as a DataFrame (a row per trial), the sweep
    directory (trials/<trial>/ are ordinary run directories), and whether every trial ran."""
    results: Any
    sweep_dir: Path
    complete: bool
    files: list = field(default_factory=list)
    wall_seconds: float = 0.0

    def trial(self, name_or_index: Union[str, int]) -> RunResult:
        """One trial's RunResult, by its results.csv row or its trial name."""
        row = (self.results.iloc[name_or_index] if isinstance(name_or_index, int)
               else self.results.loc[self.results["trial"] == name_or_index].iloc[0])
        return load_run(self.sweep_dir / row["trial_dir"])


def release_actors() -> None:
    """Kill the actors a run with `ray.reuse_actors: true` kept for the next run of this
    process; their CPUs go back to Ray. Nothing to do when none is kept."""
    if "ray" not in sys.modules:   # no run of this process used Ray
        return
    from qgm_ray.engine import crew
    crew.release()


def sweep(config: ConfigLike, overrides: Overrides = (), output_dir: Union[str, Path, None] = None, *,
         resume_dir: Union[str, Path, None] = None, log: Optional[Callable[[str], None]] = print) -> SweepResult:
    """Run the config's `tune:` sweep on Ray Tune (or continue one: resume_dir) and return its
    SweepResult. Grids may name any dotted key, a plug-in's own options included
    (`algorithm.options.clip`)."""
    from qgm_ray import tune as qtune

    output_dir = _directory(output_dir, "sweep(output_dir=...)", allow_none=True)
    resume_dir = _directory(resume_dir, "sweep(resume_dir=...)", allow_none=True)
    cfg = load_config(config, overrides) if resume_dir is None else load_config(resume_dir / "config.yaml")
    out = qtune.run_sweep(cfg, output_dir=output_dir, resume_dir=resume_dir, log=log or (lambda _msg: None))
    return SweepResult(results=out["results"], sweep_dir=Path(out["sweep_dir"]), complete=out["complete"],
                       files=list(out.get("files", [])), wall_seconds=out.get("wall_seconds", 0.0))
