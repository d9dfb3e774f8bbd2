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
`root/imagenet32`; `agnews` (qgm_ray/text.py, optional NLP dependencies) reads a saved copy
under `root/agnews` and fetches one only with `download=True`.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from typing import TYPE_CHECKING

import numpy as np

from qgm_ray import errors, plugins
from qgm_ray.augment import AUGMENTATIONS, apply_augment, augment_batch, draw_augment  # noqa: F401 - re-exported
from qgm_ray.dataset import Dataset, describe, plugin_tensor, save_npz_atomic  # noqa: F401 - describe re-exported
from qgm_ray.errors import ConfigError

# torch is imported where a tensor is made: validating a config reads only the names and
# option tables here.
if TYPE_CHECKING:
    import torch

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


# ----------------------------------------------------------------------------- plug-ins

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


def _check_opts(name: str, opts: dict, allowed: tuple) -> dict:
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; "
            f"allowed: {', '.join(allowed) if allowed else 'none'} (and augment)"
        )
    return opts


# ----------------------------------------------------------------------------- helpers


def _standardise(train_x: torch.Tensor, test_x: torch.Tensor):
    """One mean/std per channel (dim 1), taken from the training split only."""
    dims = [d for d in range(train_x.dim()) if d != 1]
    mean = train_x.mean(dim=dims, keepdim=True)
    std = train_x.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return (train_x - mean) / std, (test_x - mean) / std


def _dataset(name, train_x, train_y, test_x, test_y, num_classes, augment=None, fill=None, norm=None) -> Dataset:
    """float32 inputs, or uint8 pixels left as they are when `norm` says how to normalise them."""
    import torch
    if norm is not None:
        assert train_x.dtype == test_x.dtype == torch.uint8, "norm is for uint8 pixels"
        norm = (tuple(float(m) for m in norm[0]), tuple(float(s) for s in norm[1]))
    x_dtype = torch.float32 if norm is None else torch.uint8
    return Dataset(
        name=name,
        train_x=train_x.to(x_dtype).contiguous(),
        train_y=train_y.long().contiguous(),
        test_x=test_x.to(x_dtype).contiguous(),
        test_y=test_y.long().contiguous(),
        num_classes=int(num_classes),
        input_shape=tuple(train_x.shape[1:]),
        augment=augment,
        fill=fill,
        norm=norm,
    )


# ----------------------------------------------------------------------------- uint8 pixels


def pixel_table(norm: tuple) -> torch.Tensor:
    """(C, 256) float32: what each 8-bit value of each channel normalises to, computed on the
    CPU with the ops and order that normalising the whole dataset at load time used
    (float, / 255, - mean, / std). A batch looked up in this table is bit for bit that
    float32 data on any device. Computing it on the device instead would not be: CUDA
    divides by a CPU scalar as a multiply by its reciprocal (ATen's div_true_kernel_cuda),
    which rounds x / 255 differently for 126 of the 256 values (tests/test_uint8.py, emulated
    on the CPU)."""
    import torch
    mean, std = norm
    c = len(mean)
    levels = torch.arange(256, dtype=torch.uint8).expand(c, 256)
    x = levels.float().div_(255.0)
    return x.sub_(torch.tensor(mean).view(c, 1)).div_(torch.tensor(std).view(c, 1)).contiguous()


def to_float(x: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
    """A (B, C, ...) batch of uint8 pixels as normalised float32 (a gather from `table`, on
    x's device); x unchanged when table is None (datasets stored as model inputs)."""
    import torch
    if table is None:
        return x
    c = table.shape[0]
    if x.dtype != torch.uint8 or x.dim() < 2 or x.shape[1] != c:
        raise ValueError(f"to_float: expected uint8 (B, {c}, ...) pixels, got {x.dtype} {tuple(x.shape)}")
    table = table.to(x.device)   # no-op where the caller keeps it on the device (blocks do)
    offsets = (torch.arange(c, device=x.device) * 256).view(1, c, *([1] * (x.dim() - 2)))
    return torch.take(table, x.long() + offsets)   # take: one flat gather, cheaper than indexing on CPU


# ----------------------------------------------------------------------------- offline

# Everything `mnist1d.data.get_dataset_args` defines except `url` (we never download).
_MNIST1D_OPTS = (
    "num_samples",
    "train_split",
    "template_len",
    "padding",
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "shuffle_seq",
    "final_seq_length",
)


def _load_mnist1d(root, seed, **opts) -> Dataset:
    """MNIST-1D generated locally (the package's defaults: 5000 samples, 4000/1000 split,
    length 40). `seed` is the generator's seed; the package's own default is 42."""
    import torch
    from importlib.metadata import version

    args = _mnist1d_default_args()
    args.update(opts)
    args["seed"] = int(seed)
    key = json.dumps({"args": args, "mnist1d": version("mnist1d")}, sort_keys=True)
    path = os.path.join(root, "mnist1d", hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
    if os.path.exists(path):
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = _generate_mnist1d(args)
        save_npz_atomic(path, arrays)
    train_x = torch.from_numpy(arrays["x"]).float().unsqueeze(1)
    test_x = torch.from_numpy(arrays["x_test"]).float().unsqueeze(1)
    train_x, test_x = _standardise(train_x, test_x)
    y, y_test = torch.from_numpy(arrays["y"]), torch.from_numpy(arrays["y_test"])
    return _dataset("mnist1d", train_x, y, test_x, y_test, num_classes=10)


def _mnist1d_default_args() -> dict:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args(as_dict=True)
    args.pop("url", None)
    return args


def _generate_mnist1d(args: dict) -> dict:
    import mnist1d.data
    from mnist1d.utils import ObjectView

    # make_dataset reseeds the global `random` and `np.random`; put them back afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = mnist1d.data.make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": np.asarray(d["x"], dtype=np.float32),
        "y": np.asarray(d["y"], dtype=np.int64),
        "x_test": np.asarray(d["x_test"], dtype=np.float32),
        "y_test": np.asarray(d["y_test"], dtype=np.int64),
    }


def _load_digits(root, seed) -> Dataset:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=seed
    )
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    train_x, test_x = _standardise(x[idx_train], x[idx_test])
    return _dataset("digits", train_x, y[idx_train], test_x, y[idx_test], num_classes=10)


