"""Accuracy against bytes: the figure of a run and of a sweep (its data read back from the CSV
written with it, never from pixels), the bytes each row of a sweep sent to reach a target
accuracy against a reference written here, and every value of a compressor's own option a row."""
import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from qgm_ray import report
from qgm_ray.config import Config, trial_dict
from qgm_ray.errors import ConfigError
from qgm_ray.grid import points
from qgm_ray.runner.metrics_file import METRIC_COLUMNS
from tests.helpers import main_py

ROUNDS = [8, 16, 24, 32]   # one evaluation every 8 rounds


def write_metrics(path, accs, bytes_per_round, rounds=ROUNDS):
    """A metrics.csv as the runner writes it: every column, bytes_sent cumulative."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for r, a in zip(rounds, accs):
            w.writerow({"round": r, "epoch": r / 8, "lr": 0.1, "train_loss": 1.0, "test_accuracy": a,
                        "local_test_accuracy": a / 2, "consensus_distance": 0.1,
                        "bytes_sent": r * bytes_per_round, "wall_seconds": r / 10, "n_clients": 4,
                        "test_loss": 1.0, "bytes_cross_node": 0})


def reference_reach(path, target):
    """bytes_sent of the first row reaching `target`, read with the csv module; None if none does."""
    with open(path / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if float(row["test_accuracy"]) >= target:
                return int(row["bytes_sent"])
    return None


# ---------------------------------------------------------------- one run

def test_a_runs_accuracy_against_bytes_figure_holds_its_metrics(tmp_path):
    run = tmp_path / "run"
    write_metrics(run, [0.3, 0.25, 0.6, 0.7], 1234)
    written = {p.name: p for p in report.make_report(run)}
    assert written["accuracy_vs_bytes.png"].stat().st_size > 1000
    data = pd.read_csv(written["accuracy_vs_bytes.csv"])
    metrics = pd.read_csv(run / "metrics.csv")
    sent = metrics
    assert list(data["line"].unique()) == ["averaged model"]
    assert data["bytes_sent"].tolist() == sent["bytes_sent"].tolist() == [8 * 1234, 16 * 1234, 24 * 1234, 32 * 1234]
    assert data["test_accuracy_percent"].tolist() == pytest.approx((100 * sent["test_accuracy"]).tolist())


def test_a_run_that_sent_nothing_has_no_bytes_figure(tmp_path):
    write_metrics(tmp_path / "run", [0.2, 0.4, 0.5, 0.6], 0)
    assert "accuracy_vs_bytes.png" not in {p.name for p in report.make_report(tmp_path / "run")}


@pytest.mark.parametrize("target", [0.05, 0.3, 0.45, 0.5, 0.9])
def test_reach_bytes_is_the_first_evaluation_at_the_target(tmp_path, target):
    # Up, down, up again: the first crossing counts, not the last or the best.
    write_metrics(tmp_path / "run", [0.3, 0.5, 0.4, 0.6], 100)
    h = pd.read_csv(tmp_path / "run" / "metrics.csv").sample(frac=1, random_state=0)   # any row order
    got = report.reach_bytes(h, target)
    want = reference_reach(tmp_path / "run", target)
    assert (math.isnan(got) and want is None) or got == want


# ---------------------------------------------------------------- a sweep over compressors

# A conditional grid, as configs/tune_compression.yaml writes it: keep only for top_k, and
# consensus_lr tuned per cell.
GRID = {"compression": [{"op": "none"}, {"op": "top_k", "keep": [0.1, 0.01], "consensus_lr": [0.5, 0.1]}],
        "data.alpha": [1, 0.1], "seed": [0, 1]}
RATE = {"none": 1000, 0.1: 200, 0.01: 20}   # bytes per round, all clients
FINAL = {("none", None, None): 0.80, ("top_k", 0.1, 0.5): 0.78, ("top_k", 0.1, 0.1): 0.70,
         ("top_k", 0.01, 0.5): 0.50, ("top_k", 0.01, 0.1): 0.60}
DROP = {1: 0.0, 0.1: 0.2}   # alpha 0.1 ends lower


def final_acc(p):
    key = (p["compression.op"], p.get("compression.keep"), p.get("compression.consensus_lr"))
    return FINAL[key] - DROP[p["data.alpha"]] + 0.01 * p["seed"]


def curve(p):
    return [final_acc(p) * i / 4 for i in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep directory of hand-written trials, reported once (no results.csv: rebuilt from them)."""
    tmp_path = tmp_path_factory.mktemp("bytes")
    base = Config().to_dict()
    base.update(name="comp", backend="local")
    base["tune"]["grid"] = GRID
    base["compression"] = {"op": "none", "keep": None, "levels": None, "consensus_lr": 1.0}
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    for i, p in enumerate(points(GRID)):
        trial = d / "trials" / f"t{i:02d}"
        write_metrics(trial, curve(p), RATE[p.get("compression.keep", "none")])
        (trial / "config.yaml").write_text(yaml.safe_dump(trial_dict(base, p)))
        (trial / "summary.json").write_text(json.dumps({
            "status": "completed", "final_test_accuracy": curve(p)[-1], "best_test_accuracy": curve(p)[-1],
            "rounds": 32, "wall_seconds": 1.0}))
    report.make_report(d)
    return d


