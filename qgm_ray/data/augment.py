"""Batch augmentation (random crop with padding, horizontal flip) drawn from a
`torch.Generator`, so a client's data stream is reproducible from its seed alone."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qgm_ray.errors import ConfigError

if TYPE_CHECKING:   # imported where a batch is augmented: config validation reads AUGMENTATIONS
    import torch

AUGMENTATIONS = ("crop_flip", "crop", "flip")


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    kind: str = "crop_flip",
    fill: float | tuple = 0.0,
    padding: int = 4,
) -> torch.Tensor:
    """Per-sample random crop (pad `padding` with `fill`, crop back, as torchvision's
    RandomCrop(size, padding)) and/or horizontal flip with p=1/2, for a (B, C, H, W) batch.
    Crop offsets are drawn before flips, so a seeded generator gives the same batch."""
    if kind is None:
        return x
    if x.dim() != 4:
        _check_kind(kind)
        raise ConfigError(f"augmentation {kind!r} needs image batches (B, C, H, W), got shape {tuple(x.shape)}")
    return apply_augment(x, draw_augment(x.shape[0], generator, kind, padding), kind, fill, padding)


def _check_kind(kind: str) -> None:
    if kind not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {kind!r}; choose one of: {', '.join(AUGMENTATIONS)}")


def draw_augment(b: int, generator: torch.Generator, kind: str, padding: int = 4) -> dict:
    """The random numbers of `augment_batch` for b samples, in its order (offsets, then flips).
    A block draws each client's from that client's generator and applies them all at once."""
    import torch
    _check_kind(kind)
    gdev = generator.device
    out = {}
    if "crop" in kind:
        out["offsets"] = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gdev)
    if "flip" in kind:
        out["flip"] = torch.rand(b, generator=generator, device=gdev) < 0.5
    return out


def apply_augment(x: torch.Tensor, params: dict, kind: str, fill: float | tuple = 0.0, padding: int = 4) -> torch.Tensor:
    """Crop and/or flip a (B, C, H, W) batch with drawn `params` (concatenated over samples)."""
    import torch
    b, c, h, w = x.shape
    out = x
    if "crop" in kind:
        offsets = params["offsets"].to(x.device)
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        padded = fill_t.expand(b, c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, :, padding:padding + h, padding:padding + w] = x
        rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        out = padded[bi, ci, rows, cols]
    if "flip" in kind:
        flip = params["flip"].to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out