def _balanced_labels(n: int, num_classes: int, g: torch.Generator) -> torch.Tensor:
    import torch
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


def _load_synthetic(root, seed, num_samples=2000, num_features=20, num_classes=4, separation=3.0) -> Dataset:
    """Gaussian mixture: class means ~ N(0, separation^2 / num_features * I) scaled to norm
    `separation`, unit-variance noise. 80/20 split, balanced classes."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    means = torch.randn(num_classes, num_features, generator=g)
    means = separation * means / means.norm(dim=1, keepdim=True)
    y = _balanced_labels(num_samples, num_classes, g)
    x = means[y] + torch.randn(num_samples, num_features, generator=g)
    n_train = int(0.8 * num_samples)
    train_x, test_x = _standardise(x[:n_train], x[n_train:])
    return _dataset("synthetic", train_x, y[:n_train], test_x, y[n_train:], num_classes)


def _load_synthetic_image(root, seed, num_samples=1000, shape=(3, 32, 32), num_classes=10, separation=0.05):
    """Random images around one random prototype per class: learnable, CIFAR-shaped, free."""
    import torch
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(int(seed))
    prototypes = separation * torch.randn(num_classes, *shape, generator=g)
    y = _balanced_labels(num_samples, num_classes, g)
    x = prototypes[y] + torch.randn(num_samples, *shape, generator=g)
    n_train = int(0.8 * num_samples)
    colour_32px = len(shape) == 3 and shape[0] == 3 and shape[1:] == (32, 32)
    return _dataset(
        "synthetic_image", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes,
        augment="crop_flip" if colour_32px else None,
    )


_OFFLINE = {
    "mnist1d": _load_mnist1d,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "synthetic_image": _load_synthetic_image,
}
_OFFLINE_OPTS = {
    "mnist1d": _MNIST1D_OPTS,
    "digits": (),
    "synthetic": ("num_samples", "num_features", "num_classes", "separation"),
    "synthetic_image": ("num_samples", "shape", "num_classes", "separation"),
}


# ----------------------------------------------------------------------------- torchvision

# Normalisation constants of the official QGM code (pcode/datasets/prepare_data.py) where it
# has them; Fashion-MNIST's are the usual ones. SVHN: the official code does not augment it
# (flipping digits changes them); pass augment="crop" to crop only.
_TORCHVISION = {
    "cifar10": dict(cls="CIFAR10", layout="NHWC", num_classes=10, augment="crop_flip",
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
                    where="cifar-10-batches-py"),
    "cifar100": dict(cls="CIFAR100", layout="NHWC", num_classes=100, augment="crop_flip",
                     mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
                     where="cifar-100-python"),
    "mnist": dict(cls="MNIST", layout="NHW", num_classes=10, augment=None,
                  mean=(0.1307,), std=(0.3081,), where="MNIST/raw"),
    "fashion_mnist": dict(cls="FashionMNIST", layout="NHW", num_classes=10, augment=None,
                          mean=(0.2860,), std=(0.3530,), where="FashionMNIST/raw"),
    "svhn": dict(cls="SVHN", layout="NCHW", num_classes=10, augment=None,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), where="svhn"),
}


def _load_torchvision(name: str, root: str, download: bool) -> Dataset:
    spec = _TORCHVISION[name]
    train, test = _open_torchvision(name, root, download)
    train_x, train_y = _to_tensors(train, spec)
    test_x, test_y = _to_tensors(test, spec)
    fill = tuple(-m / s for m, s in zip(spec["mean"], spec["std"]))
    return _dataset(name, train_x, train_y, test_x, test_y, spec["num_classes"], spec["augment"], fill,
                    norm=(spec["mean"], spec["std"]))


def _open_torchvision(name: str, root: str, download: bool):
    """The (train, test) torchvision dataset objects; a missing file is a ConfigError."""
    import torchvision.datasets as tvd

    spec = _TORCHVISION[name]
    cls = getattr(tvd, spec["cls"])
    # torchvision's SVHN puts its .mat files straight into root; give it a folder.
    tv_root = os.path.join(root, "svhn") if name == "svhn" else root
    where = os.path.abspath(os.path.join(root, spec["where"]))
    try:
        if name == "svhn":
            return cls(tv_root, split="train", download=download), cls(tv_root, split="test", download=download)
        return cls(tv_root, train=True, download=download), cls(tv_root, train=False, download=download)
    except (RuntimeError, OSError) as e:
        if download:
            raise ConfigError(
                f"dataset {name!r}: download into {where} failed ({errors.first_line(e)}); "
                f"check the internet connection, or copy the torchvision files there"
            ) from None
        raise ConfigError(
            f"dataset {name!r} not found (or corrupted) at {where}; fix: run once with "
            f"--set data.download=true on a machine with internet, or copy the torchvision files there"
        ) from None


def _to_tensors(ds, spec: dict):
    """A torchvision dataset's uint8 array -> uint8 NCHW tensor (normalised per batch: `to_float`)."""
    import torch
    data = ds.data
    data = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if spec["layout"] == "NHWC":
        data = data.permute(0, 3, 1, 2)
    elif spec["layout"] == "NHW":
        data = data.unsqueeze(1)
    x = data.contiguous()
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = ds.labels  # SVHN
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return x, y


