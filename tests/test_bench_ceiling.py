"""bench/ceiling.py (`python main.py bench --ceiling`): its records and table, on the smallest
packed block (no timing asserts)."""
import json

from bench import ceiling
from qgm_ray.cli import parse_args

TINY = {"ns": (16,), "warmup": 1, "blocks": 2, "seconds_per_block": 0.0}


def test_ceiling_bench_times_both_kernels_against_one_ceiling(tmp_path, monkeypatch):
    monkeypatch.setitem(ceiling.PLANS, "quick", TINY)
    out = tmp_path / "ceiling.json"
    assert ceiling.main(quick=True, output=str(out), models=("mlp",)) == 0
    records = json.loads(out.read_text())["records"]
    assert [(r["model"], r["n_clients"], r["variant"]) for r in records] == [("mlp", 16, "default"), ("mlp", 16, "vmap")]
    default, vmap = records
    assert default["kernels"] == ["batched"] and vmap["kernels"] == ["vmap"]
    assert default["blocks"] * default["clients_per_block"] == 16 and default["torch_threads"] == 1
    assert default["ceiling_round_seconds"] == vmap["ceiling_round_seconds"] > 0   # one ceiling for both
    for r in records:
        assert len(r["engine_round_seconds_all"]) == TINY["blocks"]
        assert r["ceiling_ratio"] == r["ceiling_round_seconds"] / r["engine_round_seconds"]
        floor, ceil = r["traffic_floor_seconds"], r["ceiling_round_seconds"]
        assert floor > 0 and r["ratio_bound"] == ceil / (ceil + floor) < 1
    assert out.with_suffix(".md").read_text().count("| mlp | 16 |") == 2


def test_bench_takes_the_ceiling_flag():
    args = parse_args(["bench", "--ceiling", "--quick"])
    assert args.ceiling and args.quick and not args.scale
