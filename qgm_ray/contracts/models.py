"""A model and its data: a plug-in dataset's features finite, a plug-in model's parameters
float32 and one forward and backward on the first training samples giving finite
(batch, num_classes) scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qgm_ray.contracts.error import ContractError, _describe, _dtype, first_line

# Samples in the batch the model and the rule are tried on: two, so that a model that
# squeezes its output loses a dimension visibly and BatchNorm in training mode has a batch.
PROBE_SAMPLES = 2


def check_features(key: str, ds) -> None:
    """Floating-point features are finite: one NaN poisons every client it reaches through the
    mixing, and the run would end as a divergence blamed on the learning rate."""
    for what, x in (("train_x", ds.train_x), ("test_x", ds.test_x)):
        if not x.is_floating_point():
            continue
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ContractError(f"{key}: {what} holds NaN or infinite features in {int(bad.sum())} row(s) "
                                f"(the first is row {row}); expected finite numbers")


def check_model(key: str, model: torch.nn.Module, ds, data_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model trains as a block does: float32 parameters, and one forward and backward on
    the first samples of the training set giving (batch, num_classes) finite scores.
    Returns its (P,) parameters and gradients there."""
    params = list(model.parameters())
    if not params:
        raise ContractError(f"{key} built a {type(model).__name__} with no parameters; expected a torch.nn.Module "
                            f"with trainable parameters")
    for name, p in model.named_parameters():
        if p.dtype != torch.float32:
            raise ContractError(f"{key}: parameter {name!r} is {_dtype(p.dtype)}; expected float32 parameters "
                                f"(the clients' rows are float32)")
    from qgm_ray.data import pixel_table, to_float
    n = min(PROBE_SAMPLES, len(ds.train_x))
    x = to_float(ds.train_x[:n], pixel_table(ds.norm) if ds.norm is not None else None)
    y = ds.train_y[:n]
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            out = model(x)
        except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
            if not x.is_floating_point():
                raise ContractError(f"{data_key} gives {_dtype(x.dtype)} features and {key} failed on them "
                                    f"({first_line(e)}); expected float features (astype(np.float32)) "
                                    f"or a model that takes integer token ids") from None
            raise ContractError(f"{key}: its first forward, on a batch of shape {tuple(x.shape)}, raised "
                                f"{first_line(e)}") from None
        expected = (n, ds.num_classes)
        if not isinstance(out, torch.Tensor):
            raise ContractError(f"{key}: forward returned {_describe(out)}; expected a {expected} tensor "
                                f"(one score per class for each of the {n} inputs)")
        if tuple(out.shape) != expected:
            raise ContractError(f"{key}: forward on a batch of {n} returned shape {tuple(out.shape)}; expected "
                                f"{expected} (one score per class for each input, num_classes={ds.num_classes})")
        if not out.is_floating_point():
            raise ContractError(f"{key}: forward returned {_dtype(out.dtype)} scores; expected float32")
        if not bool(torch.isfinite(out).all()):
            raise ContractError(f"{key}: forward returned NaN or infinite scores on finite inputs; expected finite numbers")
        try:
            F.cross_entropy(out, y).backward()
        except Exception as e:  # noqa: BLE001
            raise ContractError(f"{key}: backward through its output raised {first_line(e)}") from None
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    return torch.cat([p.detach().reshape(-1) for p in params]), grad