def reference_rows(target=None):
    """{(row label, alpha): (target, [bytes to target of each seed, None: not reached])}, computed
    from the grid above: the best consensus_lr per (keep, alpha) by mean final accuracy, the
    target 0.9 x the column's best mean final accuracy unless given."""
    rows = {}
    for alpha in (1, 0.1):
        means = {}
        for key in FINAL:
            op, keep, gamma = key
            finals = [FINAL[key] - DROP[alpha] + 0.01 * s for s in (0, 1)]
            means[key] = sum(finals) / 2
        best_gamma = {keep: max((g for (o, k, g) in FINAL if k == keep), key=lambda g: means[("top_k", keep, g)])
                      for keep in (0.1, 0.01)}
        chosen = [("none", None, None)] + [("top_k", k, best_gamma[k]) for k in (0.1, 0.01)]
        t = target if target is not None else 0.9 * max(means[c] for c in chosen)
        for op, keep, gamma in chosen:
            label = "qg_dsgdm_n none" if op == "none" else f"qg_dsgdm_n top_k keep={keep:g}"
            reached = []
            for s in (0, 1):
                accs = [(FINAL[(op, keep, gamma)] - DROP[alpha] + 0.01 * s) * i / 4 for i in (1, 2, 3, 4)]
                hit = [r for r, a in zip(ROUNDS, accs) if a >= t]
                reached.append(hit[0] * RATE[keep if keep else "none"] if hit else None)
            rows[(label, alpha)] = (t, reached)
    return rows


def test_bytes_to_target_of_a_sweep_equals_the_reference(sweep):
    df = pd.read_csv(sweep / "results.csv")
    histories = pd.read_csv(sweep / "histories.csv")
    keys = report.param_keys_of(yaml.safe_load((sweep / "config.yaml").read_text()))
    assert keys == ["compression.op", "compression.keep", "compression.consensus_lr", "data.alpha", "seed"]
    got = report.bytes_to_target(df, histories, keys)
    got["label"] = report.row_labels(got, keys)
    ref = reference_rows()
    assert len(got) == len(ref) == 6
    for _, r in got.iterrows():
        t, reached = ref[(r["label"], r["alpha"])]
        hits = [b for b in reached if b is not None]
        assert r["target"] == pytest.approx(t)
        assert (r["n"], r["n_reached"]) == (2, len(hits))
        assert (math.isnan(r["bytes"]) and not hits) or r["bytes"] == pytest.approx(np.mean(hits))
    # top_k keep=0.01 ends far below the best: it never reaches 90% of it.
    assert got.set_index(["label", "alpha"]).loc[("qg_dsgdm_n top_k keep=0.01", 0.1), "n_reached"] == 0


