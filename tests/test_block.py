"""Blocks (engine/block.py): a block of k clients computes what k separate clients compute,
for every algorithm and model family; per-row state (elastic joiners); packing decisions;
the layout; deterministic mode's wiring; the minimal-Ray fallback."""
import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from qgm_ray import build, determinism, layout
from qgm_ray.algorithms import ALGORITHMS
from qgm_ray.config import load_config
from qgm_ray.engine.assembly import build_block
from qgm_ray.engine.block import PACK_AUTO_MAX_PARAMS, should_pack
from qgm_ray.engine.block_eval import evaluate_packed
from qgm_ray.engine.local import LocalEngine

from numerics import longest_reduction, normwise_error, reduction_bound, unit_roundoff

BASE = ["topology.n_clients=4", "topology.name=ring", "data.batch_size=8", "progress=false", "data.alpha=1.0"]
FAMILIES = {
    "mlp": ["data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}"],
    "cnn1d": ["data.name=mnist1d", "model.name=cnn1d"],
    # BatchNorm buffers stacked per name; GroupNorm; EvoNorm (tiny CIFAR-shaped images).
    "resnet20-bn": ["data.name=synthetic_image", "data.options={num_samples: 200, shape: [3, 8, 8]}",
                    "model.name=resnet20"],
    "resnet20-gn": ["data.name=synthetic_image", "data.options={num_samples: 200, shape: [3, 8, 8]}",
                    "model.name=resnet20", "model.options={norm: gn}"],
    "resnet_evonorm20": ["data.name=synthetic_image", "data.options={num_samples: 200, shape: [3, 8, 8]}",
                         "model.name=resnet_evonorm20"],
}


def _engine(extra, k, pack, float64=False):
    """A local engine with blocks of k clients; `float64`: every tensor in double precision
    (models, data, state), where rounding is 2^29 times smaller than in float32."""
    cfg = load_config(None, BASE + list(extra) + [f"ray.clients_per_actor={k}", f"compute.pack_clients={pack}"])
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    if not float64:
        return LocalEngine(cfg, ds, parts)
    ds = dataclasses.replace(ds, train_x=ds.train_x.double(), test_x=ds.test_x.double())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)   # models and buffers are created in double
    try:
        engine = LocalEngine(cfg, ds, parts)
    finally:
        torch.set_default_dtype(previous)
    assert all(b.params.dtype == b.x.dtype == torch.float64 for b in engine.blocks)
    return engine


LR = (0.05, 0.05, 0.02)   # rounds 0, 1, 2


def _run(engine, rounds=3):
    return engine.train(range(rounds), lambda t: LR[t])


def _bound(engine) -> float:
    """The rounding bound of the longest sum in one client's step (tests/numerics.py)."""
    b = engine.blocks[0]
    return reduction_bound(longest_reduction(b.model, b.batch_size, tuple(b.x.shape[1:])), b.params.dtype)


def _assert_rounds_agree(ref, other, rounds=3):
    """`other` computes what `ref` computes, one round at a time from `ref`'s state.

    Two summation orders cannot be compared along a trajectory: rounding differences of 1e-7
    cross a ReLU kink or meet a BatchNorm over 8 tiny images and grow to 1e-4 within three
    rounds on one CPU and not on another. So each round starts `other` from `ref`'s exact state
    (parameters, buffers, algorithm state, samplers), and checks what one round's arithmetic
    bounds: losses to the reduction bound u_K of the longest sum; every float tensor T to
    8 u_K ||T - T_start|| + 8 u ||T|| (what the round changed is a linear function, of norm
    at most (1 + momentum)^2 < 4, of gradients accurate to u_K, plus one rounding per op)."""
    bound, u = _bound(ref), unit_roundoff(ref.blocks[0].params.dtype)
    for t in range(rounds):
        start = ref.client_states()
        ref._load(start)     # both from the checkpoint's values (buffers travel as float32)
        other._load(start)
        lr, lo = ref.train(range(t, t + 1), lambda r: LR[r]), other.train(range(t, t + 1), lambda r: LR[r])
        assert lo[0].loss == pytest.approx(lr[0].loss, rel=bound, abs=0)
        for s0, sr, so in zip(start, ref.client_states(), other.client_states()):
            assert all(torch.equal(so["sampler"][k], v) for k, v in sr["sampler"].items())
            tensors = [("params", s0["params"], sr["params"], so["params"]),
                       ("buffers", s0["buffers"], sr["buffers"], so["buffers"])]
            tensors += [(key, s0["algorithm"][key], sr["algorithm"][key], so["algorithm"][key]) for key in sr["algorithm"]]
            for key, t0, tr, to in tensors:
                if not tr.is_floating_point():
                    assert torch.equal(to, tr), key
                    continue
                t0, tr, to = t0.double(), tr.double(), to.double()
                allowed = 8 * bound * (tr - t0).norm() + 8 * u * tr.norm()
                assert (to - tr).norm() <= allowed, (f"round {t}, client {sr['id']}, {key}: "
                                                     f"{float((to - tr).norm()):.3g} > {float(allowed):.3g}")


