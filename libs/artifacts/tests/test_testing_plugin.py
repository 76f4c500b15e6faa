"""The shared test fixtures serve real digits and a published run."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from mnist_ct.artifacts import read_dataset
from mnist_ct.artifacts.testing import assert_readme_documents, run_args, take


def test_the_digits_are_the_5000_real_ones(digits):
    assert digits.images.shape == (5000, 28, 28) and digits.images.dtype == np.uint8
    assert np.bincount(digits.labels).tolist() == [500] * 10


def test_take_gives_disjoint_slices_per_class(digits):
    a, b = take(digits, 3), take(digits, 3, skip=3)
    assert np.bincount(a.labels).tolist() == [3] * 10
    assert not any((a.images[i] == b.images).all(axis=(1, 2)).any() for i in range(len(a)))


def test_published_run_has_a_verified_dataset(published_run):
    _, splits = read_dataset(published_run.dataset)
    assert {name: len(s) for name, s in splits.items()} == {"train": 300, "test": 100}
    assert run_args(published_run)[:2] == ["--run-id", "t"] and run_args(published_run)[-1] == "--quiet"


def test_readme_check_finds_undocumented_and_unknown_options(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha")
    parser.add_argument("--beta")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Options\n\n- `--alpha`: a\n- `--gamma`: g\n\n## Other\n\n--beta\n")
    with pytest.raises(AssertionError, match=r"missing from '## Options': \['--beta'\]"):
        assert_readme_documents(parser, readme)
    readme.write_text("## Options\n\n`--alpha`, `--beta`, `--gamma`\n")
    with pytest.raises(AssertionError, match=r"unknown options: \['--gamma'\]"):
        assert_readme_documents(parser, readme)
