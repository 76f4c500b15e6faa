import numpy as np
from tiny_datasets import digits

from mnist_ct.artifacts import class_counts
from mnist_ct.validate import checks as c


def test_pixel_checks_are_skipped_not_failed_for_non_uint8_images():
    images = np.zeros((4, 28, 28), np.float32)
    results = [c.check_pixel_range("train", images, "f"), *c.check_pixel_stats("train", images, c.Thresholds(), "f")]
    assert [r.status for r in results] == ["skip", "skip", "skip"]
    assert c.check_image_format("train", images, "f").failed


def test_class_balance_ignores_a_missing_class():
    labels = np.repeat(np.arange(9), 10)  # class 9 missing: that is classes_present's failure, not balance's
    assert c.check_class_balance("test", labels, 0.5, "f").status == "pass"
    assert c.check_classes_present("test", labels, "f").value == [9]


def test_labels_must_be_whole_numbers():
    check = c.check_labels_in_range("train", np.array([0.0, 1.5, 9.0]), "f")
    assert check.failed and check.value == [0.0, 9.0]


def test_leakage_counts_exact_copies_only():
    train, _ = digits(5, 1)
    test = train[:4].copy()
    test[0, 0, 0] ^= 1  # one pixel off: not an exact copy
    check = c.check_leakage(train, test, 0.5, "d")
    assert check.value == {"duplicates": 3, "share": 0.75} and check.failed


def test_drift_reports_the_change_of_mean_and_std():
    images, _ = digits(5, 1)
    s = c.pixel_stats(images)
    ref = {"mean": s["mean"] - 0.01, "std": s["std"] + 0.02}
    check = c.check_drift("train", images, ref, 0.05, "f")
    assert check.status == "pass" and check.value["delta"] == {"mean": 0.01, "std": 0.02}
    assert c.check_drift("train", images, ref, 0.015, "f").failed


def test_class_counts_are_the_contracts_counts_of_the_labels_in_0_to_9():
    _, labels = digits(3)
    assert c.counts_in_range(labels) == class_counts(labels) == {str(k): 3 for k in range(10)}
    hostile = np.array([0, 1, 1.5, -1, 10, np.nan, 9.0])
    assert c.counts_in_range(hostile) == {**{str(k): 0 for k in range(10)}, "0": 1, "1": 1, "9": 1}
