import numpy as np

from mnist_ct.artifacts import Split
from mnist_ct.preprocess.split import limit_per_class, stratified_split


def labelled(counts):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    images = np.arange(len(labels) * 784, dtype=np.int64).reshape(-1, 28, 28).astype(np.uint8)
    # A unique first pixel pair per image lets a test follow images through a split.
    images[:, 0, 0], images[:, 0, 1] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256
    return Split(images, labels)


def ids(split):
    return set((split.images[:, 0, 0].astype(int) + 256 * split.images[:, 0, 1].astype(int)).tolist())


def test_stratified_split_takes_the_fraction_of_every_class():
    pool = labelled([50] * 10)
    train, test = stratified_split(pool, 0.2, np.random.default_rng(0))
    assert np.bincount(test.labels).tolist() == [10] * 10
    assert np.bincount(train.labels).tolist() == [40] * 10
    assert not ids(train) & ids(test) and len(ids(train) | ids(test)) == 500


def test_split_rounds_per_class():
    train, test = stratified_split(labelled([7, 3] + [10] * 8), 0.25, np.random.default_rng(0))
    assert np.bincount(test.labels).tolist()[:3] == [2, 1, 2]  # round(1.75), round(0.75), round(2.5)


def test_split_is_reproducible_by_seed():
    pool = labelled([20] * 10)
    a, _ = stratified_split(pool, 0.3, np.random.default_rng(5))
    b, _ = stratified_split(pool, 0.3, np.random.default_rng(5))
    c, _ = stratified_split(pool, 0.3, np.random.default_rng(6))
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_images_stay_with_their_labels():
    pool = labelled([20] * 10)
    owner = {i: int(lbl) for i, lbl in zip(sorted(ids(pool)), pool.labels, strict=True)}
    train, _ = stratified_split(pool, 0.5, np.random.default_rng(1))
    got = train.images[:, 0, 0].astype(int) + 256 * train.images[:, 0, 1].astype(int)
    assert all(owner[i] == lbl for i, lbl in zip(got.tolist(), train.labels.tolist(), strict=True))


def test_limit_per_class_caps_each_class_only():
    limited = limit_per_class(labelled([30, 5] + [12] * 8), 10, np.random.default_rng(0))
    assert np.bincount(limited.labels).tolist() == [10, 5] + [10] * 8


def test_no_limit_keeps_everything():
    pool = labelled([3] * 10)
    assert limit_per_class(pool, None, np.random.default_rng(0)) is pool
