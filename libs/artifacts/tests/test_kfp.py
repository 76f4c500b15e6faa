"""KFP v2 outputs written by a step itself: --executor-input, --output-artifact, MNIST_CT_IMAGES."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mnist_ct.artifacts import (
    IMAGES_ENV,
    ArtifactError,
    KfpOutputs,
    Log,
    Producer,
    RunPaths,
    UsageError,
    add_kfp_arguments,
    add_run_arguments,
    publish,
    step_images,
    step_main,
)
from mnist_ct.artifacts.testing import executor_input, read_executor_output

STEP = "demo"
DECLARED = {"table": "system.Dataset", "scores": "system.Metrics"}
IMAGES = {"demo": "127.0.0.1:5000/mnist-ct-demo@sha256:" + "a" * 64, "other": "localhost/other:0.1.0"}


@dataclass(frozen=True)
class Options:
    kfp: KfpOutputs
    fail: bool = False
    skip: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_run_arguments(parser)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--skip", action="store_true", help="do not add the scores artifact (a bug)")
    add_kfp_arguments(parser, DECLARED)
    return parser


def run(paths: RunPaths, options: Options, log: Log) -> None:
    """A step with two artifacts: it publishes its folder, then adds both; --fail fails after adding them."""
    with options.kfp.writing(paths.run_id) as out:
        with publish(paths.dataset, "dataset", Producer.of(STEP)) as staging:
            (staging.path / "table.csv").write_text("a,b\n1,2\n")
        out.add("table", b"a,b\n1,2\n", {"rows": 1, "uri": "file:///x"})
        if not options.skip:
            out.add("scores", b"{}", {"accuracy": 0.5})
        out.file(paths.model_root / "param", b"0.5")
        if options.fail:
            raise ArtifactError("the demo failed after adding its artifacts")


def main(argv: list[str]) -> int:
    def options(args: argparse.Namespace) -> Options:
        return Options(KfpOutputs.from_args(STEP, DECLARED, args), args.fail, args.skip)

    return step_main(STEP, build_parser(), options, run, argv)


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    return RunPaths("r1", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")


def args(paths: RunPaths, *extra: str) -> list[str]:
    return [*paths.cli_args(), "--quiet", *extra]


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_images_are_read_from_the_environment_and_absent_means_none():
    assert step_images({IMAGES_ENV: json.dumps(IMAGES)}) == IMAGES
    assert step_images({}) == {} and step_images({IMAGES_ENV: " "}) == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "is not JSON"),
        ("[" * 100_000, "is not JSON (nested too deeply)"),
        ('["a"]', "must be a JSON object, got list"),
        ('{"demo": 3}', "step 'demo' has image 3"),
        ('{"demo": ""}', "step 'demo' has image ''"),
        ('{"demo": "a b"}', "not an image reference"),
    ],
)
def test_bad_input_malformed_images_variable_is_a_usage_error_naming_it(text, needle):
    with pytest.raises(UsageError, match=IMAGES_ENV) as raised:
        step_images({IMAGES_ENV: text})
    assert needle in str(raised.value) and "\n" not in str(raised.value)


def test_a_step_writes_its_artifact_files_and_the_executor_output_with_the_common_metadata(
    paths, tmp_path, monkeypatch
):
    monkeypatch.setenv(IMAGES_ENV, json.dumps(IMAGES))
    output_file = tmp_path / "kfp" / "outputs" / "output_metadata.json"
    table, scores = tmp_path / "kfp" / "table" / "data", tmp_path / "kfp" / "scores"
    given = ["--executor-input", executor_input(output_file, DECLARED, "demo")]
    given += ["--output-artifact", f"table={table}", "--output-artifact", f"scores={scores}"]

    assert main(args(paths, *given)) == 0

    assert table.read_text() == "a,b\n1,2\n" and scores.read_text() == "{}"
    metadata = read_executor_output(output_file)
    common = {"step": STEP, "step_version": Producer.of(STEP).version, "image": IMAGES["demo"], "run_id": "r1"}
    assert metadata == {"table": {"rows": 1, "uri": "file:///x", **common}, "scores": {"accuracy": 0.5, **common}}
    document = json.loads(output_file.read_text())  # name and uri as the launcher gave them, as KFP's executor does
    assert document["artifacts"]["table"]["artifacts"][0]["uri"] == "minio://mlpipeline/v2/artifacts/run/demo/table"
    assert (paths.model_root / "param").read_bytes() == b"0.5"
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_without_images_the_image_is_null_and_without_executor_input_only_the_files_are_written(
    paths, tmp_path, monkeypatch
):
    monkeypatch.delenv(IMAGES_ENV, raising=False)
    table = tmp_path / "out" / "table.csv"
    output_file = tmp_path / "kfp" / "output_metadata.json"

    assert main(args(paths, "--output-artifact", f"table={table}")) == 0
    assert table.read_text() == "a,b\n1,2\n" and not (tmp_path / "kfp").exists()

    assert main(args(paths, "--executor-input", executor_input(output_file, {"table": "system.Dataset"}))) == 0
    assert set(read_executor_output(output_file)) == {"table"}  # the artifacts the pipeline declares
    assert read_executor_output(output_file)["table"]["image"] is None


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        (
            ["--output-artifact", "model=/tmp/x"],
            "argument --output-artifact: 'model=/tmp/x': this step has no "
            "output artifact 'model' (it writes table (system.Dataset), scores (system.Metrics))",
        ),
        (["--output-artifact", "table"], "argument --output-artifact: 'table': expected NAME=PATH"),
        (["--output-artifact", "table=/"], "argument --output-artifact: table /: is a folder"),
        (["--executor-input", '{"outputs": {}}'], "argument --executor-input: has no outputs.outputFile"),
        (["--executor-input", "{not json"], "argument --executor-input: is not JSON (Expecting property name"),
        (["--executor-input", "[" * 100_000], "argument --executor-input: is not JSON (nested too deeply)"),
        (["--executor-input", '{"outputs": []}'], "argument --executor-input: outputs must be an object"),
        (["--executor-input", '{"outputs": {"outputFile": "/"}}'], "outputs.outputFile /: is a folder"),
        (
            ["--executor-input", '{"outputs": {"outputFile": "/tmp/x", "artifacts": {"t": {"artifacts": [1]}}}}'],
            "outputs.artifacts must map each name",
        ),
    ],
)
def test_bad_input_kfp_options_are_refused_when_parsed(paths, capsys, given, needle):
    assert main(args(paths, *given)) == 2

    assert needle in error_line(capsys)
    assert not paths.dataset.exists()


def test_bad_input_executor_input_with_an_artifact_the_step_does_not_write_is_refused(paths, tmp_path, capsys):
    for artifacts, needle in (
        ({"model": "system.Model"}, "output artifact 'model' is not one this step writes"),
        (
            {"table": "system.Model"},
            "output artifact 'table' has type 'system.Model', but this step writes a system.Dataset",
        ),
    ):
        assert main(args(paths, "--executor-input", executor_input(tmp_path / "out.json", artifacts))) == 2
        assert needle in error_line(capsys)
    assert not paths.dataset.exists()


def test_bad_input_one_file_for_two_outputs_or_one_artifact_twice_is_refused(paths, tmp_path, capsys):
    out = tmp_path / "out.json"
    for given, needle in (
        (["--output-artifact", f"table={out}", "--output-artifact", f"scores={out}"], "are both"),
        (["--output-artifact", f"table={out}", "--output-artifact", f"table={out}.2"], "table is given twice"),
        (["--output-artifact", f"table={out}", "--executor-input", executor_input(out, DECLARED)], "are both"),
    ):
        assert main(args(paths, *given)) == 2
        assert needle in error_line(capsys)
    assert not paths.dataset.exists()


def test_bad_input_one_file_spelt_two_ways_for_two_outputs_is_refused(paths, tmp_path, capsys):
    out = tmp_path / "out.json"
    (tmp_path / "sub").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path, target_is_directory=True)
    for spelt in (tmp_path / "sub" / ".." / "out.json", tmp_path / "linked" / "out.json"):
        given = ["--output-artifact", f"table={spelt}", "--executor-input", executor_input(out, DECLARED)]
        assert main(args(paths, *given)) == 2
        assert "are both" in error_line(capsys)
    assert not paths.dataset.exists() and not out.exists()


def test_bad_input_malformed_images_variable_stops_the_step_before_any_work(paths, capsys, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, '{"demo": 1}')

    assert main(args(paths)) == 2

    assert error_line(capsys).startswith(f"demo: error: environment variable {IMAGES_ENV}: step 'demo' has image 1")
    assert not paths.dataset.exists()


def test_bad_input_an_output_on_a_read_only_volume_is_refused_before_any_work(paths, read_only_volume, capsys):
    assert main(args(paths, "--output-artifact", f"table={read_only_volume / 'kfp' / 'table'}")) == 5

    assert "read-only" in error_line(capsys)
    assert not paths.dataset.exists()


def test_a_failing_step_leaves_no_artifact_file_no_executor_output_and_no_folder(paths, tmp_path):
    output_file = tmp_path / "kfp" / "outputs" / "output_metadata.json"
    table = tmp_path / "kfp" / "table" / "data"
    given = ["--executor-input", executor_input(output_file, DECLARED), "--output-artifact", f"table={table}"]

    assert main(args(paths, *given, "--fail")) == 3

    assert not (tmp_path / "kfp").exists() and not (paths.model_root / "param").exists()


def test_a_step_that_does_not_add_a_declared_artifact_is_a_bug_and_writes_nothing(paths, tmp_path, capsys):
    output_file = tmp_path / "kfp" / "output_metadata.json"

    assert main(args(paths, "--executor-input", executor_input(output_file, DECLARED), "--skip")) == 1

    assert "demo did not write its output artifacts ['scores']" in error_line(capsys)
    assert not output_file.exists()


def test_the_executor_output_refuses_a_nan_rather_than_writing_what_kfp_cannot_parse(paths, tmp_path):
    outputs = KfpOutputs(STEP, DECLARED, json.loads(executor_input(tmp_path / "o.json", {"scores": "system.Metrics"})))
    with pytest.raises(ValueError, match="Out of range float"):
        with outputs.writing("r1") as out:
            out.add("scores", b"", {"accuracy": float("nan")})
    assert not list(tmp_path.iterdir())


def test_bad_input_an_artifact_file_on_a_full_volume_is_exit_5_and_leaves_no_temporary(paths, full_volume, capsys):
    table = full_volume / "table"

    assert main(args(paths, "--output-artifact", f"table={table}")) == 5

    assert f"{table}: No space left on device; the disk is full" in error_line(capsys)
    assert not table.exists() and not [p for p in full_volume.iterdir() if p.name.startswith(".")]