def _compare(extra, rounds=3):
    torch.set_num_threads(1)
    alone = _engine(extra, 1, "false")           # 4 blocks of 1: four separate clients
    block = _engine(extra, 4, "false")           # one block of 4, rows stepped one at a time
    packed = _engine(extra, 4, "true")           # one block of 4, one vmap
    assert len(alone.blocks) == 4 and len(block.blocks) == 1 and block.blocks[0].k == 4
    assert not block.blocks[0].packed and packed.blocks[0].packed
    # Same ops on the same rows in the same order: bit for bit, along the whole trajectory.
    assert _run(alone, rounds) == _run(block, rounds)
    assert torch.equal(alone.params, block.params)
    # vmap turns k convolutions into one grouped one (another summation order): the bounds of
    # that arithmetic, round by round, in float64 (tests/numerics.py says why).
    _assert_rounds_agree(_engine(extra, 1, "false", float64=True), _engine(extra, 4, "true", float64=True), rounds)
    _run(packed, rounds)   # and float32 runs the same program: finite, close to the separate clients
    assert torch.isfinite(packed.params).all()
    assert normwise_error(packed.params, alone.params, dim=1).max() <= 1e-3
    return alone, packed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_block_equals_separate_clients_for_every_algorithm(algorithm):
    _compare(FAMILIES["mlp"] + [f"algorithm.name={algorithm}"])


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "mlp"])
def test_block_equals_separate_clients_for_every_model_family(family):
    alone, packed = _compare(FAMILIES[family] + ["algorithm.name=qg_dsgdm_n"])
    if family == "resnet20-bn":
        # BatchNorm running stats moved, per client, and the block's evaluation reads them.
        bufs = packed.blocks[0].flat_buffers()
        assert bufs.shape[0] == 4 and not torch.equal(bufs[0], bufs[1])
        ea, ep = alone.evaluate(), packed.evaluate()
        assert ep["test_accuracy"] == pytest.approx(ea["test_accuracy"], abs=0.02)


def test_block_augments_each_client_from_its_own_stream():
    """Crop+flip drawn from each client's generator, applied once to the block: a block of 4
    equals 4 lone clients bit for bit. Packed, the gradients on the same parameters and batches
    agree to float rounding (trajectories are compared on un-augmented data above: with
    zero-padded crops, BatchNorm over 8 tiny images turns vmap's 1e-7 summation differences
    into ~1e-3 parameter differences within 3 rounds)."""
    torch.set_num_threads(1)
    aug = ["data.name=synthetic_image", "data.options={num_samples: 200, shape: [3, 8, 8], augment: crop_flip}",
           "model.name=resnet20", "data.augment=true"]
    alone, block = _engine(aug, 1, "false"), _engine(aug, 4, "false")
    assert block.blocks[0].augment == "crop_flip"
    assert _run(alone) == _run(block) and torch.equal(alone.params, block.params)
    unpacked, packed = _engine(aug, 4, "false", float64=True).blocks[0], _engine(aug, 4, "true", float64=True).blocks[0]
    for _ in range(3):
        gu, gp = unpacked.gradients(), packed.gradients()   # same batches: same samplers
        bound = reduction_bound(longest_reduction(packed.model, packed.batch_size, tuple(packed.x.shape[1:])),
                                torch.float64)
        assert normwise_error(gp, gu, dim=1).max() <= bound
        assert normwise_error(packed.losses, unpacked.losses).max() <= bound