# ----------------------------------------------------------------------------- ImageNet-32

IMAGENET32_FOLDER = "imagenet32"
IMAGENET32_TRAIN = tuple(f"train_data_batch_{i}" for i in range(1, 11))
IMAGENET32_VAL = "val_data"


def _read_imagenet32_batch(folder: str, stem: str):
    """One batch of Chrabaszcz et al.'s downsampled ImageNet: `<stem>.npz` (the current
    release) or the pickled `<stem>` the official QGM loader reads. Keys `data` (N, 3072)
    uint8, channel-major (1024 R, 1024 G, 1024 B), and `labels` 1..1000."""
    npz = os.path.join(folder, stem + ".npz")
    if os.path.exists(npz):
        with np.load(npz) as f:
            data, labels = f["data"], f["labels"]
    else:
        with open(os.path.join(folder, stem), "rb") as f:
            entry = pickle.load(f)
        data, labels = entry["data"], entry["labels"]
    return np.asarray(data, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _load_imagenet32(root, download, seed, train_batches=10) -> Dataset:
    """Downsampled ImageNet 32x32 (1.28M train / 50k val images, 1000 classes), normalised
    with mean = std = 0.5 and augmented by crop + flip, as in the official code. Stored as
    uint8, the full training set is 1,281,167 x 3072 B = 3.94 GB (15.7 GB as float32):
    `train_batches: k` reads only the first k of the ten batches (~128k images each)."""
    import torch
    if isinstance(train_batches, bool) or not isinstance(train_batches, int) or not 1 <= train_batches <= 10:
        raise ConfigError(f"dataset 'imagenet32': option train_batches must be an integer in 1..10, got {train_batches!r}")
    folder = os.path.abspath(os.path.join(root, IMAGENET32_FOLDER))
    stems = IMAGENET32_TRAIN[:train_batches] + (IMAGENET32_VAL,)
    missing = [s for s in stems
               if not os.path.exists(os.path.join(folder, s + ".npz")) and not os.path.exists(os.path.join(folder, s))]
    if missing:
        # Downsampled ImageNet needs an ImageNet account: there is nothing we may fetch.
        asked = "data.download=true cannot fetch it (it needs an ImageNet account); " if download else ""
        raise ConfigError(
            f"dataset 'imagenet32': missing files in {folder}: {', '.join(m + '.npz' for m in missing)}; "
            f"fix: {asked}download Imagenet32_train_npz.zip and Imagenet32_val_npz.zip from the ImageNet "
            f"website (downsampled ImageNet) and unzip their files into {folder}"
        )
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def tensors(names):
        parts = [_read_imagenet32_batch(folder, s) for s in names]
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ConfigError(f"dataset 'imagenet32': {folder} holds arrays of shape {data.shape}, "
                              f"expected (N, 3072) rows of 32x32 RGB images")
        if labels.min() < 1 or labels.max() > 1000:
            raise ConfigError(f"dataset 'imagenet32': labels in {folder} must be 1..1000 (1-based), "
                              f"got {labels.min()}..{labels.max()}")
        return torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels - 1)

    train_x, train_y = tensors(stems[:-1])
    test_x, test_y = tensors(stems[-1:])
    fill = tuple(-m / s for m, s in zip(mean, std))
    return _dataset("imagenet32", train_x, train_y, test_x, test_y, 1000, "crop_flip", fill, norm=(mean, std))


def _load_agnews(root, download, seed, **opts) -> Dataset:
    from qgm_ray.text import load_agnews

    return load_agnews(root=root, download=download, **opts)


_FILE_LOADERS = {
    "imagenet32": (_load_imagenet32, ("train_batches",)),
    "agnews": (_load_agnews, ("tokenizer", "max_length", "max_train_samples", "max_test_samples")),
}


for _name in DATASETS:
    plugins.register("data", _name, _builtin_loader(_name))
