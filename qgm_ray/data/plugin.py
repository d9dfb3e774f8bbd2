"""A plug-in dataset: `"package.module:function"`, `function(seed, **data.options)` returning
(train_x, train_y, test_x, test_y), checked and made into the Dataset every loader returns."""
from __future__ import annotations

from qgm_ray import errors, plugins
from qgm_ray.data.record import Dataset, plugin_tensor
from qgm_ray.errors import ConfigError


def load_plugin_dataset(name: str, seed: int, opts: dict) -> Dataset:
    """`function(seed, **data.options)` -> (train_x, train_y, test_x, test_y), checked and made
    into the Dataset every loader returns: floating inputs as float32 (bool too), integer
    inputs as int64 (token ids), labels int64 in 0..C-1 with C = max label + 1. The inputs are
    used as given: normalising them is the function's business."""
    import torch
    key = f"data.name={name!r}"
    fn = plugins.resolve("data", name)
    if not callable(fn):
        raise ConfigError(f"{key} is a {type(fn).__name__}, not a function seed -> arrays")
    try:
        out = fn(int(seed), **opts)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
        raise ConfigError(f"{key} with data.options={opts}: {errors.described(e)}") from None
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise ConfigError(f"{key} returned a {type(out).__name__}"
                          f"{' of ' + str(len(out)) if isinstance(out, (tuple, list)) else ''}; "
                          f"expected a tuple (train_x, train_y, test_x, test_y)")
    names = ("train_x", "train_y", "test_x", "test_y")
    train_x, train_y, test_x, test_y = (plugin_tensor(key, n, v) for n, v in zip(names, out))
    for xn, x, yn, y in (("train_x", train_x, "train_y", train_y), ("test_x", test_x, "test_y", test_y)):
        if x.dim() < 2 or len(x) == 0:
            raise ConfigError(f"{key}: {xn} has shape {tuple(x.shape)}; expected (N, *input_shape) with N >= 1")
        if y.dim() != 1 or len(y) != len(x):
            raise ConfigError(f"{key}: {yn} has shape {tuple(y.shape)}; expected ({len(x)},), one label per row of {xn}")
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise ConfigError(f"{key}: {yn} holds {y.dtype} values; labels must be integers 0..C-1")
        if int(y.min()) < 0:
            raise ConfigError(f"{key}: {yn} holds a negative label ({int(y.min())}); labels must be 0..C-1")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ConfigError(f"{key}: train_x rows have shape {tuple(train_x.shape[1:])} but test_x rows "
                          f"{tuple(test_x.shape[1:])}")

    def inputs(x: torch.Tensor) -> torch.Tensor:
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            return x.to(torch.float32).contiguous()
        if x.is_complex():
            raise ConfigError(f"{key}: inputs are complex; expected real numbers or integer token ids")
        return x.to(torch.int64).contiguous()
    num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    return Dataset(name=name, train_x=inputs(train_x), train_y=train_y.long().contiguous(),
                   test_x=inputs(test_x), test_y=test_y.long().contiguous(), num_classes=num_classes,
                   input_shape=tuple(train_x.shape[1:]))
