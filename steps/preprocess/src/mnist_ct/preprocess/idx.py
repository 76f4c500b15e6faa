"""The idx file format of MNIST and Fashion-MNIST, parsed with numpy and checked strictly.

An idx file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order, big-endian. The MNIST files are
gzip-compressed; a file whose name ends in `.gz` must be gzip, any other is read as it is.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from mnist_ct.artifacts import IMAGE_SHAPE, NUM_CLASSES, ArtifactError, Split

# idx type code -> numpy dtype (big-endian, as the format stores it)
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if its name ends in .gz."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ArtifactError(f"{path}: truncated gzip file (the stream ends early); fetch the file again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise ArtifactError(f"{path}: not a valid gzip file ({e}); fetch the file again") from None


def parse_idx(data: bytes, name: str | Path) -> np.ndarray:
    """Decode one idx file's bytes; `name` is used in the error messages."""
    if len(data) < 4:
        raise ArtifactError(f"{name}: {len(data)} bytes is too short for an idx file (no 4-byte magic)")
    zero, code, ndim = int.from_bytes(data[0:2], "big"), data[2], data[3]
    if zero != 0 or code not in IDX_TYPES or ndim == 0:
        raise ArtifactError(f"{name}: wrong idx magic 0x{data[:4].hex()} (expected 0x0000TTNN); not an idx file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ArtifactError(f"{name}: truncated idx header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: a hostile header cannot overflow
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ArtifactError(
            f"{name}: idx data {problem}: header says {list(dims)} x {dtype.itemsize} bytes "
            f"({expected} bytes in all), file has {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """Read and check one idx (or idx.gz) file."""
    return parse_idx(read_bytes(path), path)


def read_images(path: Path) -> np.ndarray:
    """An idx images file: uint8 [N,28,28]."""
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ArtifactError(
            f"{path}: expected uint8 images [N,28,28], found {images.dtype.name} {list(images.shape)}; "
            "not an MNIST-format images file"
        )
    return images


def read_labels(path: Path) -> np.ndarray:
    """An idx labels file: uint8 [N] with values 0..9, returned as int64."""
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ArtifactError(
            f"{path}: expected uint8 labels [N], found {labels.dtype.name} {list(labels.shape)}; "
            "not an MNIST-format labels file"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise ArtifactError(f"{path}: label {int(labels[bad])} at index {bad} is out of range 0..9")
    return labels.astype(np.int64)


def read_idx_split(images_path: Path, labels_path: Path) -> Split:
    """An images file and its labels file, checked against each other."""
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise ArtifactError(
            f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels; "
            "the two files do not belong together"
        )
    return Split(images, labels)
