"""Incoming batches: added to the base data set by content, cached, refused when bad; and skip-if-unchanged."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from step_runs import error_line, nothing_published

from mnist_ct.artifacts import VERSIONS_ENV, Split, read_dataset
from mnist_ct.artifacts import digits as digits_module
from mnist_ct.artifacts.testing import executor_input, publish_deployment, read_executor_output
from mnist_ct.preprocess.__main__ import main
from mnist_ct.preprocess.incoming import goes_to_test
from mnist_ct.preprocess.step import ARTIFACTS

VERSIONS = {"preprocess": "0.4.0", "train_model": "0.3.0"}


def run(data_root: Path, *args: str, deploy_root: Path | None = None) -> int:
    deploy = deploy_root or data_root.parent / "deploy"
    return main(["--run-id", "r1", "--data-root", str(data_root), "--deploy-root", str(deploy), *args])


def published(data_root: Path) -> tuple[dict, dict[str, Split]]:
    m, splits = read_dataset(data_root / "runs/r1/dataset")
    return m.meta, splits


def png(pixels: np.ndarray, mode: str = "L", size: int | None = None, fmt: str = "PNG") -> bytes:
    """A real digit (uint8 [28,28], white on black) as an image file of another size, mode or format."""
    image = Image.fromarray(pixels)
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    if mode == "RGB":
        image = Image.merge("RGB", [Image.eval(image, lambda v: 255 - v)] * 3)  # dark ink on white paper
    elif mode == "RGBA":
        ink = image
        image = Image.new("RGBA", image.size, (20, 40, 200, 0))
        image.putalpha(ink)  # a digit drawn on a transparent canvas
    elif mode == "I;16":
        image = Image.frombytes("I;16", image.size, (np.asarray(image).astype("<u2") * 257).tobytes())
    elif mode == "P":
        image = image.convert("P")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def drop(data_root: Path, batch: str, files: dict[str, bytes], complete: bool = True) -> Path:
    """Write a batch: rel path ("<label>/<name>") -> bytes, then _SUCCESS last (as a producer must)."""
    folder = data_root / "incoming" / batch
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    if complete:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder


def resized_batch(digits: Split, start: int, n: int, size: int = 40) -> dict[str, bytes]:
    """n real digits upscaled to size x size: decoded back to 28x28 they differ from the originals."""
    return {f"{int(digits.labels[i])}/d{i}.png": png(digits.images[i], size=size) for i in range(start, start + n)}


def hashes(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha256(np.ascontiguousarray(im).tobytes()).digest() for im in images}


def decoded(files: dict[str, bytes]) -> list[np.ndarray]:
    return [digits_module.decode_image(data) for data in files.values()]


def test_a_batch_is_split_by_content_and_keeps_its_split_when_another_arrives(tmp_path, digits):
    data = tmp_path / "data"
    first = resized_batch(digits, 0, 60)
    drop(data, "b1", first)
    assert run(data, "--quiet") == 0
    meta1, splits1 = published(data)

    (record,) = meta1["batches"]
    assert record["id"] == "b1" and record["images"] == 60 and record["duplicates"] == 0
    assert record["train"] + record["test"] == 60 and 0 < record["test"] < 30
    assert meta1["sizes"] == {"train": 4000 + record["train"], "test": 1000 + record["test"]}
    for image in decoded(first):  # the rule: the first 8 bytes of the pixels' sha256 against --test-fraction
        h = hashlib.sha256(image.tobytes()).digest()
        assert (h in hashes(splits1["test"].images)) == goes_to_test(h, 0.2)
        assert (h in hashes(splits1["train"].images)) != goes_to_test(h, 0.2)

    drop(data, "b2", resized_batch(digits, 60, 60))
    assert run(data, "--quiet") == 0
    meta2, splits2 = published(data)
    assert [b["id"] for b in meta2["batches"]] == ["b1", "b2"] and meta2["batches"][0] == record
    assert hashes(splits1["test"].images) <= hashes(splits2["test"].images)  # the test set only grows
    assert hashes(splits1["train"].images) <= hashes(splits2["train"].images)
    assert meta2["base"] == meta1["base"] and meta2["data_version"] != meta1["data_version"]


def test_exact_duplicates_of_the_base_and_of_earlier_batches_are_dropped(tmp_path, digits):
    data = tmp_path / "data"
    new = png(digits.images[1], size=50)
    drop(
        data,
        "a",
        {
            "0/same-as-base.png": png(digits.images[0]),  # 28x28 grayscale: converts to the base digit itself
            f"{int(digits.labels[1])}/new.png": new,
            f"{int(digits.labels[1])}/new-again.png": new,
        },
    )
    drop(data, "b", {f"{int(digits.labels[1])}/new-in-b.png": new, **resized_batch(digits, 2, 1)})
    assert run(data, "--quiet") == 0
    meta, splits = published(data)

    a, b = meta["batches"]
    assert (a["images"], a["duplicates"], a["train"] + a["test"]) == (3, 2, 1)
    assert (b["images"], b["duplicates"], b["train"] + b["test"]) == (2, 1, 1)
    assert meta["sizes"]["train"] + meta["sizes"]["test"] == 5000 + 2


def test_incomplete_batches_are_ignored_and_named_in_the_log(tmp_path, digits, capsys):
    data = tmp_path / "data"
    assert run(data, "--quiet") == 0
    without = published(data)[0]["data_version"]
    drop(data, "late", resized_batch(digits, 0, 5), complete=False)
    drop(data, "later", resized_batch(digits, 5, 5), complete=False)

    assert run(data) == 0
    meta, _ = published(data)
    assert meta["batches"] == [] and meta["incomplete"] == ["late", "later"]
    assert meta["data_version"] == without == meta["base"]["data_version"]  # no batch: today's data version
    err = capsys.readouterr().err
    assert "incomplete batch(es) ignored (no _SUCCESS yet): late, later" in err


# case -> (file written into a batch of good images, its content: "digit" a good image, "cut" a truncated one),
# the path the error line names (inside the batch), and what it says.
BAD_BATCHES: dict[str, tuple[str, bytes | str, str, str]] = {
    "label folder 10": ("10/x.png", "digit", "10", "not a label folder 0..9"),
    "label folder name": ("seven/x.png", "digit", "seven", "not a label folder 0..9"),
    "a file beside the labels": ("notes.txt", b"hello", "notes.txt", "not a label folder 0..9"),
    "a .gif": ("3/x.gif", b"GIF89a", "3/x.gif", "not a .png, .jpg or .jpeg file"),
    "a folder in a label folder": ("3/sub/x.png", "digit", "3/sub", "not a .png, .jpg or .jpeg file"),
    "an undecodable png": ("3/broken.png", b"\x89PNG\r\n\x1a\n garbage", "3/broken.png", "not a PNG or JPEG image"),
    "a truncated png": ("3/cut.png", "cut", "3/cut.png", "corrupt PNG image"),
}


@pytest.mark.parametrize("case", BAD_BATCHES)
def test_bad_input_batch_exits_3_with_one_line_naming_the_file(tmp_path, digits, capsys, case):
    data = tmp_path / "data"
    rel, content, named, reason = BAD_BATCHES[case]
    good_image = png(digits.images[9], size=40)
    data_bytes = content if isinstance(content, bytes) else good_image if content == "digit" else good_image[:60]
    folder = drop(data, "b1", {**resized_batch(digits, 0, 3), rel: data_bytes})

    assert run(data) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert line.startswith(f"preprocess: error: {folder / named}: ") and reason in line, line
    assert nothing_published(data)
    assert not list(data.glob("raw/incoming/*/manifest.json"))  # nothing cached for a batch that stopped the run


def test_bad_input_empty_batch(tmp_path, capsys):
    data = tmp_path / "data"
    folder = drop(data, "empty", {})
    (folder / "4").mkdir()
    assert run(data) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert line.startswith(f"preprocess: error: {folder}: an empty batch"), line
    assert nothing_published(data)


def test_bad_input_symlink_out_of_the_data_volume(tmp_path, digits, capsys):
    data = tmp_path / "data"
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png(digits.images[0], size=40))
    folder = drop(data, "b1", resized_batch(digits, 0, 2))
    os.symlink(outside, folder / "0" / "link.png")
    assert run(data) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert line.startswith(f"preprocess: error: {folder / '0/link.png'}: leads out of its volume"), line
    assert nothing_published(data)


def test_a_symlink_inside_the_data_volume_is_followed(tmp_path, digits):
    data = tmp_path / "data"
    folder = drop(data, "b1", resized_batch(digits, 0, 2))
    inside = data / "kept.png"
    inside.write_bytes(png(digits.images[7], size=44))
    os.symlink(inside, folder / f"{int(digits.labels[7])}" / "link.png")
    assert run(data, "--quiet") == 0
    assert published(data)[0]["batches"][0]["images"] == 3


def test_skip_bad_files_logs_and_leaves_the_file_out(tmp_path, digits, capsys):
    data = tmp_path / "data"
    folder = drop(data, "b1", {**resized_batch(digits, 0, 4), "5/broken.jpg": b"not a jpeg"})

    assert run(data, "--skip-bad-files") == 0
    meta, _ = published(data)
    assert meta["batches"][0]["images"] == 4 and meta["batches"][0]["skipped"] == 1
    assert f"incoming: skipped {folder / '5/broken.jpg'}: not a PNG or JPEG image" in capsys.readouterr().err

    # The cache remembers the bad file: without the option the same batch still fails, naming it.
    assert run(data) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert line.startswith(f"preprocess: error: {folder / '5/broken.jpg'}: not a PNG or JPEG image"), line


def test_a_cached_batch_is_not_decoded_again(tmp_path, digits, capsys, monkeypatch):
    data = tmp_path / "data"
    folder = drop(data, "b1", resized_batch(digits, 0, 8))
    calls = []
    real = digits_module.decode_image

    def counted(data: bytes, *args: int) -> np.ndarray:  # the real conversion, counted
        calls.append(1)
        return real(data, *args)

    monkeypatch.setattr(digits_module, "decode_image", counted)

    assert run(data) == 0
    assert len(calls) == 8 and "batch b1: 8 images (decoded)" in capsys.readouterr().err
    first = published(data)
    (cache,) = (data / "raw/incoming").iterdir()
    assert json.loads((cache / "manifest.json").read_text())["kind"] == "incoming-batch"

    assert run(data) == 0
    assert len(calls) == 8 and "batch b1: 8 images (cached)" in capsys.readouterr().err
    again = published(data)
    assert again[0]["data_version"] == first[0]["data_version"]
    assert np.array_equal(again[1]["train"].images, first[1]["train"].images)

    # A changed file is a new batch content: decoded again (all of it), under a new key.
    (folder / f"{int(digits.labels[0])}/d0.png").write_bytes(png(digits.images[0], size=36))
    assert run(data, "--quiet") == 0
    assert len(calls) == 16 and len(list((data / "raw/incoming").iterdir())) == 2
    assert published(data)[0]["data_version"] != first[0]["data_version"]


def test_a_damaged_cache_entry_is_decoded_again(tmp_path, digits, capsys):
    data = tmp_path / "data"
    drop(data, "b1", resized_batch(digits, 0, 6))
    assert run(data, "--quiet") == 0
    first = published(data)[1]
    (cache,) = (data / "raw/incoming").iterdir()
    (cache / "images.npy").write_bytes(b"damaged")

    assert run(data) == 0
    err = capsys.readouterr().err
    assert "incoming: cache of batch b1 unusable, decoding again" in err and "6 images (decoded)" in err
    assert np.array_equal(published(data)[1]["test"].images, first["test"].images)
    assert run(data) == 0 and "6 images (cached)" in capsys.readouterr().err  # replaced by a good one


def test_mixed_modes_sizes_and_formats_are_converted_as_the_handler_does(tmp_path, digits):
    data = tmp_path / "data"
    files = {
        "0/rgb-paper.png": png(digits.images[10], "RGB", 64),
        "1/rgba-transparent.png": png(digits.images[11], "RGBA", 30),
        "2/sixteen-bit.png": png(digits.images[12], "I;16", 56),
        "3/photo.JPG": png(digits.images[13], "L", 120, fmt="JPEG"),
        "4/rgb.jpeg": png(digits.images[14], "RGB", 33, fmt="JPEG"),
        "5/palette.PNG": png(digits.images[15], "P", 29),
        "6/small.png": png(digits.images[16], "L", 14),
    }
    drop(data, "mixed", files)
    assert run(data, "--quiet") == 0
    meta, splits = published(data)
    assert meta["batches"][0]["images"] == 7 and meta["batches"][0]["duplicates"] == 0
    everything = np.concatenate([splits["train"].images, splits["test"].images])
    labels = np.concatenate([splits["train"].labels, splits["test"].labels])
    found = {hashlib.sha256(im.tobytes()).digest(): int(lb) for im, lb in zip(everything, labels, strict=True)}
    for rel, image in zip(files, decoded(files), strict=True):
        assert found[hashlib.sha256(image.tobytes()).digest()] == int(rel[0]), rel


# -- skip when nothing changed --------------------------------------------------------------------


def make_champion(deploy_root: Path, version: str, data_version: str, versions: dict[str, str]) -> None:
    """A live champion as deploy leaves it: history/<v>/ (kind deployment: mnist.mar, deployment.json), and its
    archive copied to model-store/mnist.mar."""
    record = {"version": version, "run_id": version, "accuracy": 0.95, "data_version": data_version}
    record["versions"] = versions
    publish_deployment(deploy_root, record)


@pytest.fixture
def champion_of_this_data(tmp_path, digits) -> Path:
    """A data volume with one batch and a deploy volume whose champion was trained on exactly that data."""
    data = tmp_path / "data"
    drop(data, "b1", resized_batch(digits, 0, 10))
    assert run(data, "--quiet", "--only-if-changed", "false") == 0
    make_champion(tmp_path / "deploy", "v1", published(data)[0]["data_version"], VERSIONS)
    return data


def proceeds(data: Path, capsys, *args: str) -> tuple[str, str]:
    out = data.parent / "out" / "proceed"
    assert run(data, "--proceed-out", str(out), *args) == 0
    log = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[preprocess] proceed: ")]
    assert len(log) == 1 and (data / "runs/r1/dataset/manifest.json").is_file()  # published either way
    return out.read_text(), log[0]


def test_same_data_and_step_versions_as_the_champion_skip(champion_of_this_data, capsys, monkeypatch):
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(VERSIONS))
    output_file = champion_of_this_data.parent / "kfp/output_metadata.json"
    value, line = proceeds(champion_of_this_data, capsys, "--executor-input", executor_input(output_file, ARTIFACTS))
    assert value == "false"
    assert "equal the champion mnist version v1's: nothing to retrain" in line
    metadata = read_executor_output(output_file)["dataset"]
    assert metadata["proceed"] is False and metadata["batches"] == 1


def test_a_new_step_version_proceeds(champion_of_this_data, capsys, monkeypatch):
    monkeypatch.setenv(VERSIONS_ENV, json.dumps({**VERSIONS, "train_model": "0.3.1"}))
    value, line = proceeds(champion_of_this_data, capsys)
    assert value == "true" and "new step versions: train_model 0.3.0 -> 0.3.1" in line


def test_unknown_step_versions_proceed(champion_of_this_data, capsys, monkeypatch):
    monkeypatch.delenv(VERSIONS_ENV, raising=False)
    value, line = proceeds(champion_of_this_data, capsys)
    assert value == "true" and "MNIST_CT_STEP_VERSIONS unset" in line


def test_only_if_changed_false_proceeds(champion_of_this_data, capsys, monkeypatch):
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(VERSIONS))
    value, line = proceeds(champion_of_this_data, capsys, "--only-if-changed", "false")
    assert value == "true" and "--only-if-changed false" in line


def test_a_new_batch_proceeds(champion_of_this_data, digits, capsys, monkeypatch):
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(VERSIONS))
    drop(champion_of_this_data, "b2", resized_batch(digits, 20, 5))
    value, line = proceeds(champion_of_this_data, capsys)
    assert value == "true" and "differs from the champion mnist version v1's" in line


def test_no_champion_proceeds(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(VERSIONS))
    value, line = proceeds(tmp_path / "data", capsys)
    assert value == "true" and "no champion" in line


def test_another_model_name_has_no_champion(champion_of_this_data, capsys, monkeypatch):
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(VERSIONS))
    value, line = proceeds(champion_of_this_data, capsys, "--model-name", "digits2")
    assert value == "true" and "no champion" in line


def test_bad_input_a_live_archive_history_lacks_exits_3(champion_of_this_data, capsys):
    history = champion_of_this_data.parent / "deploy/history/v1"
    (history / "manifest.json").unlink()
    assert run(champion_of_this_data, "--proceed-out", str(champion_of_this_data.parent / "p")) == 3
    assert "v1" in error_line(capsys.readouterr().err, 3)
    assert not (champion_of_this_data.parent / "p").exists()


def test_only_if_changed_false_does_not_read_the_champion(champion_of_this_data, capsys):
    (champion_of_this_data.parent / "deploy/model-store/mnist.mar").write_bytes(b"not a zip")
    assert run(champion_of_this_data, "--quiet", "--only-if-changed", "false") == 0
    assert run(champion_of_this_data, "--quiet") == 3
    assert "the live archive is unreadable" in error_line(capsys.readouterr().err, 3)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--only-if-changed", "yes"], "argument --only-if-changed: 'yes': expected true or false"),
        (["--model-name", "../x"], "argument --model-name: invalid model name"),
        (["--proceed-out", "."], "argument --proceed-out: "),
    ],
)
def test_bad_usage_of_the_new_options_exits_2(tmp_path, capsys, args, problem):
    assert run(tmp_path / "data", *args) == 2
    assert problem in error_line(capsys.readouterr().err, 2)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("where", ["batch", "file"])
def test_bad_input_a_name_with_a_newline_is_one_error_line(tmp_path, digits, capsys, where):
    data = tmp_path / "data"
    files = resized_batch(digits, 0, 2)
    if where == "file":
        files["3/two\nlines.png"] = png(digits.images[3], size=40)
    drop(data, "b\n1" if where == "batch" else "b1", files)
    assert run(data) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert "a name with a control character" in line and "\\n" in line, line
    assert nothing_published(data)


def test_a_cache_entry_of_another_batch_is_decoded_again(tmp_path, digits, capsys):
    # Its checksums hold (it is a whole entry, copied): only its record says it holds other digits.
    data = tmp_path / "data"
    drop(data, "b1", resized_batch(digits, 0, 4))
    assert run(data, "--quiet") == 0
    (b1_cache,) = (data / "raw/incoming").iterdir()
    drop(data, "b2", resized_batch(digits, 10, 4))
    assert run(data, "--quiet") == 0
    (b2_cache,) = set((data / "raw/incoming").iterdir()) - {b1_cache}
    expected = published(data)[1]
    shutil.rmtree(b2_cache)
    shutil.copytree(b1_cache, b2_cache)

    assert run(data) == 0
    err = capsys.readouterr().err
    assert "incoming: cache of batch b2 unusable, decoding again" in err and "not of batch b2" in err, err
    got = published(data)[1]
    assert all(np.array_equal(got[name].images, expected[name].images) for name in ("train", "test"))


def test_bad_input_success_marker_that_is_a_folder(tmp_path, digits, capsys):
    data = tmp_path / "data"
    folder = drop(data, "b1", resized_batch(digits, 0, 2), complete=False)
    (folder / "_SUCCESS").mkdir()
    assert run(data) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert line.startswith(f"preprocess: error: {folder / '_SUCCESS'}: not a file"), line
    assert nothing_published(data)


def test_a_duplicate_with_another_label_is_counted_and_logged(tmp_path, digits, capsys):
    data = tmp_path / "data"
    label = int(digits.labels[1])
    image = png(digits.images[1], size=50)
    drop(data, "a", {f"{label}/one.png": image})
    drop(data, "b", {f"{(label + 1) % 10}/same-pixels.png": image, **resized_batch(digits, 2, 1)})
    assert run(data) == 0
    err = capsys.readouterr().err
    a, b = published(data)[0]["batches"]
    assert (a["label_conflicts"], b["duplicates"], b["label_conflicts"]) == (0, 1, 1)
    assert "incoming: batch b: 1 of its duplicates carry another label" in err, err
    pixels = decoded({"x": image})[0]
    kept = [
        int(lb)
        for split in published(data)[1].values()
        for im, lb in zip(split.images, split.labels, strict=True)
        if np.array_equal(im, pixels)
    ]
    assert kept == [label]  # the first one is kept, once
