"""Compressors: what a client sends instead of its P float32s.

Built-ins (`compression.op`): `none`, `top_k`, `random_k`, `qsgd`, `sign`; a compressor of your
own is named by reference, `compression.op: "package.module:Class"`.

The contract (what a compressor of your own must do). Subclass `Compressor`; its `__init__`
takes as keyword options the `compression.*` keys it reads (a parameter without a default is
required), checks them and raises `qgm_ray.ConfigError` with one line naming the key and the
allowed values. Then:

    wire_bytes(d) -> int
        the exact bytes of ONE compressed row of d floats: what the run counts as sent.
    encode(rows, keys) -> numpy uint8 array (k, wire_bytes(d))
        rows: a (k, d) float32 tensor on any device, one client per row; keys: (k,) int64,
        one stream key per row. The wire form of the rows' compressed values q.
    decode(wire, keys, d) -> float32 tensor (r, d) on keys' device
        the q that `encode` sent, from the wire rows and their keys alone.
    compress(rows, keys) -> float32 tensor (k, d) on rows' device
        the same q as decode(encode(rows, keys), keys, d), bit for bit. The default does
        exactly that; override it only to skip the bytes.

Every method is a pure function of its arguments: no state kept between calls, no random
generator of its own. Randomness comes from the keys: `stream.uniforms(keys, d)` or
`stream.entry_hashes(keys, d)` give numbers that depend only on (key, entry), so a receiver
can regenerate what the sender drew (random_k sends no indices) and a replay, a resume, Ray
and the local engine all draw the same. The caller derives the keys with
`stream_keys(seed, slots, t)` from the run seed, the client slots and the round. Work on
whole blocks (no Python loop over rows or entries): a block holds up to thousands of clients.

`check_compressor(compressor)` tries one on a small block and names the broken part of the
contract in one line (a ConfigError): run it on a plug-in before a run starts.
"""
from qgm_ray.compression.registry import COMPRESSORS, compressor_class, compressor_options, make_compressor

__all__ = ["COMPRESSORS", "Compressor", "check_compressor", "compressor_class", "compressor_options",
           "make_compressor", "stream_keys"]


def __getattr__(name: str):
    # Loaded on first use: importing the package (config validation does) loads no torch.
    if name == "Compressor":
        from qgm_ray.compression.base import Compressor
        return Compressor
    if name == "check_compressor":
        from qgm_ray.compression.contract import check_compressor
        return check_compressor
    if name == "stream_keys":
        from qgm_ray.compression.stream import stream_keys
        return stream_keys
    raise AttributeError(f"module 'qgm_ray.compression' has no attribute {name!r}")
