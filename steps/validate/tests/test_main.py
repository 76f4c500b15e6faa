"""The step end to end through its main: every check on real digits, and one test per bad-input row."""

import json
import pathlib
import subprocess
import sys

import numpy as np
from step_runs import failed, refused, report, run
from tiny_datasets import good_splits, write_good, write_raw

from mnist_ct.artifacts import read_manifest


def test_good_data_set_passes_and_report_lists_every_check(tmp_path, capsys):
    dataset = write_good(tmp_path)
    assert run(tmp_path) == 0
    assert capsys.readouterr().err == ""
    r = report(tmp_path)
    assert r["passed"] is True and r["summary"]["fail"] == 0 and r["summary"]["skip"] == 3  # no champion: no drift
    names = {c["check"] for c in r["checks"]}
    assert names == {
        "manifest", "checksum", "split_present", "not_empty", "image_format", "label_format", "labels_in_range",
        "pixel_range", "pixel_mean", "pixel_std", "classes_present", "class_balance", "counts_match_manifest",
        "leakage", "drift", "label_shift",
    }  # fmt: skip
    assert {c["check"] for c in r["checks"] if c["status"] == "skip"} == {"drift", "label_shift"}
    balance = next(c for c in r["checks"] if c["check"] == "class_balance" and c["scope"] == "train")
    assert balance["value"] == 1.0 and balance["threshold"] == 0.5
    m = read_manifest(tmp_path / "runs/r1/validation", "validation")
    assert m.producer.step == "validate" and m.meta["passed"] is True
    assert m.inputs == {"dataset": read_manifest(dataset).digest}


def test_bad_input_label_out_of_range(tmp_path, capsys):
    splits = good_splits()
    splits["train"][1][3] = 10
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert lines == [
        f"validate: check failed: labels_in_range[train]: {tmp_path}/runs/r1/dataset/train/labels.npy: "
        "labels span 0..10, expected whole numbers in 0..9"
    ]


def test_bad_input_wrong_dtype(tmp_path, capsys):
    splits = good_splits()
    splits["train"] = (splits["train"][0].astype(np.float32) / 255, splits["train"][1])
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert len(lines) == 1
    assert "image_format[train]: " in lines[0] and "train/images.npy: images are float32 [200, 28, 28]" in lines[0]
    assert "expected uint8 [N,28,28]" in lines[0]


def test_missing_class_fails(tmp_path, capsys):
    splits = good_splits()
    x, y = splits["test"]
    splits["test"] = (x[y != 4], y[y != 4])
    write_raw(tmp_path, splits)
    assert failed(tmp_path, capsys) == [
        f"validate: check failed: classes_present[test]: {tmp_path}/runs/r1/dataset/test/labels.npy: "
        "no images of class [4]"
    ]


def test_bad_input_checksum_mismatch_changed_byte_in_images(tmp_path, capsys):
    dataset = write_good(tmp_path)
    f = dataset / "train/images.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    lines = failed(tmp_path, capsys)
    assert len(lines) == 1
    assert lines[0].startswith(f"validate: check failed: checksum[train/images.npy]: {f}: sha256 ")
    assert "does not match the manifest's" in lines[0]


def test_leakage_between_train_and_test_fails(tmp_path, capsys):
    splits = good_splits()
    splits["test"][0][:3] = splits["train"][0][10:13]  # 3 of 50 test images are copies of train images
    write_raw(tmp_path, splits)
    assert failed(tmp_path, capsys) == [
        f"validate: check failed: leakage: {tmp_path}/runs/r1/dataset: 3 of 50 test images are exact copies "
        "of train images (6.0000%), above 0.1000%"
    ]
    leak = next(c for c in report(tmp_path)["checks"] if c["check"] == "leakage")
    assert leak["value"] == {"duplicates": 3, "share": 0.06}


def test_leakage_threshold_is_an_option(tmp_path):
    splits = good_splits()
    splits["test"][0][:1] = splits["train"][0][:1]
    write_raw(tmp_path, splits)
    assert run(tmp_path, "--max-leakage", "0.05") == 0


def test_bad_input_empty_split(tmp_path, capsys):
    splits = good_splits()
    splits["test"] = (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    write_raw(tmp_path, splits)
    assert failed(tmp_path, capsys) == [
        f"validate: check failed: not_empty[test]: {tmp_path}/runs/r1/dataset/test/labels.npy: 0 images"
    ]


def test_bad_input_missing_manifest(tmp_path, capsys):
    dataset = write_good(tmp_path)
    (dataset / "manifest.json").unlink()
    lines = failed(tmp_path, capsys)
    assert lines == [
        f"validate: check failed: manifest: {dataset}/manifest.json: manifest missing, so {dataset} is incomplete "
        "(a step died while writing it?); rerun its producer"
    ]
    assert report(tmp_path)["dataset_manifest_sha256"] is None


def test_missing_data_set_fails(tmp_path, capsys):
    assert "artifact folder not found" in failed(tmp_path, capsys)[0]


def test_class_imbalance_fails(tmp_path, capsys):
    splits = good_splits()
    x, y = splits["train"]
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == 7)[:15]] = False  # class 7: 5 images, the others 20
    splits["train"] = (x[keep], y[keep])
    write_raw(tmp_path, splits)
    [line] = failed(tmp_path, capsys)
    assert "class_balance[train]: " in line and "smallest/largest class 5/20 = 0.25, below 0.5" in line


