import gzip

import numpy as np
import pytest
from idx_files import FASHION, idx_bytes

from mnist_ct.artifacts import ArtifactError
from mnist_ct.preprocess.idx import read_idx, read_idx_split, read_images, read_labels

needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (.ci/run installs it)"
)


def write_gz(path, data: bytes):
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


@needs_fashion
def test_real_fashion_mnist_test_split_parses():
    split = read_idx_split(FASHION / "t10k-images-idx3-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz")
    assert split.images.shape == (10000, 28, 28) and split.images.dtype == np.uint8
    assert np.bincount(split.labels).tolist() == [1000] * 10
    # Fashion-MNIST's first test image is an ankle boot (class 9), a light object on black.
    assert split.labels[0] == 9
    assert split.images[0].max() > 200 and split.images[0, 0, 0] == 0


@needs_fashion
def test_real_fashion_mnist_train_images_parse():
    images = read_images(FASHION / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28)
    assert 0.28 < images.mean() / 255 < 0.29  # Fashion-MNIST's published pixel mean is 0.286


def test_round_trip_of_uncompressed_file(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(path), array)


def test_wrong_magic_is_refused_naming_the_file(tmp_path):
    data = bytearray(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    data[0:4] = b"\x1f\x8b\x08\x03"
    path = write_gz(tmp_path / "train-images-idx3-ubyte.gz", bytes(data))
    with pytest.raises(ArtifactError, match=r"train-images-idx3-ubyte.gz: wrong idx magic 0x1f8b0803"):
        read_idx(path)


def test_truncated_idx_data_is_refused(tmp_path):
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100]
    path = write_gz(tmp_path / "x-idx3-ubyte.gz", data)
    with pytest.raises(ArtifactError, match=r"x-idx3-ubyte.gz: idx data truncated: header says \[3, 28, 28\]"):
        read_idx(path)


def test_trailing_bytes_are_refused(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(np.zeros(5, np.uint8)) + b"\0")
    with pytest.raises(ArtifactError, match="has trailing bytes"):
        read_idx(path)


def test_truncated_gzip_is_refused(tmp_path):
    whole = gzip.compress(idx_bytes(np.ones((20, 28, 28), np.uint8)), mtime=0)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArtifactError, match=r"t10k-images-idx3-ubyte.gz: truncated gzip file"):
        read_idx(path)


def test_gzip_garbage_is_refused(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>Service Unavailable</html>")
    with pytest.raises(ArtifactError, match=r"train-labels-idx1-ubyte.gz: not a valid gzip file"):
        read_idx(path)


def test_corrupted_gzip_body_is_refused(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8) % 10), mtime=0))
    data[-8] ^= 0xFF  # the stored CRC no longer matches the content
    path = tmp_path / "labels.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"labels.gz: not a valid gzip file \(CRC check failed"):
        read_idx(path)


def test_images_with_wrong_dims_are_refused(tmp_path):
    path = write_gz(tmp_path / "images.gz", idx_bytes(np.zeros((4, 32, 32), np.uint8)))
    with pytest.raises(ArtifactError, match=r"images.gz: expected uint8 images \[N,28,28\], found uint8 \[4, 32, 32\]"):
        read_images(path)


def test_float_images_are_refused(tmp_path):
    path = write_gz(tmp_path / "images.gz", idx_bytes(np.zeros((4, 28, 28), np.float32)))
    with pytest.raises(ArtifactError, match=r"expected uint8 images \[N,28,28\], found float32"):
        read_images(path)


def test_labels_file_with_images_shape_is_refused(tmp_path):
    path = write_gz(tmp_path / "labels.gz", idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    with pytest.raises(ArtifactError, match=r"labels.gz: expected uint8 labels \[N\]"):
        read_labels(path)


def test_label_out_of_range_is_refused_with_its_index(tmp_path):
    path = write_gz(tmp_path / "labels.gz", idx_bytes(np.array([0, 1, 10, 2], np.uint8)))
    with pytest.raises(ArtifactError, match=r"labels.gz: label 10 at index 2 is out of range 0..9"):
        read_labels(path)


def test_image_label_count_mismatch_is_refused(tmp_path):
    images = write_gz(tmp_path / "images.gz", idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    labels = write_gz(tmp_path / "labels.gz", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ArtifactError, match=r"images.gz: 5 images but labels.gz has 4 labels"):
        read_idx_split(images, labels)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"nope.gz: cannot read"):
        read_idx(tmp_path / "nope.gz")


def test_bad_input_a_header_whose_dimensions_overflow_64_bits_is_refused(tmp_path):
    # 3 dimensions of 2**32 - 1 overflow an int64 product (to a small number that a short file could match).
    data = bytes([0, 0, 0x08, 3]) + (2**32 - 1).to_bytes(4, "big") * 3 + b"\0" * 16
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(ArtifactError, match=r"huge-idx3-ubyte: idx data truncated: header says \[4294967295, "):
        read_idx(path)
