"""mnist-5k, the built-in data set: the file this package ships and its reader."""

import gzip

import numpy as np
import pytest

from mnist_ct.artifacts import ArtifactError
from mnist_ct.artifacts.mnist5k import builtin_csv, read_mnist_csv


def test_the_builtin_set_is_5000_real_digits_500_per_class():
    path = builtin_csv()
    assert path.name == "mnist_5k.csv.gz" and path.parent.parts[-3:] == ("mnist_ct", "artifacts", "data")
    split = read_mnist_csv(path)
    assert split.images.shape == (5000, 28, 28) and split.images.dtype == np.uint8
    assert np.bincount(split.labels).tolist() == [500] * 10
    assert 0.12 < split.images.mean() / 255 < 0.14  # MNIST's pixel mean is about 0.13


def write_csv(path, rows):
    path.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    return path


def test_label_is_the_last_column(tmp_path):
    rows = [[0] * 783 + [255, 7], [9] + [0] * 783 + [3]]
    split = read_mnist_csv(write_csv(tmp_path / "d.csv.gz", rows))
    assert split.labels.tolist() == [7, 3]
    assert split.images[0, 27, 27] == 255 and split.images[1, 0, 0] == 9


def test_wrong_column_count_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"d.csv.gz: 784 columns, expected 785"):
        read_mnist_csv(write_csv(tmp_path / "d.csv.gz", [[0] * 784]))


def test_label_out_of_range_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"d.csv.gz: labels \(the last column\) must be whole numbers in 0..9"):
        read_mnist_csv(write_csv(tmp_path / "d.csv.gz", [[0] * 784 + [10]]))


def test_pixel_out_of_range_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"pixel values must be whole numbers in 0..255"):
        read_mnist_csv(write_csv(tmp_path / "d.csv.gz", [[256] + [0] * 783 + [1]]))


def test_decimal_values_are_accepted_when_whole(tmp_path):
    split = read_mnist_csv(write_csv(tmp_path / "d.csv.gz", [["0.0"] * 783 + ["255.0", "2.0"]]))
    assert split.labels.tolist() == [2] and split.images[0, 27, 27] == 255


def test_non_numeric_csv_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"d.csv.gz: not a numeric CSV"):
        read_mnist_csv(write_csv(tmp_path / "d.csv.gz", [["x"] * 785]))


def test_per_class_parses_only_the_first_rows_of_each_class_in_file_order():
    every = read_mnist_csv(builtin_csv())
    some = read_mnist_csv(builtin_csv(), per_class=2)
    idx = np.concatenate([np.flatnonzero(every.labels == c)[:2] for c in range(10)])
    assert np.array_equal(some.images, every.images[idx]) and np.array_equal(some.labels, every.labels[idx])


def test_per_class_keeps_a_row_whose_label_does_not_read_so_the_parser_names_it(tmp_path):
    rows = [[0] * 784 + [1], [0] * 784 + [1], [0] * 784 + ["x"]]
    with pytest.raises(ArtifactError, match="not a numeric CSV"):
        read_mnist_csv(write_csv(tmp_path / "d.csv.gz", rows), per_class=1)
