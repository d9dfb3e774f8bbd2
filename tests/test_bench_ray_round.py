"""bench/ray_round.py (`python main.py bench --ray-round`): its records and table on a tiny run
(no timing asserts)."""
import json

import pytest

from bench import ray_round
from qgm_ray.cli import parse_args

from helpers import small_run

pytestmark = pytest.mark.ray
TINY = {"warmup": 1, "blocks": 2, "seconds_per_block": 0.0}


def test_ray_round_bench_times_every_configuration(ray_session, tmp_path, monkeypatch):
    monkeypatch.setitem(ray_round.PLANS, "quick", TINY)
    # One ClientActor per Ray configuration: the bench's records are under test, not the exchange.
    monkeypatch.setattr(ray_round, "OVERRIDES", small_run("topology.n_clients=4", "ray.clients_per_actor=4",
                                                          "ray.reuse_actors=false"))
    out = tmp_path / "round.json"
    assert ray_round.main(quick=True, output=str(out)) == 0
    records = {r["configuration"]: r for r in json.loads(out.read_text())["records"]}
    assert list(records) == ["local, 1 thread", "local, all cores", "ray", "ray, a call a round",
                             "ceiling, 1 thread", "ceiling, all cores"]
    assert records["ray"]["fused"] is True and records["ray, a call a round"]["fused"] is False
    assert records["local, 1 thread"]["fused"] is None
    local_all, ceiling_all = records["local, all cores"], records["ceiling, all cores"]
    for r in records.values():
        assert len(r["round_seconds_all"]) == TINY["blocks"] and r["round_seconds"] > 0
        assert r["cpu_seconds_per_round"] >= 0
        assert r["ray_over_local_all_cores"] == r["round_seconds"] / local_all["round_seconds"]
        assert r["ceiling_ratio_all_cores"] == ceiling_all["round_seconds"] / r["round_seconds"]
    assert out.with_suffix(".md").read_text().count("| ray") == 2


def test_bench_takes_the_ray_round_flag():
    args = parse_args(["bench", "--ray-round", "--quick"])
    assert args.ray_round and args.quick and not args.ceiling
