"""The command line: `qgm-ray`, `python -m qgm_ray` and a checkout's `python main.py`, all
`[run|tune|report|bench|config] ...` (run is the default). It reads nothing outside the
package: no --config means the built-in defaults (configs/default.yaml sets nothing else)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qgm_ray.errors import ConfigError

COMMANDS = ("run", "tune", "report", "bench", "config")
DEFAULTS_HELP = "YAML config merged over the built-in defaults (default: none, the built-in defaults)"

# {prog}: the command as the user typed it (main.py, qgm-ray, python -m qgm_ray); every
# line starts with it, so the comments stay aligned whatever its length.
EPILOG = """\
examples:
  {prog}                                   offline default: mnist1d, ring of 16, QG-DSGDm-N, alpha=0.1
  {prog} --set backend=local --set data.alpha=10
  {prog} --config configs/paper/cifar10_ring16.yaml --set data.download=true
  {prog} --resume runs/default-20261125-101500
  {prog} tune --config configs/tune_heterogeneity.yaml
  {prog} report runs/tune_heterogeneity-20261125-101500
  {prog} bench --quick --output bench.json
  {prog} config --set data.name=cifar10     the resolved, validated config as YAML
  {prog} config --keys                     every key: type, default, allowed values

Config keys are dotted (data.alpha, topology.name, algorithm.lr, ...); --set parses its value
as YAML, so `--set elastic.schedule=[[5,8]]` is a list. See README.md for every key.
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    # default None, not the file: `run --resume` must tell a --config given from none given
    p.add_argument("--config", default=None, help=DEFAULTS_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, VALUE parsed as YAML; repeatable")
    p.add_argument("--output-dir", default=None, help="where outputs go (default: runs/<name>-<timestamp>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from qgm_ray.command import command
    prog = prog or command()
    epilog = EPILOG.format(prog=prog)
    parser = argparse.ArgumentParser(
        prog=prog, description="qgm-ray: decentralized deep learning on heterogeneous data, on Ray "
        "(Quasi-Global Momentum, Lin et al. ICML 2021).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    sub = parser.add_subparsers(dest="command", metavar="{run,tune,report,bench,config}")

    p_run = sub.add_parser("run", help="one decentralized training run (the default command)",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    _add_config_args(p_run)
    p_run.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue a stopped run from its last checkpoint, with its own config.yaml in its "
                            "own directory (so not with --config or --output-dir; --set only for keys that "
                            "do not change what is measured: backend, ray.*, fault_tolerance.*)")

    p_tune = sub.add_parser("tune", help="a Ray Tune sweep over the config's tune: section")
    _add_config_args(p_tune)
    p_tune.add_argument("--resume", metavar="SWEEP_DIR", default=None,
                        help="resume an interrupted sweep without redoing finished trials")

    p_rep = sub.add_parser("report", help="tables and figures from a run or sweep directory")
    p_rep.add_argument("path", help="a run directory (metrics.csv) or a sweep directory (results.csv)")
    p_rep.add_argument("--target", type=float, default=None, metavar="ACCURACY",
                       help="a sweep's table counts the bytes each row sent to reach this test accuracy, in "
                            "(0, 1] (default: a fraction of the best final accuracy of each column, which table.md names)")

    p_bench = sub.add_parser("bench", help="round-time and memory benchmark of the engines")
    p_bench.add_argument("--quick", action="store_true", help="small grid: n in {4, 8}, both models (a few minutes on 2 cores)")
    p_bench.add_argument("--output", default=None, help="write the records as JSON here")
    p_bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                         help="cuda: blocks vs one model at batch n*b on a GPU (bench/gpu.py; exits 2 without CUDA)")
    p_bench.add_argument("--scale", action="store_true",
                         help="many clients: n up to 16,384 on both engines, round time, peak PSS by role, start-up "
                              "(bench/scale.py; --output is a directory, default docs/results/scale)")
    p_bench.add_argument("--ceiling", action="store_true",
                         help="the local engine against one model at batch n*32 on one thread, cnn1d and mlp at "
                              "n in {16, 256, 1024} (--quick: {16, 64}), interleaved (bench/ceiling.py)")
    p_bench.add_argument("--ray-round", action="store_true",
                         help="the default run's round: Ray (fused and a call a round) against the local engine and "
                              "one model at batch 16 x 32, on 1 thread and all cores, interleaved (bench/ray_round.py)")
    p_bench.add_argument("--startup", action="store_true",
                         help="the default run's time to its first round, phase by phase: fresh `main.py` processes "
                              "on Ray and local, alternating, medians (--quick: fewer runs) (bench/startup.py)")

    p_cfg = sub.add_parser("config", help="print the resolved, validated config as YAML (starts nothing)")
    p_cfg.add_argument("--config", default=None, help=DEFAULTS_HELP)
    p_cfg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key, VALUE parsed as YAML; repeatable")
    p_cfg.add_argument("--keys", action="store_true",
                       help="list every key with its type, default and allowed values instead")
    return parser


def parse_args(argv: list[str], prog: str | None = None) -> argparse.Namespace:
    # `python main.py --config X` means `python main.py run --config X`.
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run"] + list(argv)
    return build_parser(prog).parse_args(argv)


def print_summary(summary: dict) -> None:
    keys = ["status", "final_test_accuracy", "best_test_accuracy", "rounds", "wall_seconds",
            "n_clients", "algorithm", "alpha", "topology", "backend"]
    width = max(map(len, keys))
    print("\nsummary")
    print("-" * (width + 24))
    for k in keys:
        v = summary.get(k)
        if isinstance(v, float):
            v = f"{v:.4f}" if "accuracy" in k else f"{v:.1f}" if k == "wall_seconds" else f"{v:g}"
        print(f"{k:<{width}}  {v}")
    if summary.get("message"):
        print(f"{'message':<{width}}  {summary['message']}")
    print(f"\nrun directory: {summary['run_dir']}")


def check_paths(args) -> None:
    """An empty --output-dir or --resume names no place: refuse it, not fall back to a default."""
    for flag, value in (("--output-dir", getattr(args, "output_dir", None)), ("--resume", getattr(args, "resume", None))):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} {value!r}: an empty path; name a directory"
                              + (" (or leave --output-dir out for runs/<name>-<timestamp>/)"
                                 if flag == "--output-dir" else ""))


