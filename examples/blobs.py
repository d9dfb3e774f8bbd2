"""A dataset from numpy: `function(seed, **data.options) -> (train_x, train_y, test_x, test_y)`.

    data: {name: examples.blobs:blobs, options: {num_samples: 1200}}

Gaussian blobs, one per class, standardised with the training split's statistics. Inputs are
float arrays of shape (N, *input_shape), labels integers 0..C-1; qgm-ray partitions them over
the clients (data.partition, data.alpha), batches and evaluates them like a built-in dataset.
`seed` is data.seed, so the same config always sees the same data."""
import numpy as np


def blobs(seed, num_samples=1200, num_features=10, num_classes=3, spread=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, size=(num_classes, num_features))
    y = rng.integers(0, num_classes, size=num_samples)
    x = centres[y] + rng.normal(size=(num_samples, num_features))
    n_train = int(0.8 * num_samples)
    mean, std = x[:n_train].mean(axis=0), x[:n_train].std(axis=0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