def test_qg_adam_block_normalises_per_row():
    _compare(FAMILIES["cnn1d"] + ["algorithm.name=qg_adam"])


@pytest.mark.parametrize("algorithm", ["qg_adam", "dadam", "d2", "gradient_tracking"])
def test_elastic_joiner_gets_fresh_state_in_its_row_only(algorithm):
    """After a reset, row 1 is a fresh client (step 0: its first-step branch, its own bias
    correction) while row 0 keeps its state; each row then equals a lone client."""
    torch.set_num_threads(1)
    extra = FAMILIES["mlp"] + [f"algorithm.name={algorithm}"]
    block = _engine(extra, 2, "true")
    ref = _engine(extra, 1, "false")
    _run(block, 2)
    _run(ref, 2)
    b = block.blocks[0]
    avg, bufs = block.averaged_params()
    b.reset_rows([1], avg, bufs)
    assert b.state["step"].tolist() == [2, 0]
    ref.blocks[1].reset_rows([0], avg, bufs)
    # Row 0 of the block = lone client 0 (already equal); one more round, mixing only with itself.
    eye_lr = 0.03
    for blk in [b] + ref.blocks[:2]:
        blk.post_mix(blk.pre_mix(eye_lr), eye_lr)   # W = I: each row mixes only itself
    torch.testing.assert_close(b.params[0], ref.blocks[0].params[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.params[1], ref.blocks[1].params[0], rtol=1e-5, atol=1e-6)
    assert b.state["step"].tolist() == [3, 1]


def test_client_checkpoint_round_trips_through_block_rows():
    torch.set_num_threads(1)
    engine = _engine(FAMILIES["resnet20-bn"] + ["algorithm.name=qg_adam"], 4, "true")
    _run(engine, 2)
    b = engine.blocks[0]
    state = b.client_state(2)
    assert state["params"].shape == (b.num_params,) and state["algorithm"]["step"].shape == ()
    saved = b.params.clone(), b.flat_buffers().clone()
    b.params[2] += 1.0
    b.load_client_state(2, state)
    assert torch.equal(b.params, saved[0]) and torch.equal(b.flat_buffers(), saved[1])
    # The same client in a block of another size continues identically (resume / resize).
    other = _engine(FAMILIES["resnet20-bn"] + ["algorithm.name=qg_adam"], 1, "false")
    for i, s in enumerate(engine.client_states()):
        other.blocks[i].load_client_state(0, s)
    torch.testing.assert_close(other.params, engine.params, rtol=0, atol=0)


@pytest.mark.parametrize("device,mode,k,params,packed", [
    ("cuda", False, 1, 10**7, True),       # on a GPU a block always steps packed
    ("cuda", "auto", 16, 272_474, True),
    ("cpu", "auto", 8, 5_000, True),
    ("cpu", "auto", 4, 5_000, False),
    ("cpu", "auto", 16, PACK_AUTO_MAX_PARAMS + 1, False),
    ("cpu", True, 2, 10**6, True),
    ("cpu", True, 1, 10, False),
    ("cpu", False, 64, 10, False),
])
def test_packing_decision_per_device(device, mode, k, params, packed):
    assert should_pack(mode, k, params, device) is packed


def test_layout_is_computed_without_ray_and_shared_by_both_engines():
    cfg = load_config(None, BASE + ["topology.n_clients=10"])
    lay = layout.plan(cfg, {"CPU": 4.0, "GPU": 0.0}, "cpu")
    assert lay.k == 3 and lay.groups(10) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert layout.plan(cfg, {"CPU": 16.0, "GPU": 2.0}, "cuda").k == 5   # one block per GPU
    assert lay.block_of(10)[7] == (2, 1)
    from qgm_ray.engine.ray_setup import resolve_clients_per_actor
    assert resolve_clients_per_actor(cfg, 10, {"CPU": 4.0}).ray.clients_per_actor == lay.k
    # The local engine learns k without Ray.
    code = ("import sys, qgm_ray.engine.local; "
            "assert 'ray' not in sys.modules and 'qgm_ray.engine.ray_setup' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_deterministic_mode_wiring(monkeypatch):
    off = load_config(None, BASE)
    on = load_config(None, BASE + ["deterministic=true"])
    assert off.deterministic is False and determinism.env_vars(off) == {}
    assert determinism.env_vars(on) == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        assert determinism.apply(off) is False and not torch.are_deterministic_algorithms_enabled()
        assert determinism.apply(on) is True
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(was)


def test_minimal_ray_without_dashboard_starts_with_a_log_line(monkeypatch):
    ray = pytest.importorskip("ray")
    from qgm_ray.engine import ray_setup
    calls, logs = [], []

    def fake_init(**kwargs):
        calls.append(kwargs)
        if kwargs.get("include_dashboard"):
            raise RuntimeError("Cannot include dashboard with missing packages, include_dashboard=False")
        return "ctx"
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    cfg = load_config(None, BASE)
    assert ray_setup.start_local_ray(cfg, logs.append) == "ctx"
    assert [c["include_dashboard"] for c in calls] == [True, False]
    assert calls[1]["address"] == "local"
    assert len(logs) == 1 and "dashboard could not start" in logs[0] and "missing packages" in logs[0]


def test_ray_dashboard_false_starts_a_local_ray_without_it(monkeypatch):
    ray = pytest.importorskip("ray")
    from qgm_ray.engine import ray_setup
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs) or "ctx")
    cfg = load_config(None, BASE + ["ray.dashboard=false"])
    assert ray_setup.start_local_ray(cfg, lambda m: None) == "ctx"
    assert [c["include_dashboard"] for c in calls] == [False] and "dashboard_host" not in calls[0]