def refuse_with_resume(args, what: str) -> None:
    """A resume goes on with the run's (or sweep's) own config.yaml in its own directory: flags
    that would be ignored are refused instead. `run --resume` takes --set for keys that change
    nothing measured; a sweep's trials are fixed in its config.yaml, so `tune --resume` takes none."""
    given = [f"{flag} {value}" for flag, value in (("--config", args.config), ("--output-dir", args.output_dir))
             if value is not None]
    if what == "sweep":
        given += [f"--set {kv}" for kv in args.overrides]
    if given:
        raise ConfigError(f"--resume {args.resume} continues the {what} with its own config.yaml in its own directory: "
                          f"{' and '.join(given)} cannot go with it (start a new {what} for another config or place)")


def cmd_config(args) -> int:
    from qgm_ray.config import config_dict, dump_yaml, describe_keys, from_dict

    if args.keys:
        # The rule the config names: its defaults and its own knobs are listed (a plug-in's too).
        algorithm = config_dict(args.config, args.overrides).get("algorithm")
        name = algorithm.get("name") if isinstance(algorithm, dict) else None
        print(describe_keys(name if isinstance(name, str) else None))
        return 0
    print(dump_yaml(from_dict(config_dict(args.config, args.overrides))), end="")
    return 0


def cmd_run(args) -> int:
    from qgm_ray.config import config_dict, from_dict

    check_paths(args)
    if args.resume is not None:
        # The run's own resolved config.yaml, then any --set (the runner refuses changes of
        # what is measured). A --config or --output-dir would be ignored: refuse them instead.
        run_path = Path(args.resume)
        refuse_with_resume(args, "run")
        if not (run_path / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_path}: not a run directory (no config.yaml)")
        cfg = from_dict(config_dict(run_path / "config.yaml", args.overrides))
    else:
        cfg = from_dict(config_dict(args.config, args.overrides))
    if args.quiet:
        cfg.progress = False
    # Imported once the config is valid: the runner brings torch (seconds of a process's start),
    # and a mistyped key is answered without it.
    from qgm_ray.runner import run as runner
    summary = runner.run(cfg, args.resume or args.output_dir, resume=bool(args.resume))
    print_summary(summary)
    if summary["status"] == "stopped":  # by a signal: 128 + its number, as a shell reports it
        return 128 + int(summary.get("signal") or 2)
    return {"completed": 0, "diverged": 3}.get(summary["status"], 1)


