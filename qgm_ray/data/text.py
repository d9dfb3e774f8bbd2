"""AG News text classification for DistilBERT: the paper's NLP setting.

    ds = load_agnews(root="data", download=False, tokenizer="distilbert-base-uncased")

The dataset becomes the same handful of tensors as the image datasets: `train_x` holds
token ids, int64 (N, max_length), padded with id 0 (BERT's [PAD]), so clients index and
batch it exactly like images and the DistilBERT model (models/distilbert.py) rebuilds the
attention mask from the zeros.

Optional dependencies (requirements-nlp.txt: datasets, transformers, tokenizers) are
imported only here and in models/distilbert.py, when an NLP run asks for them. Nothing is
fetched from a hub unless the run says `data.download=true`: the raw dataset is then saved
under root/agnews (later runs read it offline), and tokenizer and model files go to the
Hugging Face cache under root/hf.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os

import numpy as np
import torch

from qgm_ray.data.record import Dataset, save_npz_atomic
from qgm_ray.errors import ConfigError, first_line

NLP_REQUIREMENTS = "requirements-nlp.txt"
AGNEWS_FOLDER = "agnews"
AGNEWS_HUB_ID = "fancyzhx/ag_news"  # the hub's AG News (4 classes, 120k train / 7.6k test)
DEFAULT_TOKENIZER = "distilbert-base-uncased"
PAD_ID = 0


def require(module: str):
    """Import an optional NLP dependency, or a one-line ConfigError saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"the NLP path (data.name=agnews, model.name=distilbert) needs the Python package {module!r}, "
            f"which is not installed; fix: pip install -r {NLP_REQUIREMENTS}"
        ) from None


def hf_cache_dir(root: str) -> str:
    return os.path.abspath(os.path.join(root, "hf"))


def load_tokenizer(name_or_path: str, root: str, download: bool):
    """A saved tokenizer folder, or a hub name read from the local cache (fetched only when
    `download`). BERT-style: its [PAD] must be id 0, as the model's mask assumes."""
    transformers = require("transformers")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            name_or_path, cache_dir=hf_cache_dir(root), local_files_only=not download
        )
    except (OSError, ValueError) as e:
        if download:
            raise ConfigError(
                f"tokenizer {name_or_path!r}: download into {hf_cache_dir(root)} failed ({first_line(e)}); "
                f"check the internet connection or set data.options.tokenizer to a saved tokenizer folder"
            ) from None
        raise ConfigError(
            f"tokenizer {name_or_path!r} not found in {hf_cache_dir(root)} (nothing is fetched unless asked); "
            f"fix: run once with --set data.download=true, or set data.options.tokenizer to a saved tokenizer folder"
        ) from None
    if tok.pad_token_id != PAD_ID:
        raise ConfigError(
            f"tokenizer {name_or_path!r} pads with id {tok.pad_token_id}; the DistilBERT path needs a BERT-style "
            f"tokenizer whose [PAD] id is {PAD_ID}"
        )
    return tok


def _raw_agnews(root: str, download: bool):
    """The raw DatasetDict (splits train/test, columns text/label) from root/agnews, or from
    the hub when `download` (then saved there)."""
    datasets = require("datasets")
    folder = os.path.abspath(os.path.join(root, AGNEWS_FOLDER))
    if os.path.isdir(folder):
        try:
            return datasets.load_from_disk(folder)
        except (OSError, ValueError, FileNotFoundError) as e:
            raise ConfigError(
                f"dataset 'agnews': {folder} is not a saved dataset ({first_line(e)}); "
                f"fix: remove it and run with --set data.download=true"
            ) from None
    if not download:
        raise ConfigError(
            f"dataset 'agnews' not found at {folder}; fix: run once with --set data.download=true on a machine "
            f"with internet, or save a DatasetDict with train/test splits (columns text, label) there"
        )
    try:
        dd = datasets.load_dataset(AGNEWS_HUB_ID, cache_dir=hf_cache_dir(root))
    except Exception as e:  # the hub client raises many kinds (connection, HTTP, file errors)
        raise ConfigError(
            f"dataset 'agnews': download of {AGNEWS_HUB_ID!r} failed ({first_line(e)}); check the internet "
            f"connection, or save a DatasetDict with train/test splits (columns text, label) at {folder}"
        ) from None
    dd.save_to_disk(folder)
    return dd


def _split(dd, split: str, folder: str):
    if split not in dd:
        raise ConfigError(f"dataset 'agnews' at {folder} has no {split!r} split (has: {', '.join(dd)})")
    part = dd[split]
    missing = {"text", "label"} - set(part.column_names)
    if missing:
        raise ConfigError(f"dataset 'agnews' at {folder}: split {split!r} lacks column(s) {', '.join(sorted(missing))}")
    return part


def _encode(tok, texts: list[str], max_length: int) -> np.ndarray:
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return np.asarray(enc["input_ids"], dtype=np.int64)


def _positive_int_option(key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"dataset 'agnews': option {key} must be an integer >= {minimum}, got {value!r}")
    return value


def load_agnews(root: str = "data", download: bool = False, tokenizer: str = DEFAULT_TOKENIZER,
                max_length: int = 128, max_train_samples: int = 0, max_test_samples: int = 0):
    """AG News as token ids. `max_length` 128 is the official code's max_seq_len;
    `max_*_samples` > 0 keep the first samples of a split (quick runs)."""

    max_length = _positive_int_option("max_length", max_length, 2)
    max_train_samples = _positive_int_option("max_train_samples", max_train_samples, 0)
    max_test_samples = _positive_int_option("max_test_samples", max_test_samples, 0)
    folder = os.path.abspath(os.path.join(root, AGNEWS_FOLDER))
    dd = _raw_agnews(root, download)
    train, test = _split(dd, "train", folder), _split(dd, "test", folder)
    if max_train_samples:
        train = train.select(range(min(max_train_samples, len(train))))
    if max_test_samples:
        test = test.select(range(min(max_test_samples, len(test))))
    tok = load_tokenizer(tokenizer, root, download)
    texts = {"train": list(train["text"]), "test": list(test["text"])}

    # Tokenising 120k texts takes a while and every actor loads the dataset: cache the ids,
    # keyed by what they depend on (the vocabulary and the texts, not just their names).
    digest = hashlib.sha1(json.dumps(sorted(tok.get_vocab().items())).encode())
    for split in ("train", "test"):
        digest.update("\x00".join(texts[split]).encode())
    key = json.dumps({"tokenizer": tokenizer, "max_length": max_length, "content": digest.hexdigest(),
                      "n": [len(train), len(test)]}, sort_keys=True)
    cache = os.path.join(root, AGNEWS_FOLDER + "-tokens", hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
    if os.path.exists(cache):
        with np.load(cache) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = {
            "x": _encode(tok, texts["train"], max_length),
            "y": np.asarray(train["label"], dtype=np.int64),
            "x_test": _encode(tok, texts["test"], max_length),
            "y_test": np.asarray(test["label"], dtype=np.int64),
        }
        save_npz_atomic(cache, arrays)
    label_feature = train.features["label"]
    num_classes = getattr(label_feature, "num_classes", None) or int(max(arrays["y"].max(), arrays["y_test"].max())) + 1
    return Dataset(
        name="agnews",
        train_x=torch.from_numpy(arrays["x"]).contiguous(),
        train_y=torch.from_numpy(arrays["y"]).contiguous(),
        test_x=torch.from_numpy(arrays["x_test"]).contiguous(),
        test_y=torch.from_numpy(arrays["y_test"]).contiguous(),
        num_classes=int(num_classes),
        input_shape=(max_length,),
        augment=None,
    )
