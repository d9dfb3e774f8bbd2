"""qgm_ray.compression: the wire invariants of every compressor, the math of each built-in
against a plain per-row reference, the stream, and the one-line errors for bad options."""
from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest
import torch

from qgm_ray.compression import (COMPRESSORS, Compressor, check_compressor, compressor_options, make_compressor,
                                 stream_keys)
from qgm_ray.compression.stream import entry_hashes, uniforms
from qgm_ray.errors import ConfigError

M32 = 0xFFFFFFFF

# Every built-in, with options that compress (keep < 1), at least once each.
CASES = [("none", {}), ("top_k", {"keep": 0.25}), ("top_k", {"keep": 1.0}),
         ("random_k", {"keep": 0.3}), ("random_k", {"keep": 0.3, "unbiased": True}),
         ("qsgd", {"levels": 1}), ("qsgd", {"levels": 5}), ("qsgd", {"levels": 255, "unbiased": False}),
         ("sign", {})]


def block(k=6, d=37, seed=0):
    """Rows with exact ties, zeros and a negative zero, so tie-breaking and signs are exercised."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(k, d, generator=g)
    special = torch.tensor([0.5, -0.5, 0.0, -0.0])[:d]
    rows[:, :special.numel()] = special
    rows[1] = 0.0
    return rows


def bits(t: torch.Tensor) -> torch.Tensor:
    """A float32 tensor's bit patterns: equality that tells -0.0 from 0.0."""
    return t.contiguous().view(torch.int32)


# ------------------------------------------------------------------ independent references