def test_the_sweep_table_shows_every_compressor_setting_and_its_bytes(sweep):
    md = (sweep / "table.md").read_text()
    # Every value of keep a row of its own, consensus_lr the best per cell (named), none a row too.
    assert "| qg_dsgdm_n none | **80.50** ± 0.71 | **60.50** ± 0.71 |" in md
    assert ("| qg_dsgdm_n top_k keep=0.1 | 78.50 ± 0.71 (consensus_lr 0.5; consensus_lr = grid max) "
            "| 58.50 ± 0.71 (consensus_lr 0.5; consensus_lr = grid max) |") in md
    assert ("| qg_dsgdm_n top_k keep=0.01 | 60.50 ± 0.71 (consensus_lr 0.1; consensus_lr = grid min) "
            "| 40.50 ± 0.71 (consensus_lr 0.1; consensus_lr = grid min) |") in md
    assert "# Bytes sent to reach the target accuracy" in md
    ref = reference_rows()
    t1, t01 = ref[("qg_dsgdm_n none", 1)][0], ref[("qg_dsgdm_n none", 0.1)][0]
    assert f"| algorithm | α = 1 (target {100 * t1:.2f}%) | α = 0.1 (target {100 * t01:.2f}%) |" in md
    # none: 1000 B/round, reaches 72.45% at round 32 on both seeds; keep 0.1: 200 B/round at round 32.
    assert ref[("qg_dsgdm_n none", 1)][1] == [32000, 32000] and ref[("qg_dsgdm_n top_k keep=0.1", 1)][1] == [6400, 6400]
    assert "| qg_dsgdm_n none | 32 kB | 32 kB |" in md
    assert "| qg_dsgdm_n top_k keep=0.1 | **6.4 kB** | **6.4 kB** |" in md
    assert "| qg_dsgdm_n top_k keep=0.01 | not reached | not reached |" in md


def test_a_target_given_counts_every_row_to_it(sweep):
    base = yaml.safe_load((sweep / "config.yaml").read_text())
    md = report.table_markdown(pd.read_csv(sweep / "results.csv"), base, report.param_keys_of(base),
                               pd.read_csv(sweep / "histories.csv"), target=0.3)
    assert "| algorithm | α = 1 (target 30.00%) | α = 0.1 (target 30.00%) |" in md
    ref = reference_rows(0.3)
    # keep 0.01 at alpha 0.1 (0.40, 0.41 at the end): reaches 30% at round 24 on both seeds.
    assert ref[("qg_dsgdm_n top_k keep=0.01", 0.1)][1] == [480, 480]
    assert "| qg_dsgdm_n top_k keep=0.01 | **320 B** | **480 B** |" in md


def test_the_sweep_accuracy_against_bytes_figure_holds_every_rows_mean_curve(sweep):
    assert (sweep / "accuracy_vs_bytes.png").stat().st_size > 1000
    data = pd.read_csv(sweep / "accuracy_vs_bytes.csv")
    assert set(data["panel"]) == {"alpha = 1", "alpha = 0.1"}
    # Every row, in the table's (the grid's) order.
    assert list(data["line"].unique()) == ["qg_dsgdm_n none", "qg_dsgdm_n top_k keep=0.1", "qg_dsgdm_n top_k keep=0.01"]
    # Each line: the mean over seeds of the metrics of its best setting, at each evaluation.
    for (panel, line), g in data.groupby(["panel", "line"]):
        alpha = 1 if panel == "alpha = 1" else 0.1
        keep = None if line.endswith("none") else float(line.rsplit("=", 1)[1])
        gamma = {None: None, 0.1: 0.5, 0.01: 0.1}[keep]
        seeds = [{"compression.op": "none" if keep is None else "top_k", "compression.keep": keep,
                  "compression.consensus_lr": gamma, "data.alpha": alpha, "seed": s} for s in (0, 1)]
        mean = [100 * (a + b) / 2 for a, b in zip(*(curve(p) for p in seeds))]
        assert g["bytes_sent"].tolist() == [r * RATE[keep or "none"] for r in ROUNDS]
        assert g["test_accuracy_percent"].tolist() == pytest.approx(mean)


def test_results_rebuilt_from_trial_dirs_keep_only_each_branchs_keys(sweep):
    df = pd.read_csv(sweep / "results.csv")
    none = df[df["compression.op"] == "none"]
    assert len(none) == 4 and none["compression.keep"].isna().all() and none["compression.consensus_lr"].isna().all()
    assert sorted(df["compression.keep"].dropna().unique()) == [0.01, 0.1]


# ---------------------------------------------------------------- variants: every value shown

def _frame(rows, keys):
    return report.results_frame([{"trial": f"t{i}", "topology": "ring", "n_clients": 4, "lr": 0.1,
                                  "trial_dir": f"trials/t{i}", "status": "completed",
                                  "best_test_accuracy": r["final_test_accuracy"], **r}
                                 for i, r in enumerate(rows)], keys)


