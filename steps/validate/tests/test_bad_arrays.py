"""Hostile arrays and manifests published around the contract: each is a failed check with its own line
(exit 3, the report written), never a crash."""

import json

import numpy as np
import pytest
from step_runs import failed, report, run
from tiny_datasets import good_splits, write_good, write_raw


def check(tmp_path, name, scope):
    return next(c for c in report(tmp_path)["checks"] if c["check"] == name and c["scope"] == scope)


@pytest.mark.parametrize(
    ("labels", "found"),
    [
        (np.array(["3"] * 200), "<U1 [200]"),
        (np.ones(200, bool), "bool [200]"),
        (np.ones(200, np.complex64), "complex64 [200]"),
        (np.zeros((200, 1), np.int64), "int64 [200, 1]"),
        (np.zeros(199, np.int64), "int64 [199]"),
    ],
)
def test_bad_input_labels_of_the_wrong_kind_or_shape(tmp_path, capsys, labels, found):
    splits = good_splits()
    splits["train"] = (splits["train"][0], labels)
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert any(
        "label_format[train]: " in line and f"labels are {found}, expected integer [200]" in line for line in lines
    )


def test_bad_input_text_labels_skip_the_class_checks(tmp_path, capsys):
    splits = good_splits()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    splits["train"] = (splits["train"][0], names[splits["train"][1]])  # class names, not numbers
    write_raw(tmp_path, splits)
    [line] = failed(tmp_path, capsys)
    assert "label_format[train]: " in line
    for name in ("labels_in_range", "classes_present", "class_balance", "counts_match_manifest"):
        assert check(tmp_path, name, "train")["status"] == "skip"


def test_bad_input_nan_labels(tmp_path, capsys):
    splits = good_splits()
    labels = splits["train"][1].astype(np.float64)
    labels[[3, 9]] = [np.nan, np.inf]
    splits["train"] = (splits["train"][0], labels)
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    in_range = [line for line in lines if "labels_in_range[train]: " in line]
    assert len(in_range) == 1 and "2 labels are nan or inf, expected whole numbers in 0..9" in in_range[0]
    json.loads((tmp_path / "runs/r1/validation/report.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_bad_input_negative_and_huge_labels_are_not_counted(tmp_path, capsys):
    splits = good_splits()
    labels = splits["test"][1].astype(np.uint64)
    labels[0] = np.iinfo(np.uint64).max  # would wrap to -1 as int64
    splits["test"] = (splits["test"][0], labels)
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert any("labels_in_range[test]: " in line for line in lines)
    assert sum(check(tmp_path, "counts_match_manifest", "test")["value"].values()) == 49


def test_bad_input_images_that_are_one_number(tmp_path, capsys):
    splits = good_splits()
    splits["test"] = (np.array(7, np.uint8), splits["test"][1])
    write_raw(tmp_path, splits)
    lines = failed(tmp_path, capsys)
    assert any(
        "image_format[test]: " in line and "images are uint8 [], expected uint8 [N,28,28]" in line for line in lines
    )


@pytest.mark.parametrize("meta", [["not", "a", "dict"], {"counts": ["nor", "this"]}, {"counts": {"test": 5}}])
def test_bad_input_hand_made_meta_is_not_trusted(tmp_path, capsys, meta):
    write_raw(tmp_path, good_splits(), meta=meta)
    assert run(tmp_path) == 0  # the counts cannot be compared: skipped, not a crash
    assert check(tmp_path, "counts_match_manifest", "train")["status"] == "skip"
    assert capsys.readouterr().err == ""


def test_bad_input_manifest_that_is_not_json(tmp_path, capsys):
    dataset = write_good(tmp_path)
    (dataset / "manifest.json").write_text("{ not json")
    [line] = failed(tmp_path, capsys)
    assert line.startswith(f"validate: check failed: manifest: {dataset / 'manifest.json'}: not a valid manifest")


def test_bad_input_a_folder_where_images_npy_should_be(tmp_path, capsys):
    dataset = write_good(tmp_path)
    (dataset / "test/images.npy").unlink()
    (dataset / "test/images.npy").mkdir()
    lines = failed(tmp_path, capsys)
    assert any(
        f"checksum[test/images.npy]: {dataset / 'test/images.npy'}: listed in the manifest but missing" in line
        for line in lines
    )
    assert any(f"split_present[test]: {dataset / 'test/images.npy'}: missing" in line for line in lines)


def test_bad_input_a_header_that_claims_terabytes_is_a_finding_not_out_of_memory(tmp_path, capsys):
    splits = good_splits()
    write_raw(tmp_path, splits)
    f = tmp_path / "runs/r1/dataset/train/images.npy"
    with open(f, "wb") as out:  # a header for 10**11 images over 1,000 bytes of data
        np.lib.format.write_array_header_1_0(out, {"descr": "|u1", "fortran_order": False, "shape": (10**11, 28, 28)})
        out.write(b"\0" * 1000)
    lines = failed(tmp_path, capsys)
    assert any(
        f"readable[train]: {f}: not a readable .npy array (the header says uint8 [100000000000, 28, 28], "
        "78400000000000 bytes of data, but the file holds 1000)" in line
        for line in lines
    )


def test_bad_input_truncated_npy(tmp_path, capsys):
    write_raw(tmp_path, good_splits())
    f = tmp_path / "runs/r1/dataset/test/labels.npy"
    f.write_bytes(f.read_bytes()[:-8])
    lines = failed(tmp_path, capsys)
    assert any(f"readable[test]: {f}: not a readable .npy array (the header says int64 [50]" in line for line in lines)


def test_bad_input_not_an_npy_file(tmp_path, capsys):
    write_raw(tmp_path, good_splits())
    f = tmp_path / "runs/r1/dataset/test/labels.npy"
    f.write_bytes(b"0,1,2,3\n")
    lines = failed(tmp_path, capsys)
    assert any(f"readable[test]: {f}: not a readable .npy array (" in line for line in lines)
