"""Seeded, stratified selection: per-class limits and the train/test split."""

from __future__ import annotations

import numpy as np

from mnist_ct.artifacts import NUM_CLASSES, Split


def take(split: Split, index: np.ndarray) -> Split:
    return Split(split.images[index], split.labels[index])


def limit_per_class(split: Split, limit: int | None, rng: np.random.Generator) -> Split:
    """At most `limit` images of each class, chosen at random; the original order is kept."""
    if limit is None:
        return split
    keep = []
    for c in range(NUM_CLASSES):
        members = np.flatnonzero(split.labels == c)
        if len(members) > limit:
            members = rng.choice(members, size=limit, replace=False)
        keep.append(members)
    return take(split, np.sort(np.concatenate(keep)))


def stratified_split(split: Split, test_fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """Train and test splits with `test_fraction` of every class (rounded) in test."""
    train, test = [], []
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(split.labels == c))
        n_test = int(round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return take(split, np.sort(np.concatenate(train))), take(split, np.sort(np.concatenate(test)))
