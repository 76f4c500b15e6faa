"""Every option is checked when parsed (or when Options are made in code), before anything is read or created."""

from pathlib import Path

import pytest
from step_runs import README_PATH, refused

from mnist_ct.artifacts import UsageError
from mnist_ct.artifacts.testing import assert_readme_documents
from mnist_ct.preprocess.__main__ import build_parser, options_from_args
from mnist_ct.preprocess.download import RetryPolicy
from mnist_ct.preprocess.step import Options


def refused_at_parse(tmp_path, capsys, *args):
    """Exit 2 with argparse's one error line, and nothing created on the data volume."""
    line = refused(tmp_path, capsys, 2, *args)
    assert not (tmp_path / "data").exists()
    return line


def test_readme_options_match_the_parser():
    assert_readme_documents(build_parser(), README_PATH)


def test_defaults_make_the_default_options():
    args = build_parser().parse_args(["--run-id", "r"])
    assert options_from_args(args) == Options()


@pytest.mark.parametrize("text", ["-1", "4294967296", "1.5", "abc", "nan", ""])
def test_bad_input_seed(tmp_path, capsys, text):
    assert "argument --seed: " in refused_at_parse(tmp_path, capsys, "--seed", text)


def test_seed_limits_are_accepted(tmp_path):
    build_parser().parse_args(["--run-id", "r", "--seed", "4294967295"])
    build_parser().parse_args(["--run-id", "r", "--seed", "0"])


@pytest.mark.parametrize("text", ["0", "-1", "11", "abc", "1e9"])
def test_bad_input_retries(tmp_path, capsys, text):
    assert "argument --retries: " in refused_at_parse(tmp_path, capsys, "--retries", text)


@pytest.mark.parametrize("text", ["0", "-5", "1000001", "99999999999999999999", "1e3", "x"])
def test_bad_input_limit_per_class(tmp_path, capsys, text):
    assert "argument --limit-per-class: " in refused_at_parse(tmp_path, capsys, "--limit-per-class", text)


@pytest.mark.parametrize("text", ["0", "1", "-0.1", "1.5", "nan", "inf", "-inf", "a fifth"])
def test_bad_input_test_fraction(tmp_path, capsys, text):
    assert "argument --test-fraction: " in refused_at_parse(tmp_path, capsys, "--test-fraction", text)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/mnist/", "scheme 'ftp', expected one of http, https, file"),
        ("example.org/mnist/", "scheme 'missing'"),
        ("", "empty, or holds spaces or control characters"),
        ("http://example.org/my mnist/", "holds spaces"),
        ("http:///mnist/", "no host"),
        ("http://example.org:99999/", "not a URL (Port out of range"),
        ("http://[::1/", "not a URL"),
        ("https://example.org/mnist/?token=1", "no query or fragment"),
        ("https://example.org/mnist/#top", "no query or fragment"),
        ("file://otherhost/data/", "a file URL needs an absolute path on this machine"),
    ],
)
def test_bad_input_mirror(tmp_path, capsys, url, problem):
    line = refused_at_parse(tmp_path, capsys, "--dataset", "mnist", "--mirror", url)
    assert "argument --mirror: " in line and problem in line


def test_bad_input_unknown_dataset(tmp_path, capsys):
    assert "argument --dataset: invalid choice: 'cifar'" in refused_at_parse(tmp_path, capsys, "--dataset", "cifar")


def test_bad_input_source_folder_missing(tmp_path, capsys):
    line = refused_at_parse(tmp_path, capsys, "--source", str(tmp_path / "nowhere"))
    assert line.endswith(f"argument --source: {tmp_path / 'nowhere'}: no such folder")


def test_bad_input_source_is_a_file(tmp_path, capsys):
    (tmp_path / "mnist_5k.csv.gz").write_bytes(b"")
    line = refused_at_parse(tmp_path, capsys, "--source", str(tmp_path / "mnist_5k.csv.gz"))
    assert f"argument --source: {tmp_path / 'mnist_5k.csv.gz'}: is a file, not a folder" in line


def test_bad_input_mirror_with_nothing_to_download(tmp_path, capsys, idx_folder):
    line = refused_at_parse(tmp_path, capsys, "--mirror", "https://example.org/")
    assert line == "preprocess: error: --mirror: nothing is downloaded (mnist-5k is built in); drop --mirror"
    args = ["--dataset", "mnist", "--source", str(idx_folder), "--mirror", "https://example.org/"]
    assert "--source reads the files from a folder" in refused_at_parse(tmp_path, capsys, *args)


@pytest.mark.parametrize("run_id", ["../x", "/abs/path", "a/b", "r1\n", ".hidden", ""])
def test_bad_input_run_id(tmp_path, capsys, run_id):
    line = refused(tmp_path, capsys, 2, "--run-id", run_id)
    assert "argument --run-id: invalid run id" in line
    assert not (tmp_path / "data").exists()


def test_bad_input_data_root_is_a_file(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    line = refused(tmp_path, capsys, 2)
    assert f"argument --data-root: {tmp_path / 'data'}: is a file, not a folder" in line
    assert (tmp_path / "data").read_text() == "not a folder"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset": "cifar"}, "--dataset 'cifar': unknown"),
        ({"seed": -1}, "--seed -1: must be from 0 to 4294967295"),
        ({"limit_per_class": 0}, "--limit-per-class 0: must be from 1 to 1000000"),
        ({"test_fraction": float("nan")}, "--test-fraction nan: must be in (0, 1)"),
        ({"test_fraction": 1.0}, "--test-fraction 1.0: must be in (0, 1)"),
        ({"retry": RetryPolicy(attempts=0)}, "--retries 0: must be from 1 to 10"),
        ({"dataset": "mnist", "mirrors": ("gopher://x/",)}, "--mirror 'gopher://x/': scheme 'gopher'"),
        ({"source": Path("/nonexistent/folder")}, "--source /nonexistent/folder: no such folder"),
        ({"limit_per_class": 2}, "the test split would be empty (--limit-per-class 2, --test-fraction 0.2)"),
    ],
)
def test_bad_input_options_made_in_code_are_checked_too(fields, message):
    with pytest.raises(UsageError) as e:
        Options(**fields)
    assert message in str(e.value)


def test_bad_input_data_root_inside_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    root = tmp_path / "afile/data"
    line = refused(tmp_path, capsys, 2, "--limit-per-class", "10", data_root=root)
    assert line.endswith(f"argument --data-root: {root}: {tmp_path / 'afile'} is a file, so this folder cannot exist; "
                         "pass the volume's folder")  # fmt: skip
