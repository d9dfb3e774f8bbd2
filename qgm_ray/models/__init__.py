"""Model registry.

    model = make_model("resnet20", input_shape=(3, 32, 32), num_classes=10, seed=0, norm="gn")
    model = make_model("mypkg.nets:tiny", (1, 40), 10, seed=0, width=8)   # a plug-in

Every name is a builder `(input_shape, num_classes, **options) -> nn.Module` registered in
`qgm_ray.plugins`; a `"package.module:function"` reference names a user's builder of the same
signature (a class works too).

The same (name, input_shape, num_classes, seed, kw) always gives bit-identical initial
weights, without touching the global RNG, so every client of a run can start from the same
point without communicating.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from qgm_ray import errors, plugins
from qgm_ray.errors import ConfigError

if TYPE_CHECKING:
    import torch.nn as nn

# Each builder by reference, imported when a model is built: the builders' modules import
# torch, and validating a config only needs the names.
_BUILDERS = {
    "resnet20": "qgm_ray.models.resnet:resnet20",
    "resnet_evonorm20": "qgm_ray.models.resnet:resnet_evonorm20",
    "cnn": "qgm_ray.models.small:CNN",
    "cnn1d": "qgm_ray.models.small:CNN1d",
    "mlp": "qgm_ray.models.small:MLP",
    # `cnn` is already the official code's LeNet-5 (pcode/models/lenet.py); the alias gives
    # it the name the official code and papers use.
    "lenet5": "qgm_ray.models.small:CNN",
    "vgg11": "qgm_ray.models.vgg:vgg11",
    "vgg16": "qgm_ray.models.vgg:vgg16",
    "wideresnet28": "qgm_ray.models.wideresnet:wideresnet28",
    "densenet_bc": "qgm_ray.models.densenet:densenet_bc",
    # Token-id input (data.name=agnews); needs requirements-nlp.txt, imported when built.
    "distilbert": "qgm_ray.models.distilbert:distilbert",
}
MODELS = tuple(_BUILDERS)
# Models whose weights may come from a hub: the runner hands them data.download and a cache.
HUB_MODELS = ("distilbert",)


for _name, _builder in _BUILDERS.items():
    plugins.register("model", _name, _builder)


def make_model(name: str, input_shape, num_classes: int, seed: int = 0, **kw) -> nn.Module:
    name = plugins.canonical("model", name)   # an installed plug-in's short name: its reference
    builder = plugins.resolve("model", name)
    if not callable(builder):
        raise ConfigError(f"model.name={name!r} is a {type(builder).__name__}, not a function or class")
    if plugins.is_reference(name):
        plugins.check_options("model", name, builder, 2, kw)
    else:
        allowed = [p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes")]
        unknown = sorted(set(kw) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for model {name!r}; allowed: {', '.join(allowed) or 'none'}"
            )
        if "hidden" in kw:
            kw["hidden"] = tuple(kw["hidden"])
    import torch
    import torch.nn as nn

    # Only the CPU generator is used (models are built on CPU); seeding it through
    # default_generator rather than torch.manual_seed leaves the CUDA generators alone.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        try:
            model = builder(tuple(input_shape), int(num_classes), **kw)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - a plug-in's error is its key's line, in any process
            if not plugins.is_reference(name):
                raise
            raise ConfigError(f"model.name={name!r} with model.options={kw}: {errors.described(e)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name={name!r} returned a {type(model).__name__}; expected a torch.nn.Module")
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["HUB_MODELS", "MODELS", "make_model", "num_parameters"]
