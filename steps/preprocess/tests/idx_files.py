"""Tiny MNIST-format data sets written as real idx files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D, np.dtype(">i4"): 0x0C}
NAMES = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "test-images": "t10k-images-idx3-ubyte.gz",
    "test-labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file holding `array` (uint8, big-endian int32 or float32)."""
    array = np.asarray(array)
    if array.dtype.kind in "if" and array.dtype != np.uint8:
        array = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def tiny_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    return images, labels


def write_idx_folder(folder: Path, train_per_class: int = 6, test_per_class: int = 2) -> dict[str, np.ndarray]:
    """The four idx .gz files of a tiny MNIST-format data set; returns the arrays by role."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = tiny_split(train_per_class, 1)
    test_x, test_y = tiny_split(test_per_class, 2)
    arrays = {"train-images": train_x, "train-labels": train_y, "test-images": test_x, "test-labels": test_y}
    for role, array in arrays.items():
        (folder / NAMES[role]).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return arrays
