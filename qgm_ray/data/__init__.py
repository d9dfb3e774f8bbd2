"""Dataset registry: every dataset becomes a handful of tensors.

Clients index these tensors with their partition's indices and slice mini-batches out of
them; nothing on the training path loops over samples in Python or builds PIL images.
Datasets whose pixels are 8-bit (the torchvision ones, `imagenet32`) keep them as uint8 (a
quarter of float32 in the driver, the object store and every block) and carry their
per-channel `norm`; a batch becomes normalised float32 where it is used (`to_float`, on the
block's device), bit for bit what normalising the whole dataset at load time gives. The
other datasets are float32, normalised once (`norm` None; agnews holds int64 token ids).
Augmentation (`augment_batch`) works on whole batches and draws from a `torch.Generator`,
so a client's data stream is reproducible from its seed alone.

Offline datasets (no files needed): `mnist1d` (generated with the `mnist1d` package and
cached as .npz), `digits` (bundled with scikit-learn), `synthetic`, `synthetic_image`.
torchvision datasets read the usual torchvision layout under `root` and download only when
asked to (`download=True`). `imagenet32` reads the downsampled-ImageNet batch files under
`root/imagenet32`; `agnews` (text.py, optional NLP dependencies) reads a saved copy
under `root/agnews` and fetches one only with `download=True`.

This package is the registry: the built-in names, registered below, and `load_dataset`.
record.py holds the Dataset record; plugin.py makes a plug-in's arrays into one, tensors.py a
built-in loader's tensors; pixels.py normalises uint8 batches, augment.py crops and flips
them; offline.py, vision.py (torchvision), imagenet32.py and text.py (AG News) are the
loaders.
"""
from __future__ import annotations

from qgm_ray import plugins
from qgm_ray.data.augment import AUGMENTATIONS, apply_augment, augment_batch, draw_augment
from qgm_ray.data.imagenet32 import _load_imagenet32
from qgm_ray.data.offline import _OFFLINE, _OFFLINE_OPTS
from qgm_ray.data.pixels import pixel_table, to_float
from qgm_ray.data.plugin import load_plugin_dataset
from qgm_ray.data.record import Dataset, describe
from qgm_ray.data.vision import _TORCHVISION, _load_torchvision
from qgm_ray.errors import ConfigError

__all__ = [
    "AUGMENTATIONS", "DATASETS", "Dataset", "apply_augment", "augment_batch", "describe", "draw_augment",
    "load_dataset", "load_plugin_dataset", "pixel_table", "to_float",
]

DATASETS = (
    "mnist1d",
    "digits",
    "synthetic",
    "synthetic_image",
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "svhn",
    "imagenet32",
    "agnews",
)


def load_dataset(name: str, root: str = "data", download: bool = False, seed: int = 0, **opts) -> Dataset:
    """Load dataset `name` (a registered name or a `"package.module:function"` reference) as
    tensors. `seed` drives generation and splits of the offline datasets (torchvision datasets
    have a fixed split) and is a plug-in's first argument. `augment=` overrides the default."""
    augment_override = opts.pop("augment", "default")
    name = plugins.canonical("data", name)   # an installed plug-in's short name: its reference
    if plugins.is_reference(name):
        ds = load_plugin_dataset(name, seed, opts)
    else:
        ds = plugins.resolve("data", name)(seed, root=root, download=download, **opts)
    if augment_override != "default":
        if augment_override is not None and augment_override not in AUGMENTATIONS:
            raise ConfigError(
                f"unknown augmentation {augment_override!r} for dataset {name!r}; "
                f"choose one of: {', '.join(AUGMENTATIONS)} or null"
            )
        ds.augment = augment_override
    return ds


def _builtin_loader(name: str):
    """The registered factory of a built-in dataset: (seed, root, download, **options) -> Dataset."""
    def load(seed: int, root: str = "data", download: bool = False, **opts) -> Dataset:
        if name in _TORCHVISION:
            _check_opts(name, opts, ())
            return _load_torchvision(name, root, download)
        if name in _FILE_LOADERS:  # read from files under root; download decides what a miss says
            loader, allowed = _FILE_LOADERS[name]
            return loader(root=root, download=download, seed=seed, **_check_opts(name, opts, allowed))
        return _OFFLINE[name](root=root, seed=seed, **_check_opts(name, opts, _OFFLINE_OPTS[name]))
    load.__qualname__ = f"load_{name}"
    return load


def _check_opts(name: str, opts: dict, allowed: tuple) -> dict:
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; "
            f"allowed: {', '.join(allowed) if allowed else 'none'} (and augment)"
        )
    return opts


def _load_agnews(root, download, seed, **opts) -> Dataset:
    from qgm_ray.data.text import load_agnews

    return load_agnews(root=root, download=download, **opts)


_FILE_LOADERS = {
    "imagenet32": (_load_imagenet32, ("train_batches",)),
    "agnews": (_load_agnews, ("tokenizer", "max_length", "max_train_samples", "max_test_samples")),
}


for _name in DATASETS:
    plugins.register("data", _name, _builtin_loader(_name))