def test_a_rules_own_option_is_a_row_per_value_not_the_best_one():
    keys = ["algorithm.name", "algorithm.options.clip", "data.alpha", "seed"]
    assert report.variant_keys(keys) == ["algorithm.options.clip"] and report.split_keys(keys) == ([], [])
    rows = [{"algorithm": "clip", "algorithm.options.clip": c, "alpha": 0.1, "seed": s,
             "final_test_accuracy": acc + 0.01 * s}
            for c, acc in ((0.5, 0.6), (2.0, 0.7)) for s in (0, 1)]
    (_, table), = report.accuracy_tables(_frame(rows, keys), keys)
    assert list(table.index) == ["clip clip=0.5", "clip clip=2"]
    assert table.loc["clip clip=0.5", "α = 0.1"] == "60.50 ± 0.71"
    assert table.loc["clip clip=2", "α = 0.1"] == "**70.50** ± 0.71"
    # consensus_lr is tuned (best per cell), the compressor and its keep are rows.
    keys = ["algorithm.name", "compression.op", "compression.keep", "compression.consensus_lr", "seed"]
    assert report.variant_keys(keys) == ["compression.op", "compression.keep"]
    assert report.split_keys(keys) == ([], ["compression.consensus_lr"])


def test_every_row_keeps_its_colour_and_the_lr_figure_draws_each_variant(tmp_path):
    keys = ["algorithm.name", "algorithm.options.clip", "algorithm.lr", "data.alpha", "seed"]
    rows = [{"algorithm": "clip", "algorithm.options.clip": c, "lr": lr, "alpha": 0.1, "seed": 0,
             "final_test_accuracy": acc}
            for c in (0.5, 2.0) for lr, acc in ((0.01, 0.5), (0.1, 0.6 + c / 10))]
    df = _frame(rows, keys)
    curves = report.lr_curves(df, param_keys=keys)
    assert set(curves["label"]) == {"clip clip=0.5", "clip clip=2"}
    assert curves.set_index(["label", "lr"]).loc[("clip clip=2", 0.1), "mean"] == pytest.approx(0.8)
    assert report.plot_lr_sensitivity(df, tmp_path / "lr.png", keys) is not None


def test_a_bad_target_is_one_line_and_main_py_exits_2(tmp_path):
    write_metrics(tmp_path / "run", [0.2, 0.4, 0.5, 0.6], 10)
    with pytest.raises(ConfigError, match=r"report --target must be a test accuracy in \(0, 1\] \(0.6 for 60%\), "
                                          r"got 75.0$"):
        report.make_report(tmp_path / "run", target=75.0)
    out = main_py("report", str(tmp_path / "run"), "--target", "75")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "run" / "curves.png").exists()


def test_a_sweep_over_topology_sections_draws_bytes_by_section_not_by_the_rows_client_count(tmp_path):
    """metrics.csv has an n_clients column too (the count at each row); a sweep whose sections
    include topology.n_clients takes the trial's value, as the table does."""
    keys = ["topology.name", "topology.n_clients", "algorithm.name", "seed"]
    rows, hist = [], []
    for i, (topo, n) in enumerate([("ring", 16), ("social", 32)]):
        rows.append({"trial": f"t{i}", "topology": topo, "n_clients": n, "algorithm": "dsgdm_n", "alpha": 0.1,
                     "seed": 0, "lr": 0.1, "trial_dir": f"trials/t{i}", "status": "completed",
                     "final_test_accuracy": 0.5, "best_test_accuracy": 0.5})
        hist += [{"trial": f"t{i}", "round": r, "epoch": r / 4, "test_accuracy": 0.1 * r, "bytes_sent": 100 * r * n,
                  "n_clients": n} for r in (1, 2, 4)]
    df = report.results_frame(rows, keys)
    path = report.plot_accuracy_vs_bytes(df, pd.DataFrame(hist), tmp_path / "accuracy_vs_bytes.png", keys)
    assert path is not None and path.stat().st_size > 1000
    data = pd.read_csv(tmp_path / "accuracy_vs_bytes.csv")
    assert sorted(data["panel"].unique()) == ["topology=ring, n_clients=16, alpha = 0.1",
                                              "topology=social, n_clients=32, alpha = 0.1"]
    assert sorted(data["bytes_sent"]) == sorted(h["bytes_sent"] for h in hist)