def cmd_tune(args) -> int:
    from qgm_ray import tune as qtune
    from qgm_ray.config import config_dict, from_dict

    check_paths(args)
    if args.resume is not None:
        refuse_with_resume(args, "sweep")
    # With --resume, the sweep reads its own config.yaml; this one only carries --quiet.
    cfg = from_dict(config_dict(args.config, args.overrides))
    if args.quiet:
        cfg.progress = False
    out = qtune.run_sweep(cfg, output_dir=args.output_dir, resume_dir=args.resume)
    if out.get("signal"):   # interrupted by a signal: 128 + its number, as for `run`
        return 128 + int(out["signal"])
    return 0 if out["complete"] else 1  # the last line says how to resume


def cmd_report(args) -> int:
    from qgm_ray import report
    for path in report.make_report(args.path, target=args.target):
        print(path)
    return 0


def no_bench(args) -> int:
    raise ConfigError("bench: the harness lives in the repository's bench/, outside the package; "
                      "run `python main.py bench` from a checkout")


# Commands whose product is what they print: a stdout that cannot take it is an error.
PRINTING_COMMANDS = ("config", "report")


def main(argv: list[str] | None = None, bench=None, prog: str | None = None) -> int:
    """bench: the `bench` command's handler (main.py passes bench.command; the harness is not
    part of the package, so the package never imports it). prog: the command as usage lines
    name it (default: as the user typed it, qgm_ray.command)."""
    from qgm_ray import console, signals
    console.guard()   # a closed or full stdout never stops a command, not even its --help
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    if args.command not in PRINTING_COMMANDS:
        console.guard(on_lost=console.say_lost)   # a run's product is its directory: go on
    # A signal from here on: one line and 128 + its number, never a silent death or a traceback.
    signals.install_early("stopped before training started; nothing was written" if args.command == "run"
                          else "stopped before the sweep started; nothing ran" if args.command == "tune"
                          else "stopped")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    handler = {"run": cmd_run, "tune": cmd_tune, "report": cmd_report, "bench": bench or no_bench,
               "config": cmd_config}[args.command]
    try:
        code = handler(args)
        lost = console.lost("stdout")
        if args.command in PRINTING_COMMANDS and lost is not None and not console.reader_left(lost):
            print(f"error: cannot write to stdout: {lost.strerror or lost}", file=sys.stderr)
            code = 2
        signals.quiet_exit_from_now()
        return code
    except ConfigError as e:
        from qgm_ray.outputs import OutputError
        print(f"{'error' if isinstance(e, OutputError) else 'config error'}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `main.py config --keys | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:
        # `run` turns signals into a graceful stop once training starts; before that (loading
        # data, starting Ray) there is nothing to save. qgm_ray.signals says what happened.
        message = getattr(e, "message", None)
        if message is None:
            name = signals.signal_name(getattr(e, "signum", 2))
            message = (f"{name}: stopped before training started; nothing was written" if args.command == "run"
                       else f"{name}: stopped")
        if message:
            print(message, file=sys.stderr)
        signals.quiet_exit_from_now()
        return signals.exit_code(e)