def test_block_mix_and_exports_on_a_ring_split_in_two_blocks():
    """A block mixes its own rows and the rows it received with one multiply-add per
    in-neighbour slot; it only has to export the rows the other block mixes."""
    import numpy as np

    from qgm_ray.engine.base import block_mix, exports, wiring
    from qgm_ray.topology import make_topology
    W = make_topology("ring", 6).matrix(0)
    payloads = torch.randn(6, 5)
    assert exports(W, [0, 1, 2]) == [0, 2] and exports(W, [3, 4, 5]) == [3, 5] and exports(W, range(6)) == []
    rows, sources = wiring(W, [0, 1, 2])
    assert sources == [3, 5]
    mixed = block_mix(payloads[:3], [0, 1, 2], rows, sources, [payloads[3], payloads[5]])
    want = torch.tensor(np.asarray(W, dtype=np.float32)) @ payloads
    torch.testing.assert_close(mixed, want[:3])


# ------------------------------------------------------------------ vmap chunks (engine/memory.py)

@pytest.mark.parametrize("family", ["mlp", "resnet20-bn"])
def test_packed_block_in_chunks_equals_the_whole_vmap(family):
    """Chunks of rows (a GPU block too big for one vmap) compute what one vmap computes: the
    same gradients, losses and BatchNorm running stats, row by row."""
    torch.set_num_threads(1)
    whole = _engine(FAMILIES[family], 4, "true", float64=True)
    chunked = _engine(FAMILIES[family] + ["compute.vmap_chunk=3"], 4, "true", float64=True)   # rows 0-2, then 3
    assert whole.blocks[0].chunk == 4 and chunked.blocks[0].chunk == 3
    _assert_rounds_agree(whole, chunked)


def test_probe_step_changes_nothing():
    torch.set_num_threads(1)
    e = _engine(FAMILIES["resnet20-bn"], 4, "true")
    b = e.blocks[0]
    before = (b.params.clone(), b.flat_buffers().clone(), [s.state_dict() for s in b.samplers], torch.get_rng_state())
    b.probe_step(1)
    b.probe_step(2)
    assert torch.equal(b.params, before[0]) and torch.equal(b.flat_buffers(), before[1])
    for s, old in zip(b.samplers, before[2]):
        now = s.state_dict()
        assert now.keys() == old.keys()
        assert all(torch.equal(now[key], old[key]) if isinstance(now[key], torch.Tensor) else now[key] == old[key]
                   for key in now)
    assert torch.equal(torch.get_rng_state(), before[3])


