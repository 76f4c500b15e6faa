"""The data sets preprocess knows: where their files come from and what they must hash to.

Official checksums (sha256 and size of each .gz as published) are those TensorFlow Datasets
records for the same files (tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt and
fashion_mnist.txt). torchvision lists md5s of the same files; the sizes agree with both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its name under a mirror and its expected sha256 and size."""

    name: str
    sha256: str
    bytes: int | None = None


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format data set: four idx .gz files, official train and test splits."""

    name: str
    files: dict[str, RemoteFile]  # role ("train-images", ...) -> file
    mirrors: tuple[str, ...]  # base URLs, tried in order
    classes: tuple[str, ...]


ROLES = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "test-images": "t10k-images-idx3-ubyte.gz",
    "test-labels": "t10k-labels-idx1-ubyte.gz",
}


def _files(table: str) -> dict[str, RemoteFile]:
    """Rows of `name sha256 bytes`, one per file."""
    rows = {}
    for line in table.strip().splitlines():
        name, sha256, size = line.split()
        rows[name] = RemoteFile(name, sha256, int(size))
    return {role: rows[name] for role, name in ROLES.items()}


MNIST = IdxDataset(
    name="mnist",
    files=_files(
        """
        train-images-idx3-ubyte.gz  440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609 9912422
        train-labels-idx1-ubyte.gz  3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c 28881
        t10k-images-idx3-ubyte.gz   8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6 1648877
        t10k-labels-idx1-ubyte.gz   f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6 4542
        """
    ),
    mirrors=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    classes=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    files=_files(
        """
        train-images-idx3-ubyte.gz  3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84 26421880
        train-labels-idx1-ubyte.gz  a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845 29515
        t10k-images-idx3-ubyte.gz   346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073 4422102
        t10k-labels-idx1-ubyte.gz   67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5 5148
        """
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)

IDX_DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
MNIST_5K = "mnist-5k"
DATASETS = (MNIST_5K, *IDX_DATASETS)