def test_inverted_images_fail_the_pixel_mean(tmp_path, capsys):
    splits = good_splits()
    splits["test"] = (255 - splits["test"][0], splits["test"][1])
    write_raw(tmp_path, splits)
    [line] = failed(tmp_path, capsys)
    assert "pixel_mean[test]: " in line and "outside 0.05..0.5 (wrong scale or inverted?)" in line


def test_blank_split_fails_the_pixel_range(tmp_path, capsys):
    splits = good_splits()
    splits["test"] = (np.zeros_like(splits["test"][0]), splits["test"][1])
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert any("pixel_range[test]: " in line and "every image is blank" in line for line in lines)


def test_counts_that_disagree_with_the_manifest_fail(tmp_path, capsys):
    dataset = write_good(tmp_path)
    doc = json.loads((dataset / "manifest.json").read_text())
    doc["meta"]["counts"]["test"]["0"] = 6
    (dataset / "manifest.json").write_text(json.dumps(doc))
    [line] = failed(tmp_path, capsys)
    assert "counts_match_manifest[test]: " in line and "differ from the manifest's" in line


class _TouchOnUnpickle:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickled_array_is_refused_without_unpickling(tmp_path, capsys):
    marker = pathlib.Path(tmp_path / "unpickled")
    splits = good_splits()
    splits["train"] = (splits["train"][0], np.array([_TouchOnUnpickle(marker)] * 200, dtype=object))
    write_raw(tmp_path, splits)
    [line] = failed(tmp_path, capsys)
    assert line.startswith(f"validate: check failed: readable[train]: {tmp_path}/runs/r1/dataset/train/labels.npy: ")
    assert "not a readable .npy array" in line
    assert not marker.exists()


def test_every_failure_gets_its_own_line(tmp_path, capsys):
    splits = good_splits()
    splits["train"][1][0] = 12
    splits["test"] = (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert [line.split(": ")[2] for line in lines] == ["labels_in_range[train]", "not_empty[test]"]


def test_drift_against_a_reference_manifest(tmp_path, capsys):
    write_good(tmp_path / "ref", "ref")
    reference = tmp_path / "ref/runs/ref/dataset/manifest.json"
    write_good(tmp_path)
    assert run(tmp_path, "--reference-manifest", str(reference)) == 0
    drift = [c for c in report(tmp_path)["checks"] if c["check"] == "drift"]
    assert [c["status"] for c in drift] == ["pass", "pass"] and drift[0]["value"]["delta"] == {"mean": 0, "std": 0}

    splits = good_splits()
    splits["train"] = (splits["train"][0] // 2, splits["train"][1])  # half as bright: mean 0.13 -> 0.065
    write_raw(tmp_path, splits)
    [line] = failed(tmp_path, capsys, "--reference-manifest", str(reference.parent))
    assert "drift[train]: " in line and "drift above 0.05" in line


def test_reference_without_pixel_stats_fails_the_drift_check(tmp_path, capsys):
    write_raw(tmp_path / "ref", good_splits(), "ref")
    write_good(tmp_path)
    lines = failed(tmp_path, capsys, "--reference-manifest", str(tmp_path / "ref/runs/ref/dataset"))
    assert len(lines) == 2 and "the reference manifest has no pixel_stats for split 'train'" in lines[0]


def test_runs_as_a_module(tmp_path):
    write_good(tmp_path)
    cmd = [sys.executable, "-m", "mnist_ct.validate", "--run-id", "r1", "--data-root", str(tmp_path)]
    cmd += ["--deploy-root", str(tmp_path / "deploy")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "31 checks: 28 passed, 0 failed, 3 skipped" in result.stderr
    assert "drift against nothing (no champion on the deploy volume)" in result.stderr


def test_the_report_names_the_reference_manifest(tmp_path):
    reference = write_good(tmp_path / "ref", "ref")
    write_good(tmp_path)
    assert run(tmp_path, "--reference-manifest", str(reference)) == 0
    assert report(tmp_path)["reference_manifest"] == str(reference / "manifest.json")


def test_bad_input_reference_data_set_that_fails_verification(tmp_path, capsys):
    reference = write_good(tmp_path / "ref", "ref")
    f = reference / "test/images.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    write_good(tmp_path)
    line = refused(tmp_path, capsys, 3, "--reference-manifest", str(reference))
    assert line.startswith(f"validate: error: {f}: sha256 ") and "does not match the manifest's" in line


def test_bad_input_reference_that_is_not_a_data_set(tmp_path, capsys):
    write_good(tmp_path / "ref", "ref")
    assert run(tmp_path / "ref", "--run-id", "ref") == 0  # its validation report: an artifact, but not a data set
    capsys.readouterr()
    write_good(tmp_path)
    other = tmp_path / "ref/runs/ref/validation/manifest.json"
    line = refused(tmp_path, capsys, 3, "--reference-manifest", str(other))
    assert line == f"validate: error: {other}: artifact kind is 'validation', expected 'dataset'"


def test_bad_input_reference_whose_pixel_stats_are_not_numbers(tmp_path, capsys):
    stats = {"train": {"mean": "bright", "std": None}, "test": {"mean": 0.13, "std": 0.31}}
    counts = {"train": {str(c): 20 for c in range(10)}}  # the label shift passes: one failure, the drift
    write_raw(tmp_path / "ref", good_splits(), "ref", meta={"pixel_stats": stats, "counts": counts})
    write_good(tmp_path)
    [line] = failed(tmp_path, capsys, "--reference-manifest", str(tmp_path / "ref/runs/ref/dataset"))
    assert "drift[train]: " in line
    assert (
        "the reference manifest's pixel_stats for split 'train' are not numbers ({'mean': 'bright', 'std': None})"
        in line
    )
