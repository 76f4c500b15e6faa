"""Every option is checked when parsed (or when Options are made in code), before any check runs."""

import pytest
from step_runs import README_PATH, no_report, refused
from tiny_datasets import write_good

from mnist_ct.artifacts import UsageError
from mnist_ct.artifacts.testing import assert_readme_documents
from mnist_ct.validate.__main__ import build_parser, options_from_args
from mnist_ct.validate.checks import Thresholds
from mnist_ct.validate.step import Options


def test_readme_options_match_the_parser():
    assert_readme_documents(build_parser(), README_PATH)


def test_defaults_make_the_default_options():
    assert options_from_args(build_parser().parse_args(["--run-id", "r"])) == Options()


@pytest.mark.parametrize("option", ["--drift-tolerance", "--min-class-ratio", "--max-leakage", "--max-label-shift"])
@pytest.mark.parametrize("text", ["-0.1", "1.1", "nan", "inf", "-inf", "x", ""])
def test_bad_input_share_outside_0_to_1(tmp_path, capsys, option, text):
    write_good(tmp_path)
    assert f"argument {option}: " in refused(tmp_path, capsys, 2, option, text)


def test_shares_at_0_and_1_are_accepted(tmp_path):
    write_good(tmp_path)
    args = ["--run-id", "r", "--max-leakage", "0", "--min-class-ratio", "1", "--drift-tolerance", "0"]
    assert options_from_args(build_parser().parse_args(args)).thresholds.max_leakage == 0.0


@pytest.mark.parametrize("option", ["--mean-bounds", "--std-bounds"])
@pytest.mark.parametrize("values", [["-0.1", "0.5"], ["0.1", "1.5"], ["nan", "0.5"], ["0.1", "inf"], ["a", "b"]])
def test_bad_input_bounds_outside_0_to_1(tmp_path, capsys, option, values):
    assert f"argument {option}: " in refused(tmp_path, capsys, 2, option, *values)


@pytest.mark.parametrize("option", ["--mean-bounds", "--std-bounds"])
def test_bad_input_bounds_need_two_values(tmp_path, capsys, option):
    assert f"argument {option}: expected 2 arguments" in refused(tmp_path, capsys, 2, option, "0.1")


@pytest.mark.parametrize("option", ["--mean-bounds", "--std-bounds"])
def test_bad_input_low_above_high(tmp_path, capsys, option):
    write_good(tmp_path)
    line = refused(tmp_path, capsys, 2, option, "0.5", "0.1")
    assert line == f"validate: error: {option}: LOW 0.5 is above HIGH 0.1; give LOW <= HIGH"


def test_low_equal_to_high_is_accepted(tmp_path):
    write_good(tmp_path)
    args = ["--run-id", "r", "--mean-bounds", "0.2", "0.2"]
    assert options_from_args(build_parser().parse_args(args)).thresholds.mean_bounds == (0.2, 0.2)


def test_bad_input_reference_manifest_not_found(tmp_path, capsys):
    write_good(tmp_path)
    missing = tmp_path / "nowhere/manifest.json"
    line = refused(tmp_path, capsys, 2, "--reference-manifest", str(missing))
    assert line.endswith(
        f"argument --reference-manifest: {missing}: not found; pass a data set's manifest.json or its folder"
    )


def test_bad_input_reference_manifest_is_another_file(tmp_path, capsys):
    write_good(tmp_path)
    other = tmp_path / "ref.json"
    other.write_text("{}")
    line = refused(tmp_path, capsys, 2, "--reference-manifest", str(other))
    assert f"argument --reference-manifest: {other}: not a manifest.json" in line


def test_bad_input_reference_folder_without_a_manifest(tmp_path, capsys):
    write_good(tmp_path)
    (tmp_path / "empty").mkdir()
    line = refused(tmp_path, capsys, 2, "--reference-manifest", str(tmp_path / "empty"))
    assert f"argument --reference-manifest: {tmp_path / 'empty'}: the folder holds no manifest.json" in line


@pytest.mark.parametrize("run_id", ["../x", "/abs/path", "r1\n", ""])
def test_bad_input_run_id(tmp_path, capsys, run_id):
    assert "argument --run-id: invalid run id" in refused(tmp_path, capsys, 2, "--run-id", run_id)
    assert not (tmp_path / "runs").exists()


def test_bad_input_data_root_is_a_file(tmp_path, capsys):
    root = tmp_path / "data"
    root.write_text("")
    assert f"argument --data-root: {root}: is a file, not a folder" in refused(root, capsys, 2)
    assert no_report(tmp_path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"thresholds": Thresholds(mean_bounds=(0.5, 0.1))}, "--mean-bounds: LOW 0.5 is above HIGH 0.1"),
        ({"thresholds": Thresholds(std_bounds=(0.2, 0.1))}, "--std-bounds: LOW 0.2 is above HIGH 0.1"),
        ({"thresholds": Thresholds(std_bounds=(0.2,))}, "--std-bounds: give LOW HIGH, got [0.2]"),  # type: ignore[arg-type]
        ({"thresholds": Thresholds(mean_bounds=(float("nan"), 0.5))}, "--mean-bounds LOW nan: must be in [0, 1]"),
        ({"thresholds": Thresholds(max_leakage=2.0)}, "--max-leakage 2.0: must be in [0, 1]"),
        ({"thresholds": Thresholds(drift_tolerance=-1.0)}, "--drift-tolerance -1.0: must be in [0, 1]"),
        ({"thresholds": Thresholds(min_class_ratio=float("inf"))}, "--min-class-ratio inf: must be in [0, 1]"),
        ({"thresholds": Thresholds(max_label_shift=1.5)}, "--max-label-shift 1.5: must be in [0, 1]"),
        ({"model_name": "a/b"}, "--model-name: invalid model name 'a/b'"),
    ],
)
def test_bad_input_options_made_in_code_are_checked_too(fields, message):
    with pytest.raises(UsageError) as e:
        Options(**fields)
    assert message in str(e.value)


def test_a_reference_manifest_file_becomes_its_folder(tmp_path):
    folder = write_good(tmp_path)
    assert Options(reference=folder / "manifest.json").reference == folder