def hash32_reference(x: int) -> int:
    """The stream's 32-bit hash in plain Python integers."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M32
    x ^= x >> 15
    x = (x * 0x735A2D97) & M32
    return x ^ (x >> 15)


def stream_keys_reference(seed, slots, t):
    base = hash32_reference((seed & M32) ^ 0x9E3779B9)
    return [hash32_reference(hash32_reference(base ^ s) ^ t) for s in slots]


def entry_hashes_reference(key, d):
    return [hash32_reference(key ^ hash32_reference(j ^ 0x85EBCA6B)) for j in range(d)]


def kept_reference(d, keep):
    return max(1, int(round(d * keep, 6)))


def top_k_reference(row: np.ndarray, keep: float) -> np.ndarray:
    """The m largest |x|, a tie to the lower index: a stable sort on -|x|."""
    m = kept_reference(row.size, keep)
    order = sorted(range(row.size), key=lambda j: (-abs(float(row[j])), j))[:m]
    q = np.zeros_like(row)
    q[order] = row[order]
    return q


def random_k_reference(row: np.ndarray, key: int, keep: float, unbiased: bool) -> np.ndarray:
    """The m entries with the smallest hashes (index breaking ties)."""
    d = row.size
    m = kept_reference(d, keep)
    h = entry_hashes_reference(key, d)
    chosen = sorted(range(d), key=lambda j: (h[j], j))[:m]
    q = np.zeros_like(row)
    q[chosen] = row[chosen] * (np.float32(d / m) if unbiased else np.float32(1))
    return q


def qsgd_reference(row: np.ndarray, key: int, levels: int, unbiased: bool) -> np.ndarray:
    """In float64: the level is floor(s |x| / norm), plus one when the key's uniform for the
    entry falls below the fractional part."""
    x = row.astype(np.float64)
    d, s = x.size, levels
    norm = math.sqrt(float(np.sum(x * x)))
    if norm == 0:
        return np.zeros(d)
    u = np.array(entry_hashes_reference(key, d), dtype=np.float64) // 2 ** 8 / 2 ** 24
    ratio = s * np.abs(x) / norm
    level = np.floor(ratio) + (u < ratio - np.floor(ratio))
    tau = 1.0 if unbiased else 1.0 / (1.0 + min(d / s ** 2, math.sqrt(d) / s))
    return tau * norm * np.sign(x) * level / s


def sign_reference(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    return np.abs(x).sum() / x.size * np.where(x < 0, -1.0, 1.0)


def reference(name, options, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
    x = rows.numpy()
    out = []
    for i in range(x.shape[0]):
        if name == "none":
            out.append(x[i].copy())
        elif name == "top_k":
            out.append(top_k_reference(x[i], options["keep"]))
        elif name == "random_k":
            out.append(random_k_reference(x[i], int(keys[i]), options["keep"], options.get("unbiased", False)))
        elif name == "qsgd":
            out.append(qsgd_reference(x[i], int(keys[i]), options["levels"], options.get("unbiased", True)))
        elif name == "sign":
            out.append(sign_reference(x[i]))
        else:
            raise AssertionError(name)
    return np.stack(out)


def wire_reference(name, options, d):
    m = kept_reference(d, options.get("keep", 1.0))
    index = 2 if d <= 65536 else 4
    if name == "qsgd":
        width = 1 + math.ceil(math.log2(options["levels"] + 1))
        return 4 + math.ceil(d * width / 8)
    return {"none": 4 * d, "top_k": 4 * m + index * m, "random_k": 4 * m, "sign": 4 + math.ceil(d / 8)}[name]


# ------------------------------------------------------------------ the stream

def test_stream_keys_equal_a_plain_integer_reference():
    slots = [0, 1, 2, 7, 4095, 2 ** 32 - 1]
    for seed, t in [(0, 0), (1, 0), (0, 1), (2 ** 40 + 5, 123456), (-3, 9)]:
        keys = stream_keys(seed, slots, t)
        assert keys.dtype == torch.int64 and keys.shape == (len(slots),)
        assert keys.tolist() == stream_keys_reference(seed, slots, t)


def test_stream_keys_differ_across_seed_slot_and_round():
    keys = {int(k) for seed in range(3) for t in range(20) for k in stream_keys(seed, range(50), t)}
    assert len(keys) == 3 * 20 * 50


def test_entry_hashes_and_uniforms_equal_the_reference():
    keys = stream_keys(5, [0, 3], 2)
    h = entry_hashes(keys, 50)
    for i in range(2):
        assert h[i].tolist() == entry_hashes_reference(int(keys[i]), 50)
    assert h.dtype == np.uint32
    u = uniforms(keys, 50)
    assert u.dtype == np.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert np.array_equal(u.astype(np.float64), (h >> 8) / 2 ** 24)


def test_uniforms_are_uniform():
    u = uniforms(stream_keys(0, range(100), 0), 1000).ravel()
    # 100,000 draws: the mean's std is sqrt(1/12 / 1e5) < 1e-3; each decile's count std is 95.
    assert abs(u.mean() - 0.5) < 6e-3
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10_000) < 600)


@pytest.mark.parametrize("bad", [dict(seed=1.5, slots=[0], t=0), dict(seed=0, slots=[-1], t=0),
                                 dict(seed=0, slots=[0], t=-1), dict(seed=0, slots=[0], t=2 ** 32)])
def test_stream_keys_refuse_what_is_not_a_32_bit_counter(bad):
    with pytest.raises(ValueError, match="stream_keys"):
        stream_keys(**bad)


# ------------------------------------------------------------------ the invariants, every built-in

@pytest.mark.parametrize("name,options", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("d", [1, 8, 37, 70_000])
def test_decode_of_encode_is_compress_bit_for_bit_and_the_wire_is_honest(name, options, d):
    k = 3 if d > 1000 else 6
    rows = block(k, d)
    keys = stream_keys(1, range(10, 10 + k), 4)
    comp = make_compressor(name, **options)
    q = comp.compress(rows, keys)
    wire = comp.encode(rows, keys)
    assert isinstance(wire, np.ndarray) and wire.dtype == np.uint8
    assert wire.shape == (k, comp.wire_bytes(d)) and comp.wire_bytes(d) == wire_reference(name, options, d)
    back = comp.decode(wire, keys, d)
    assert q.dtype == back.dtype == torch.float32 and q.shape == back.shape == (k, d)
    assert torch.equal(bits(back), bits(q))
    # pure: the same (rows, keys) give the same q and wire, and rows are left as they were
    assert torch.equal(bits(comp.compress(rows.clone(), keys.clone())), bits(q))
    assert np.array_equal(comp.encode(rows, keys), wire)
    assert torch.equal(rows, block(k, d))


@pytest.mark.parametrize("name,options", CASES, ids=lambda c: str(c))
def test_each_row_matches_a_plain_per_row_reference(name, options):
    rows, keys = block(), stream_keys(3, range(6), 11)
    q = make_compressor(name, **options).compress(rows, keys)
    expected = reference(name, options, rows, keys)
    if name in ("qsgd", "sign"):   # float32 against float64: a norm's or a sum's rounding apart
        assert np.allclose(q.numpy(), expected, rtol=1e-5, atol=0)
        assert np.array_equal(q.numpy() == 0, expected == 0)
    else:
        assert np.array_equal(q.numpy(), expected)


@pytest.mark.parametrize("name,options", CASES, ids=lambda c: str(c))
def test_a_row_does_not_depend_on_the_rows_beside_it(name, options):
    rows, keys = block(8, 50), stream_keys(0, range(8), 2)
    comp = make_compressor(name, **options)
    whole = comp.compress(rows, keys)
    for i in (0, 5):
        assert torch.equal(bits(comp.compress(rows[i:i + 1], keys[i:i + 1])), bits(whole[i:i + 1]))


def test_top_k_keep_1_is_x_exactly():
    rows = block(5, 300)
    comp = make_compressor("top_k", keep=1.0)
    keys = stream_keys(0, range(5), 0)
    assert torch.equal(bits(comp.compress(rows, keys)), bits(rows))
    assert torch.equal(bits(comp.decode(comp.encode(rows, keys), keys, 300)), bits(rows))


def test_top_k_breaks_ties_toward_the_lower_index():
    rows = torch.tensor([[1.0, -2.0, 2.0, -2.0, 0.5]])
    q = make_compressor("top_k", keep=0.4).compress(rows, stream_keys(0, [0], 0))
    assert q.tolist() == [[0.0, -2.0, 2.0, 0.0, 0.0]]


def test_top_k_sends_uint32_indices_beyond_65536_entries():
    comp = make_compressor("top_k", keep=0.5)
    assert comp.wire_bytes(65536) == 32768 * 6 and comp.wire_bytes(65537) == 32768 * 8


@pytest.mark.parametrize("d,keep,m", [(5000, 0.1, 500), (10, 0.3, 3), (100, 0.29, 29), (7, 0.01, 1), (3, 1.0, 3)])
def test_kept_entries_is_floor_of_d_keep_at_least_one(d, keep, m):
    assert make_compressor("random_k", keep=keep).wire_bytes(d) == 4 * m


def test_random_k_draws_m_entries_per_row_anew_per_key():
    rows = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))   # no zeros
    comp = make_compressor("random_k", keep=0.1)
    q = comp.compress(rows, stream_keys(0, range(4), 0))
    chosen = [frozenset(torch.nonzero(r).flatten().tolist()) for r in q]
    assert [len(s) for s in chosen] == [10] * 4 and len(set(chosen)) == 4
    later = comp.compress(rows, stream_keys(0, range(4), 1))   # the next round draws anew
    assert all(frozenset(torch.nonzero(r).flatten().tolist()) != s for r, s in zip(later, chosen))


def test_random_k_unbiased_mean_approaches_x():
    d, keep, draws = 20, 0.25, 4000
    x = torch.linspace(-1, 1, d).reshape(1, d)
    comp = make_compressor("random_k", keep=keep, unbiased=True)
    keys = stream_keys(7, range(draws), 0)
    q = comp.compress(x.expand(draws, d).contiguous(), keys).double()
    # q_i = (d/m) x_i with probability m/d: Var = x_i^2 (d/m - 1); 6 std of the mean.
    m = kept_reference(d, keep)
    bound = 6 * x.double().abs() * math.sqrt((d / m - 1) / draws) + 1e-7
    assert torch.all((q.mean(0) - x.double()).abs() <= bound)
    # and it is unbiased only with the scaling: the plain draw's mean is x * m/d
    biased = make_compressor("random_k", keep=keep).compress(x.expand(draws, d).contiguous(), keys).double()
    assert torch.allclose(biased.mean(0) * d / m, q.mean(0), atol=1e-6)


def test_qsgd_unbiased_mean_approaches_x():
    d, s, draws = 20, 2, 4000
    x = torch.linspace(-1, 1, d).reshape(1, d)
    keys = stream_keys(11, range(draws), 3)
    q = make_compressor("qsgd", levels=s).compress(x.expand(draws, d).contiguous(), keys).double()
    # q_i = norm/s (l + B), B Bernoulli(frac): Var <= (norm / s)^2 / 4; 6 std of the mean.
    norm = float(x.double().norm())
    assert torch.all((q.mean(0) - x.double()).abs() <= 6 * norm / (2 * s) / math.sqrt(draws))
    levels = (q.abs() * s / norm).round()
    assert torch.allclose(q.abs() * s / norm, levels, atol=1e-5) and float(levels.max()) <= s


def test_qsgd_biased_scales_the_unbiased_q():
    d, s = 37, 3
    rows, keys = block(6, d), stream_keys(0, range(6), 5)
    unbiased = make_compressor("qsgd", levels=s).compress(rows, keys)
    biased = make_compressor("qsgd", levels=s, unbiased=False).compress(rows, keys)
    tau = 1 / (1 + min(d / s ** 2, math.sqrt(d) / s))
    assert torch.allclose(biased, unbiased * tau, rtol=1e-6, atol=0)


def test_sign_of_zero_is_plus_and_a_zero_row_is_zero():
    rows = torch.tensor([[0.0, -0.0, 2.0, -4.0], [0.0, 0.0, 0.0, 0.0]])
    q = make_compressor("sign").compress(rows, stream_keys(0, [0, 1], 0))
    assert q.tolist() == [[1.5, 1.5, 1.5, -1.5], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 9, 17, 32])
def test_packing_is_bit_planes_in_packbits_order_and_unpacks(width):
    from qgm_ray.compression import bits
    rng = np.random.default_rng(width)
    for d in (1, 7, 13):
        codes = rng.integers(0, 2 ** width, (3, d), dtype=np.uint64).astype(np.uint32)
        packed = bits.pack(codes, width)
        # the reference: plane b holds bit (width - 1 - b) of every code, planes one after the other
        string = [[(int(codes[r, j]) >> (width - 1 - b)) & 1 for b in range(width) for j in range(d)]
                  for r in range(3)]
        assert np.array_equal(packed, np.packbits(np.array(string, dtype=np.uint8), axis=1))
        assert packed.shape[1] == bits.packed_bytes(d, width) == math.ceil(d * width / 8)
        assert np.array_equal(bits.unpack(packed, d, width), codes)


# ------------------------------------------------------------------ the registry and options

def test_built_ins_are_registered_and_list_their_options():
    assert COMPRESSORS == ("none", "top_k", "random_k", "qsgd", "sign")
    assert set(compressor_options("none")) == set(compressor_options("sign")) == set()
    assert set(compressor_options("top_k")) == {"keep"}
    assert compressor_options("random_k")["unbiased"] is False
    assert compressor_options("qsgd")["unbiased"] is True


@pytest.mark.parametrize("name,options,message", [
    ("top_k", {"keep": 0}, "compression.keep must be a number in (0, 1], got 0"),
    ("top_k", {"keep": 1.5}, "compression.keep must be a number in (0, 1], got 1.5"),
    ("random_k", {"keep": True}, "compression.keep must be a number in (0, 1], got True"),
    ("random_k", {"keep": "0.1"}, "compression.keep must be a number in (0, 1], got '0.1'"),
    ("random_k", {"keep": 0.1, "unbiased": "yes"}, "compression.unbiased must be true or false, got 'yes'"),
    ("random_k", {"keep": 0.1, "unbiased": 1}, "compression.unbiased must be true or false, got 1"),
    ("top_k", {}, "compression.op='top_k' needs compression.keep"),
    ("qsgd", {"levels": 0}, "compression.levels must be an integer in [1, 16777215], got 0"),
    ("qsgd", {"levels": 2.0}, "compression.levels must be an integer in [1, 16777215], got 2.0"),
    ("qsgd", {"levels": 4, "unbiased": None}, "compression.unbiased must be true or false, got None"),
    ("qsgd", {}, "compression.op='qsgd' needs compression.levels"),
    ("sign", {"keep": 0.1}, "compression.keep is not an option of compression.op='sign' (its options: none)"),
    ("none", {"keep": 0.5}, "compression.keep is not an option of compression.op='none' (its options: none)"),
    ("top_k", {"keep": 0.5, "levels": 4}, "compression.levels is not an option of compression.op='top_k' "
                                         "(its options: keep)"),
    ("top_kk", {}, "compression.op='top_kk' is unknown; choose one of none, top_k, random_k, qsgd, sign"),
])
def test_bad_options_are_one_line_naming_the_key(name, options, message):
    with pytest.raises(ConfigError) as e:
        make_compressor(name, **options)
    assert message in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ a compressor of one's own

PLUGIN = '''
import numpy as np
import torch
from qgm_ray.compression import Compressor
from qgm_ray.errors import ConfigError


class Half(Compressor):
    """float16 values: 2 bytes an entry. Only the three methods the contract requires."""

    def __init__(self, scale: float = 1.0):
        if not scale > 0:
            raise ConfigError(f"compression.scale must be > 0, got {scale!r}")
        self.scale = scale

    def wire_bytes(self, d):
        return 2 * d

    def encode(self, rows, keys):
        return (rows * self.scale).half().cpu().numpy().astype("<f2").view(np.uint8)

    def decode(self, wire, keys, d):
        half = torch.from_numpy(np.ascontiguousarray(wire).view("<f2").astype(np.float16))
        return half.float().to(keys.device) / self.scale


def not_a_class(d):
    return d


class Lossy(Half):
    """decode that does not rebuild what compress gives."""

    def compress(self, rows, keys):
        return rows.clone()


class Short(Half):
    def wire_bytes(self, d):
        return 2 * d + 1


class Stateful(Half):
    calls = 0

    def compress(self, rows, keys):
        type(self).calls += 1
        return super().compress(rows, keys) * type(self).calls


class Crashes(Half):
    def encode(self, rows, keys):
        raise RuntimeError("no wire today\\nsecond line")
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_compressors.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_compressors"
    sys.modules.pop("my_compressors", None)


def test_a_plug_in_compressor_by_reference_keeps_the_invariants(plugin_module):
    comp = make_compressor(f"{plugin_module}:Half", scale=2.0)
    assert comp.name == f"{plugin_module}:Half" and isinstance(comp, Compressor)
    rows, keys = block(4, 33), stream_keys(0, range(4), 0)
    wire = comp.encode(rows, keys)
    assert wire.shape == (4, comp.wire_bytes(33)) == (4, 66)
    q = comp.compress(rows, keys)   # the default: decode(encode(...))
    assert torch.equal(bits(q), bits(comp.decode(wire, keys, 33)))
    assert torch.equal(q, (rows * 2).half().float() / 2)
    assert compressor_options(f"{plugin_module}:Half") == {"scale": 1.0}


def test_a_plug_in_s_bad_option_or_wrong_kind_is_one_line(plugin_module):
    with pytest.raises(ConfigError, match=r"^compression.scale must be > 0, got -1$"):
        make_compressor(f"{plugin_module}:Half", scale=-1)
    with pytest.raises(ConfigError, match="not a subclass of qgm_ray.compression.Compressor"):
        make_compressor(f"{plugin_module}:not_a_class")
    with pytest.raises(ConfigError, match="no module named 'nowhere_at_all'"):
        make_compressor("nowhere_at_all:Thing")


@pytest.mark.parametrize("name,options", CASES, ids=lambda c: str(c))
def test_every_built_in_passes_the_contract_check(name, options):
    check_compressor(make_compressor(name, **options))


@pytest.mark.parametrize("attr,message", [
    ("Lossy", "decode(encode(rows)) differs from compress(rows)"),
    ("Short", "encode of a (3, 19) block must be a uint8 numpy array of shape (3, wire_bytes(19) = 39), "
              "got uint8 (3, 38)"),
    ("Stateful", "compress gave two results for the same rows and keys"),
    ("Crashes", "encode on a (3, 19) block failed: RuntimeError: no wire today"),
])
def test_the_contract_check_names_what_a_plug_in_breaks(plugin_module, attr, message):
    comp = make_compressor(f"{plugin_module}:{attr}")
    with pytest.raises(ConfigError) as e:
        check_compressor(comp)
    assert str(e.value).startswith(f"compression.op='{plugin_module}:{attr}': ") and message in str(e.value)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ the registry as a plugins kind

def test_importing_the_registry_loads_no_torch():
    import subprocess
    code = ("import sys, qgm_ray.compression as c; from qgm_ray import plugins; "
            "plugins.check_name('compressor', 'top_k'); "
            "assert c.COMPRESSORS[0] == 'none' and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr


def test_a_compression_op_reference_is_a_plug_in_of_the_config():
    from types import SimpleNamespace as NS

    from qgm_ray import plugins
    cfg = NS(algorithm=NS(name="dsgd"), model=NS(name="mlp"), data=NS(name="synthetic"), topology=NS(name="ring"),
             compression=NS(op="my_pkg.comp:Half"), tune=NS(grid={"compression.op": ["top_k", "other.mod:Q"]}))
    assert plugins.configured(cfg, "compressor") == "my_pkg.comp:Half"
    assert plugins.references(cfg) == {"compression.op": "my_pkg.comp:Half", "tune.grid.compression.op[1]": "other.mod:Q"}
    del cfg.compression   # a config without the section names no compressor
    assert plugins.configured(cfg, "compressor") is None and "compression.op" not in plugins.references(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name,options", CASES, ids=lambda c: str(c))
def test_rows_on_a_gpu_give_the_cpu_s_q_on_the_gpu(name, options):
    rows, keys = block(), stream_keys(0, range(6), 1)
    comp = make_compressor(name, **options)
    q = comp.compress(rows.cuda(), keys)
    back = comp.decode(comp.encode(rows.cuda(), keys), keys.cuda(), rows.shape[1])
    assert q.device.type == back.device.type == "cuda"
    assert torch.equal(bits(q.cpu()), bits(comp.compress(rows, keys))) and torch.equal(bits(back.cpu()), bits(q.cpu()))
