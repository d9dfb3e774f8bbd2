"""Tables and figures from results, without Tune: pure pandas in, markdown and PNGs out."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from qgm_ray import report
from qgm_ray.config import Config
from qgm_ray.errors import ConfigError


def results(rows):
    return report.results_frame([{"trial": f"t{i}", "topology": "ring", "n_clients": 16, "lr": 0.1,
                                  "best_test_accuracy": r.get("final_test_accuracy"),
                                  "trial_dir": f"trials/t{i}", **r} for i, r in enumerate(rows)],
                                ["algorithm.name", "data.alpha", "seed"])


def grid_rows():
    rows = []
    acc = {("dsgdm_n", 10): [0.80, 0.82, 0.84], ("dsgdm_n", 0.1): [0.60, 0.62, 0.64],
           ("qg_dsgdm_n", 10): [0.81, 0.83, 0.85], ("qg_dsgdm_n", 0.1): [0.70, 0.71, 0.72]}
    for (algo, alpha), accs in acc.items():
        for seed, a in enumerate(accs):
            rows.append({"algorithm": algo, "alpha": alpha, "seed": seed, "final_test_accuracy": a,
                         "status": "completed"})
    return rows


def test_cell_stats_mean_and_std_over_seeds():
    stats = report.cell_stats(results(grid_rows())).set_index(["algorithm", "alpha"])
    assert stats.loc[("qg_dsgdm_n", 0.1), "mean"] == pytest.approx(0.71)
    assert stats.loc[("qg_dsgdm_n", 0.1), "std"] == pytest.approx(0.01)   # sample std
    assert stats.loc[("dsgdm_n", 10), "n"] == 3


def test_table_is_algorithms_by_alpha_with_best_in_bold():
    (title, table), = report.accuracy_tables(results(grid_rows()), ["algorithm.name", "data.alpha", "seed"],
                                             algo_order=["dsgdm_n", "qg_dsgdm_n"])
    assert title == ""
    assert list(table.columns) == ["α = 10", "α = 0.1"]   # near-iid first, like the paper
    assert list(table.index) == ["dsgdm_n", "qg_dsgdm_n"]
    assert table.loc["qg_dsgdm_n", "α = 0.1"] == "**71.00** ± 1.00"
    assert table.loc["dsgdm_n", "α = 0.1"] == "62.00 ± 2.00"
    md = report.to_markdown(table)
    assert md.splitlines()[0] == "| algorithm | α = 10 | α = 0.1 |"
    assert "| qg_dsgdm_n | **83.00** ± 2.00 | **71.00** ± 1.00 |" in md


def test_diverged_seeds_are_left_out_and_counted():
    rows = grid_rows()
    rows[3] = {**rows[3], "status": "diverged", "final_test_accuracy": 0.1}  # dsgdm_n alpha 0.1 seed 0
    (_, table), = report.accuracy_tables(results(rows))
    assert table.loc["dsgdm_n", "α = 0.1"] == "63.00 ± 1.41 [1/3 diverged]"
    all_bad = [dict(r, status="diverged") if r["algorithm"] == "dsgdm_n" and r["alpha"] == 0.1 else r for r in rows]
    (_, table), = report.accuracy_tables(results(all_bad))
    assert table.loc["dsgdm_n", "α = 0.1"] == "3 diverged"


def test_hyper_parameter_sweep_shows_the_best_lr_per_cell():
    rows = []
    for lr, accs in ((0.01, [0.5, 0.52]), (0.1, [0.7, 0.74]), (1.0, [0.2, 0.3])):
        for seed, a in enumerate(accs):
            rows.append({"algorithm": "dsgd", "alpha": 0.1, "seed": seed, "lr": lr, "final_test_accuracy": a,
                         "status": "completed"})
    df = report.results_frame([{"trial": f"t{i}", "topology": "ring", "n_clients": 4, "trial_dir": f"trials/t{i}",
                                "best_test_accuracy": r["final_test_accuracy"], **r} for i, r in enumerate(rows)],
                              ["algorithm.lr"])
    keys = ["algorithm.name", "data.alpha", "seed", "algorithm.lr"]
    assert report.split_keys(keys) == ([], ["algorithm.lr"])
    (_, table), = report.accuracy_tables(df, keys)
    assert table.loc["dsgd", "α = 0.1"] == "72.00 ± 2.83 (lr 0.1)"
    assert set(report.best_trials(df, keys)["lr"]) == {0.1}
    # lr 0.3: better mean over the seeds that completed, but it diverged on one: not chosen.
    more = rows + [{"algorithm": "dsgd", "alpha": 0.1, "seed": 0, "lr": 0.3, "final_test_accuracy": 0.9,
                    "status": "completed"},
                   {"algorithm": "dsgd", "alpha": 0.1, "seed": 1, "lr": 0.3, "final_test_accuracy": 0.2,
                    "status": "diverged"}]
    df = report.results_frame([{"trial": f"t{i}", "topology": "ring", "n_clients": 4, "trial_dir": f"trials/t{i}",
                                "best_test_accuracy": r["final_test_accuracy"], **r} for i, r in enumerate(more)],
                              ["algorithm.lr"])
    (_, table), = report.accuracy_tables(df, keys)
    assert table.loc["dsgd", "α = 0.1"] == "72.00 ± 2.83 (lr 0.1) [1/8 diverged]"


def _lr_rows(accs_by_lr, algorithm="dsgd", alpha=0.1):
    rows = []
    for lr, accs in accs_by_lr.items():
        for seed, a in enumerate(accs):
            rows.append({"algorithm": algorithm, "alpha": alpha, "seed": seed, "lr": lr,
                         "final_test_accuracy": a, "status": "completed" if a is not None else "diverged"})
    return rows


def _lr_frame(rows):
    return report.results_frame([{"trial": f"t{i}", "topology": "ring", "n_clients": 4, "trial_dir": f"trials/t{i}",
                                  "best_test_accuracy": r["final_test_accuracy"], **r} for i, r in enumerate(rows)],
                                ["algorithm.lr"])


def test_a_winning_lr_at_an_end_of_the_grid_is_flagged():
    keys = ["algorithm.name", "data.alpha", "algorithm.lr", "seed"]
    grid = {"algorithm.lr": [0.01, 0.1, 1.0]}
    # dsgd: best at the largest lr; qg: best at the smallest; dsgdm_n: inside the grid.
    rows = (_lr_rows({0.01: [0.5, 0.52], 0.1: [0.7, 0.74], 1.0: [0.8, 0.82]})
            + _lr_rows({0.01: [0.6, 0.6], 0.1: [0.4, 0.5], 1.0: [None, None]}, "qg_dsgdm_n")
            + _lr_rows({0.01: [0.3, 0.3], 0.1: [0.7, 0.7], 1.0: [0.2, None]}, "dsgdm_n"))
    df = _lr_frame(rows)
    stats = report.cell_stats(df, hparams=["algorithm.lr"], grid=grid).set_index("algorithm")
    assert stats.loc["dsgd", "edge"] == "lr = grid max"
    assert stats.loc["qg_dsgdm_n", "edge"] == "lr = grid min"
    assert stats.loc["dsgdm_n", "edge"] == ""
    (_, table), = report.accuracy_tables(df, keys, grid=grid)
    assert table.loc["dsgd", "α = 0.1"] == "**81.00** ± 1.41 (lr 1; lr = grid max)"
    assert table.loc["qg_dsgdm_n", "α = 0.1"] == "60.00 ± 0.00 (lr 0.01; lr = grid min) [2/6 diverged]"
    assert table.loc["dsgdm_n", "α = 0.1"] == "70.00 ± 0.00 (lr 0.1) [1/6 diverged]"
    # The edge is judged against the whole grid, not only the lrs a partial sweep has tried.
    partial = df[df["lr"] < 1.0]
    stats = report.cell_stats(partial, hparams=["algorithm.lr"], grid=grid).set_index("algorithm")
    assert stats.loc["dsgd", "edge"] == ""
    stats = report.cell_stats(partial, hparams=["algorithm.lr"]).set_index("algorithm")
    assert stats.loc["dsgd", "edge"] == "lr = grid max"   # no grid given: the lrs tried
    assert report.grid_edges({"lr": 0.1}, {"lr": [0.1]}) == ""   # one value is no grid


def test_tuned_table_names_the_lr_grid_and_lists_the_edge_cells():
    base = Config().to_dict()
    base["tune"]["grid"] = {"algorithm.name": ["dsgd", "dsgdm_n"], "data.alpha": [0.1],
                            "algorithm.lr": [0.01, 0.1, 1.0], "seed": [0, 1]}
    keys = list(base["tune"]["grid"])
    rows = (_lr_rows({0.01: [0.5, 0.52], 0.1: [0.7, 0.74], 1.0: [0.8, 0.82]})
            + _lr_rows({0.01: [0.3, 0.3], 0.1: [0.7, 0.7], 1.0: [0.2, 0.2]}, "dsgdm_n"))
    md = report.table_markdown(_lr_frame(rows), base, keys)
    assert "lr tuned per cell over {0.01, 0.1, 1}" in md
    assert "| dsgd | **81.00** ± 1.41 (lr 1; lr = grid max) |" in md
    assert "Best setting at an edge of its grid in 1 of 2 cells (widen the grid there): " \
           "dsgd α = 0.1 (lr = grid max)." in md
    inside = [r for r in rows if not (r["algorithm"] == "dsgd" and r["lr"] == 1.0)]
    base["tune"]["grid"]["algorithm.lr"] = [0.01, 0.1, 1.0, 10.0]
    md = report.table_markdown(_lr_frame(inside), base, keys)
    assert "No cell has its best setting at an edge of the grid (2 cells)." in md


def test_lr_sensitivity_curves_and_figure(tmp_path):
    rows = (_lr_rows({0.01: [0.5, 0.52], 0.1: [0.7, 0.74], 1.0: [0.8, None]})
            + _lr_rows({0.01: [0.6, 0.6], 0.1: [0.4, 0.5], 1.0: [None, None]}, "qg_dsgdm_n"))
    df = _lr_frame(rows)
    curves = report.lr_curves(df).set_index(["algorithm", "lr"])
    assert curves.loc[("dsgd", 0.1), "mean"] == pytest.approx(0.72)
    assert curves.loc[("dsgd", 1.0), ["n_completed", "n_other"]].tolist() == [1, 1]
    assert curves.loc[("dsgd", 1.0), "mean"] == pytest.approx(0.8)   # the seed that completed
    assert np.isnan(curves.loc[("qg_dsgdm_n", 1.0), "mean"])
    keys = ["algorithm.name", "data.alpha", "algorithm.lr", "seed"]
    path = report.plot_lr_sensitivity(df, tmp_path / "lr.png", keys)
    assert path is not None and path.stat().st_size > 1000
    assert report.plot_lr_sensitivity(df, tmp_path / "none.png", ["algorithm.name", "seed"]) is None


def test_other_grid_keys_split_the_table_in_sections():
    rows = [dict(r, topology=topo) for topo in ("ring", "social") for r in grid_rows()]
    df = report.results_frame([{"trial": f"t{i}", "n_clients": 16, "lr": 0.1, "trial_dir": "x",
                                "best_test_accuracy": 0, **r} for i, r in enumerate(rows)])
    tables = report.accuracy_tables(df, ["topology.name", "algorithm.name", "data.alpha", "seed"])
    assert [t for t, _ in tables] == ["topology = ring", "topology = social"]


def _fake_run(path, alpha=0.1, seed=0, algo="qg_dsgdm_n", acc=0.5, epochs=3):
    path.mkdir(parents=True)
    pd.DataFrame({"round": np.arange(1, epochs + 1) * 8, "epoch": np.arange(1, epochs + 1, dtype=float),
                  "lr": 0.1, "train_loss": np.linspace(2, 1, epochs), "test_accuracy": np.linspace(0.1, acc, epochs),
                  "local_test_accuracy": np.linspace(0.1, acc / 2, epochs),
                  "consensus_distance": np.linspace(1, 0.1, epochs), "bytes_sent": 1000, "wall_seconds": 1.0,
                  "n_clients": 4, "test_loss": np.linspace(2, 1.2, epochs)}).to_csv(path / "metrics.csv", index=False)
    counts = np.random.default_rng(seed).integers(0, 50, size=(4, 3))
    part = pd.DataFrame(counts, columns=["class_0", "class_1", "class_2"])
    part.insert(0, "size", counts.sum(1))
    part.insert(0, "client", range(4))
    part.to_csv(path / "partition.csv", index=False)
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "final_test_accuracy": acc, "best_test_accuracy": acc, "rounds": 8 * epochs,
        "wall_seconds": 1.0, "algorithm": algo, "alpha": alpha, "dataset": "synthetic", "topology": "ring",
        "seed": seed}))
    cfg = Config().to_dict()
    cfg["algorithm"]["name"], cfg["data"]["alpha"], cfg["seed"] = algo, alpha, seed
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_report_of_a_run_directory(tmp_path):
    _fake_run(tmp_path / "run")
    written = report.make_report(tmp_path / "run")
    assert {p.name for p in written} == {"curves.png", "partition.png", "accuracy_vs_bytes.png",
                                         "accuracy_vs_bytes.csv"}
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")


def test_report_of_a_sweep_directory_rebuilds_everything_from_trial_dirs(tmp_path):
    sweep = tmp_path / "sweep"
    base = Config().to_dict()
    base["tune"]["grid"] = {"algorithm.name": ["dsgdm_n", "qg_dsgdm_n"], "data.alpha": [10, 0.1], "seed": [0]}
    sweep.mkdir()
    (sweep / "config.yaml").write_text(yaml.safe_dump(base))
    for algo in ("dsgdm_n", "qg_dsgdm_n"):
        for alpha in (10, 0.1):
            acc = {10: 0.6, 0.1: 0.4}[alpha] + (0.05 if algo == "qg_dsgdm_n" else 0)
            _fake_run(sweep / "trials" / f"{algo}_{alpha}", alpha=alpha, algo=algo, acc=acc)
    written = {p.name for p in report.make_report(sweep)}   # no results.csv yet: from the trial dirs
    assert {"results.csv", "histories.csv", "partitions.csv", "table.md", "accuracy_vs_alpha.png",
            "curves_alpha0.1.png", "partitions.png"} <= written
    df = pd.read_csv(sweep / "results.csv")
    assert len(df) == 4 and set(df["status"]) == {"completed"}
    assert "| qg_dsgdm_n | **65.00** | **45.00** |" in (sweep / "table.md").read_text()
    # A copy with only the small files (as committed under docs/) still reports.
    slim = tmp_path / "slim"
    slim.mkdir()
    for name in ("config.yaml", "results.csv", "histories.csv", "partitions.csv"):
        (slim / name).write_bytes((sweep / name).read_bytes())
    assert "curves_alpha0.1.png" in {p.name for p in report.make_report(slim)}


def test_report_refuses_other_directories(tmp_path):
    with pytest.raises(ConfigError, match="neither a run directory"):
        report.make_report(tmp_path)
