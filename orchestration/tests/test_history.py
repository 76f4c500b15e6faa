"""`mnist-ct history`: the champion timeline from a deployments.jsonl written as deploy writes it (event_log.py's
format: one sort_keys JSON object a line, `time` first added), joined with each run's data set manifest."""

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mnist_ct.artifacts.manifest import Producer, publish
from mnist_ct.orchestration.__main__ import main

IMAGES = {"train_model": "ghcr.io/mnist-ct/train-model@sha256:" + "1" * 64}
VERSIONS = {"preprocess": "0.4.0", "train_model": "0.3.0"}


def event(time: str, **fields) -> bytes:
    """One line as event_log.append_event writes it."""
    return (json.dumps({"time": time, **fields}, sort_keys=True) + "\n").encode()


def deployed(time: str, run: str, accuracy: float, previous: str | None, champion: float | None, data: str) -> bytes:
    return event(
        time, event="deploy", model="mnist", version=run, run_id=run, accuracy=accuracy, previous=previous,
        previous_accuracy=None, champion=previous, champion_accuracy=champion, forced=False, mar_sha256="ab" * 32,
        inputs={}, images=IMAGES, versions=VERSIONS, data_version=data, dataset_sha256="cd" * 32,
    )  # fmt: skip


@pytest.fixture
def volumes(tmp_path: Path) -> tuple[Path, Path]:
    """A deploy root with five events of mnist (one of another model, one torn line) and the runs' data sets."""
    deploy, data = tmp_path / "deploy-model", tmp_path / "data"
    deploy.mkdir()
    lines = [
        deployed("2026-12-01T10:00:00.000+00:00", "run-1", 0.91, None, None, "dv-1"),
        deployed("2026-12-01T11:00:00.000+00:00", "run-2", 0.935, "run-1", 0.918, "dv-2"),
        event("2026-12-01T11:30:00.000+00:00", event="deploy", model="fashion", version="f-1", run_id="f-1",
              accuracy=0.8, previous=None),  # fmt: skip
        event("2026-12-01T12:00:00.000+00:00", event="refused", model="mnist", version="run-3", run_id="run-3",
              accuracy=0.90, live="run-2", live_accuracy=0.935, champion="run-2", champion_accuracy=0.933,
              reason="the challenger's accuracy 0.9000 is below the champion's 0.9330 on the same test split"),
        b'{"time": "2026-12-01T12:10:00.000+00:00", "event": "dep',  # a run killed mid-write
        event("2026-12-01T13:00:00.000+00:00", event="rollback", model="mnist", version="run-1", run_id="run-1",
              accuracy=0.91, **{"from": "run-2"}, mar_sha256="ef" * 32, images=IMAGES, versions=VERSIONS,
              data_version="dv-1", dataset_sha256="cd" * 32),
        event("2026-12-01T14:00:00.000+00:00", event="recovered", model="mnist", version="run-2", run_id="run-2",
              accuracy=0.935, note="the live archive's version differs from the log", data_version="dv-2"),
    ]  # fmt: skip
    # The torn line has no newline: the next append started a fresh line (append_event does that).
    log = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    (deploy / "deployments.jsonl").write_bytes(log)
    metas: dict[str, dict[str, Any]] = {
        "run-1": {"data_version": "dv-1", "batches": []},
        "run-2": {"data_version": "dv-2", "batches": [{"id": "batch-a", "images": 40}]},
        "run-3": {"data_version": "dv-3", "batches": [{"id": "batch-a"}, {"id": "batch-b"}]},
    }
    for run, meta in metas.items():
        with publish(data / "runs" / run / "dataset", "dataset", Producer("preprocess", "0.4.0")) as staging:
            (staging.path / "train.npz").write_bytes(b"not read by history")
            staging.meta.update(meta)
    return deploy, data


def history(*args: str) -> int:
    return main(["history", *args])


def test_the_timeline_joins_every_event_with_its_runs_data(volumes, capsys):
    deploy, data = volumes
    assert history("--deploy-root", str(deploy), "--data-root", str(data), "--json") == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["event"], r["version"], r["live"]) for r in rows] == [
        ("deploy", "run-1", "run-1"),
        ("deploy", "run-2", "run-2"),
        ("refused", "run-3", "run-2"),
        ("rollback", "run-1", "run-1"),
        ("recovered", "run-2", "run-2"),
    ]
    assert [r["accuracy"] for r in rows] == [0.91, 0.935, 0.90, 0.91, 0.935]
    assert [r["champion_accuracy"] for r in rows] == [None, 0.918, 0.933, None, None]
    assert [r["champion"] for r in rows] == [None, "run-1", "run-2", None, None]
    # The refusal recorded no data version: its run's manifest says which data it saw.
    assert [r["data_version"] for r in rows] == ["dv-1", "dv-2", "dv-3", "dv-1", "dv-2"]
    assert [r["batches"] for r in rows] == [0, 1, 2, 0, 1]
    assert rows[2]["reason"].startswith("the challenger's accuracy 0.9000 is below")
    assert "deployments.jsonl: skipped 1 unreadable line(s) (5): a torn write?" in err