def test_chunk_from_a_measured_step():
    from qgm_ray.engine import memory
    # a step that needs 100 fixed + 30 per row (what a GPU allocator's peak would say)
    step_peak = {1: 130, 2: 160}
    calls = []
    base, per_row = memory.probe(lambda rows: calls.append(rows), lambda fn: (fn(), step_peak[calls[-1]])[1])
    assert (base, per_row) == (100, 30) and calls == [1, 2]
    assert memory.chunk_rows(k=64, budget=100 + 30 * 10, base=base, per_row=per_row) == 10
    assert memory.chunk_rows(k=8, budget=10**9, base=base, per_row=per_row) == 8    # fits whole
    assert memory.chunk_rows(k=8, budget=50, base=base, per_row=per_row) == 1       # never below 1
    # CPU blocks are never chunked by auto (no GPU memory to run out of)
    e = _engine(FAMILIES["mlp"], 4, "true")
    assert memory.auto_chunk(e.blocks[0], 1.0) == 4


@pytest.mark.parametrize("bad", ["0", "-2", "many", "true"])
def test_vmap_chunk_must_be_auto_or_a_positive_integer(bad):
    from qgm_ray.errors import ConfigError
    with pytest.raises(ConfigError, match="compute.vmap_chunk"):
        load_config(None, BASE + FAMILIES["mlp"] + [f"compute.vmap_chunk={bad}"])


def test_block_crops_pad_with_the_datasets_fill():
    """Crop padding is the dataset's fill (black in normalised units for CIFAR: the official
    code's RandomCrop(32, padding=4) before Normalize), not 0 (the mean colour)."""
    import dataclasses

    from qgm_ray.data import apply_augment, draw_augment
    aug = ["data.name=synthetic_image", "data.options={num_samples: 200, shape: [3, 8, 8], augment: crop}",
           "model.name=cnn", "data.augment=true"]
    cfg = load_config(None, BASE + aug + ["ray.clients_per_actor=2"])
    ds = dataclasses.replace(build.build_dataset(cfg), fill=(-1.5, -2.5, -3.5))
    block = build_block(cfg, ds, build.build_partition(cfg, ds), [0, 1], "cpu")
    assert block.fill == (-1.5, -2.5, -3.5)
    # the batch a block draws: each client's next indices, then its own crop draws (fresh epoch:
    # the sampler's order is already drawn, so its generator's next numbers are the crops)
    gens = [torch.Generator().set_state(s.generator.get_state()) for s in block.samplers]
    idx = [s.order[s.pos:s.pos + block.batch_size].clone() + off for s, off in zip(block.samplers, block.offsets.tolist())]
    xb, _ = block._batches()
    for i, (g, rows) in enumerate(zip(gens, idx)):
        params = draw_augment(block.batch_size, g, "crop")
        expect = apply_augment(block.x[rows], params, "crop", fill=(-1.5, -2.5, -3.5))
        assert torch.equal(xb[i], expect)
    assert (xb == -2.5).any()   # some crop reached into the padding


def test_packed_local_model_evaluation_equals_one_by_one():
    """The GPU path (one vmapped forward per chunk of rows), run here on CPU."""
    torch.set_num_threads(1)
    e = _engine(FAMILIES["resnet20-bn"], 4, "true")
    _run(e)
    b = e.blocks[0]
    b.chunk = 3   # rows 0-2, then 3
    vmapped = evaluate_packed(b, e.test_x, e.test_y, 16)
    assert vmapped == b.evaluate_rows(e.test_x, e.test_y, 16)


# ------------------------------------------------------------------ another CPU's kernels

@pytest.mark.slow
def test_packed_checks_hold_on_another_kernel_path():
    """The suite runs on this CPU's best ATen kernels (AVX-512 or AVX2); another CPU runs
    others, whose reductions sum in another order. The packed-vs-separate checks above, the
    chunked ones and tests/test_models.py's must hold there too: rerun them on ATen's scalar
    kernels (ATEN_CPU_CAPABILITY=default), or on AVX2 when this process already is scalar."""
    import torch.backends.cpu
    other = "avx2" if torch.backends.cpu.get_cpu_capability() == "DEFAULT" else "default"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "ATEN_CPU_CAPABILITY": other}
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == other.upper(), probe.stdout + probe.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_block.py",
                        "tests/test_models.py", "-k", "equals_separate or in_chunks or augments or normalises or vmap_packed"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1] and "failed" not in r.stdout.splitlines()[-1]