def test_csv_is_the_same_table(volumes, capsys):
    deploy, data = volumes
    assert history("--deploy-root", str(deploy), "--data-root", str(data), "--csv") == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == ["time", "event", "version", "run_id", "accuracy", "champion",
                                   "champion_accuracy", "live", "data_version", "batches", "reason"]  # fmt: skip
    assert list(table["event"]) == ["deploy", "deploy", "refused", "rollback", "recovered"]
    assert list(table["batches"]) == [0, 1, 2, 0, 1]


def test_without_a_data_root_batches_are_unknown_and_the_table_prints(volumes, capsys):
    deploy, _ = volumes
    assert history("--deploy-root", str(deploy)) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["time", "event", "version", "run_id", "accuracy", "champion", "champion_accuracy",
                                "live", "data_version", "batches", "reason"]  # fmt: skip
    assert len(lines) == 6
    assert "0.9350" in lines[2] and "0.9180" in lines[2]
    refused = lines[3].split()
    assert refused[1:4] == ["refused", "run-3", "run-3"]
    assert refused[8:10] == ["-", "-"]  # no data version recorded, no manifest read: unknown, not invented


def test_another_model_has_its_own_timeline(volumes, capsys):
    deploy, _ = volumes
    assert history("--deploy-root", str(deploy), "--model-name", "fashion", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["version"], row["accuracy"], row["live"]) == ("f-1", 0.8, "f-1")
    assert history("--deploy-root", str(deploy), "--model-name", "digits") == 0
    assert "no deploy, refusal or rollback of model digits in" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_draws_accuracy_over_runs(volumes, tmp_path, capsys, suffix):
    deploy, data = volumes
    target = tmp_path / "plots" / f"accuracy{suffix}"
    assert history("--deploy-root", str(deploy), "--data-root", str(data), "--plot", str(target)) == 0
    content = target.read_bytes()
    if suffix == ".png":
        assert content[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        pixels = matplotlib.image.imread(target)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500  # a real picture, not a stub
        assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}) > 5  # with something drawn
    else:
        assert content.lstrip().startswith(b"<?xml") and b"<svg" in content
        assert b"run-3" in content  # the runs are the x axis
    assert not list(target.parent.glob(".*.tmp"))
    assert f"plot: {target} (5 events)" in capsys.readouterr().err


def test_bad_input_is_one_line(volumes, tmp_path, capsys):
    deploy, data = volumes
    cases = [
        (["--deploy-root", str(tmp_path / "nowhere")], 3, "no such folder; give the deploy volume"),
        (["--deploy-root", str(data)], 3, "deployments.jsonl: no deployments log"),
        (["--deploy-root", str(deploy), "--data-root", str(tmp_path / "nowhere")], 3, "--data-root"),
        (["--deploy-root", str(deploy), "--plot", str(tmp_path / "a.pdf")], 2, "give a file ending in .png or .svg"),
        (["--deploy-root", str(deploy), "--model-name", "../x"], 2, "invalid model name '../x'"),
        (["--deploy-root", str(deploy), "--csv", "--json"], 2, "not allowed with argument"),
    ]
    for argv, code, message in cases:
        assert history(*argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], (argv, err)
        assert err[-1].startswith("mnist-ct history: error: ")
        if code == 3:
            assert len(err) == 1


def test_a_corrupt_manifest_is_named(volumes, capsys):
    deploy, data = volumes
    (data / "runs" / "run-2" / "dataset" / "manifest.json").write_text("{not json")
    assert history("--deploy-root", str(deploy), "--data-root", str(data)) == 3
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "runs/run-2/dataset/manifest.json: not a valid manifest" in line


def test_nothing_to_plot_is_bad_input(tmp_path, capsys):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    refused = event("2026-12-01T10:00:00.000+00:00", event="refused", model="mnist", version="r", run_id="r")
    (deploy / "deployments.jsonl").write_bytes(refused)
    assert history("--deploy-root", str(deploy), "--plot", str(tmp_path / "p.png")) == 3
    assert "records an accuracy; nothing to plot" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
