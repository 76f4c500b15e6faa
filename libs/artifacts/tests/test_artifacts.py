import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mnist_ct.artifacts import (
    ArtifactError,
    Embeddings,
    Producer,
    RunPaths,
    Split,
    UsageError,
    check_embeddings,
    pixel_stats,
    publish,
    read_dataset,
    read_embeddings,
    read_manifest,
    read_split,
    read_verified,
    thread_count,
    write_dataset,
    write_embeddings,
)

PRODUCER = Producer("preprocess", "0.1.0")


def make_split(n: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10)


def test_run_paths_are_scoped_by_run_id(tmp_path):
    p = RunPaths("r1", tmp_path / "d", tmp_path / "m", tmp_path / "x")
    assert p.dataset == tmp_path / "d/runs/r1/dataset"
    assert p.index == tmp_path / "m/runs/r1/index"
    assert p.model_store == tmp_path / "x/model-store"


@pytest.mark.parametrize("bad", ["", "../up", "a/b", "-x", "a..b", "x" * 129])
def test_unsafe_run_ids_are_refused(bad):
    with pytest.raises(UsageError, match="invalid run id"):
        RunPaths(bad)


def test_dataset_round_trip_with_counts(tmp_path):
    train, test = make_split(50), make_split(20, 1)
    m = write_dataset(tmp_path / "ds", {"train": train, "test": test}, PRODUCER, {"dataset": "t"})
    assert m.meta["counts"]["train"] == {str(c): 5 for c in range(10)}
    assert (tmp_path / "ds/manifest.json").is_file()
    m2, splits = read_dataset(tmp_path / "ds")
    assert m2.digest == m.digest and m2.producer == PRODUCER
    np.testing.assert_array_equal(splits["train"].images, train.images)
    np.testing.assert_array_equal(splits["test"].labels, test.labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_changed_byte_is_refused_naming_the_file(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {})
    f = tmp_path / "ds/train/images.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"train/images.npy: sha256 .* does not match"):
        read_split(tmp_path / "ds", "train")


def test_truncated_file_is_refused(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {})
    f = tmp_path / "ds/train/labels.npy"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match="labels.npy: size"):
        read_verified(tmp_path / "ds")


def test_missing_manifest_means_incomplete(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(ArtifactError, match="manifest missing"):
        read_dataset(tmp_path / "ds")


def test_wrong_kind_is_refused(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {})
    with pytest.raises(ArtifactError, match="kind is 'dataset', expected 'index'"):
        read_manifest(tmp_path / "ds", "index")


def test_bad_split_is_refused_before_publishing(tmp_path):
    bad = Split(np.zeros((3, 28, 28), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ArtifactError, match="uint8"):
        write_dataset(tmp_path / "ds", {"train": bad}, PRODUCER, {})
    labels = Split(np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 10]))
    with pytest.raises(ArtifactError, match="0..9"):
        write_dataset(tmp_path / "ds", {"train": labels}, PRODUCER, {})
    assert not (tmp_path / "ds").exists()


def test_exception_inside_publish_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with publish(tmp_path / "a", "x", PRODUCER) as s:
            (s.path / "f.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_republish_replaces_the_old_artifact(tmp_path):
    for payload in (b"one", b"two"):
        with publish(tmp_path / "a", "x", PRODUCER) as s:
            (s.path / "f.bin").write_bytes(payload)
    assert (tmp_path / "a/f.bin").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_killed_mid_write_leaves_no_manifest_and_reader_refuses(tmp_path):
    # A real SIGKILL in the middle of a publish: no finished folder may appear.
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from mnist_ct.artifacts import Producer, publish
        with publish({str(tmp_path / "ds")!r}, "dataset", Producer("preprocess", "0")) as s:
            (s.path / "train").mkdir()
            np.save(s.path / "train" / "images.npy", np.zeros((100, 28, 28), np.uint8))
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "ds").exists()
    staged = [p for p in tmp_path.iterdir() if p.name.startswith(".ds.staging-")]
    assert len(staged) == 1 and not (staged[0] / "manifest.json").exists()
    with pytest.raises(ArtifactError, match="not found"):
        read_dataset(tmp_path / "ds")
    # A reader pointed at the partial folder itself refuses it too.
    with pytest.raises(ArtifactError, match="manifest missing"):
        read_dataset(staged[0])


def test_manifest_json_is_readable_and_sorted(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {"dataset": "t"})
    doc = json.loads((tmp_path / "ds/manifest.json").read_text())
    assert doc["schema"] == "mnist-ct/artifact/v1"
    assert list(doc["files"]) == sorted(doc["files"])
    assert doc["producer"] == {"step": "preprocess", "version": "0.1.0"}
    assert os.path.getsize(tmp_path / "ds/train/images.npy") == doc["files"]["train/images.npy"]["bytes"]


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embeddings_round_trip(tmp_path):
    e = Embeddings(unit_rows(20), np.arange(20) % 10)
    m = write_embeddings(
        tmp_path / "emb", {"train": e, "test": e}, Producer("embedding", "0.1.0"), {"model": "abc"}, {}
    )
    assert m.meta["dim"] == 8 and m.inputs == {"model": "abc"}
    _, splits = read_embeddings(tmp_path / "emb", mmap=True)
    np.testing.assert_array_equal(splits["test"].vectors, e.vectors)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.full((4, 8), np.nan, np.float32), "NaN"),
        (unit_rows(4) * 2, "not L2-normalised"),
        (unit_rows(4).astype(np.float64), "float32"),
    ],
)
def test_bad_embeddings_are_refused(tmp_path, vectors, message):
    with pytest.raises(ArtifactError, match=message):
        write_embeddings(tmp_path / "e", {"train": Embeddings(vectors, np.zeros(4, np.int64))}, PRODUCER, {}, {})
    assert not (tmp_path / "e").exists()


def test_embedding_and_label_count_mismatch_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="4 embeddings but 3 labels"):
        check_embeddings("train", Embeddings(unit_rows(4), np.zeros(3, np.int64)))


def test_pixel_stats_match_numpy_on_the_unit_scale():
    images = make_split(30).images
    x = images.astype(np.float64) / 255
    got = pixel_stats(images)
    assert abs(got["mean"] - x.mean()) < 1e-6 and abs(got["std"] - x.std()) < 1e-6
    assert pixel_stats(np.array([0, 255], np.uint8)) == {"mean": 0.5, "std": 0.5}


def test_thread_count_defaults_to_the_cores_and_never_exceeds_them():
    cores = len(os.sched_getaffinity(0))
    assert thread_count(0) == cores
    assert thread_count(1) == 1
    assert thread_count(cores + 8) == cores


@pytest.mark.parametrize("rel", ["../../etc/passwd", "/etc/passwd", "train//x.npy", "manifest.json"])
def test_bad_input_a_manifest_that_lists_files_outside_its_folder_is_refused(tmp_path, rel):
    write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {"dataset": "t"})
    doc = json.loads((tmp_path / "ds/manifest.json").read_text())
    doc["files"][rel] = {"sha256": "0" * 64, "bytes": 1}
    (tmp_path / "ds/manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="the manifest lies"):
        read_manifest(tmp_path / "ds")


def test_bad_input_a_listed_file_swapped_for_a_symlink_is_refused(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {"dataset": "t"})
    images = tmp_path / "ds/train/images.npy"
    images.rename(tmp_path / "elsewhere.npy")
    images.symlink_to(tmp_path / "elsewhere.npy")  # same bytes, same sha256: still refused
    with pytest.raises(ArtifactError, match="is a symlink"):
        read_verified(tmp_path / "ds")


KILLED_WRITER = """
import sys, time
from pathlib import Path
from mnist_ct.artifacts import Producer, publish
with publish(Path(sys.argv[1]), "dataset", Producer("demo", "0")) as staging:
    (staging.path / "part").write_text("x")
    print("staged", flush=True)
    time.sleep(60)
"""


def test_a_rerun_removes_what_a_killed_writer_left_but_not_a_live_writers_staging(tmp_path):
    final = tmp_path / "runs/r/dataset"
    write_dataset(final, {"train": make_split(10)}, PRODUCER, {"dataset": "t"})
    writers = [
        subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(final)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in writers:
        assert w.stdout is not None and w.stdout.readline() == "staged\n"
    writers[0].kill()  # SIGKILL: no finally runs, its staging and lock file stay
    writers[0].wait()
    assert len(list(final.parent.glob(".dataset.staging-*"))) == 2
    write_dataset(final, {"train": make_split(12)}, PRODUCER, {"dataset": "t"})
    left = sorted(p.name for p in final.parent.iterdir() if p.name.startswith(".dataset."))
    assert len(left) == 2 and {n.split("-")[0] for n in left} == {".dataset.staging", ".dataset.lock"}
    assert left[0].rsplit("-", 1)[1] == left[1].rsplit("-", 1)[1]  # only the live writer's pair
    writers[1].kill()
    writers[1].wait()
    assert len(read_verified(final).files) == 2


def test_bad_input_a_short_write_without_a_path_is_reported_as_a_full_disk_naming_the_artifact(tmp_path):
    with pytest.raises(OSError) as e:
        with publish(tmp_path / "ds", "dataset", PRODUCER):
            raise OSError("47040 requested and 12160 written")  # what np.save raises on a full disk
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "ds")
    assert "12160 written" in str(e.value.strerror)


def test_bad_input_a_root_below_a_file_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="afile is a file, so this folder cannot exist"):
        RunPaths("r", tmp_path / "afile" / "data")


def test_bad_input_a_file_where_the_artifact_folder_belongs_is_refused_and_kept(tmp_path):
    (tmp_path / "ds").write_text("someone's notes")
    with pytest.raises(ArtifactError, match="is a file .* where the artifact folder belongs"):
        write_dataset(tmp_path / "ds", {"train": make_split(10)}, PRODUCER, {"dataset": "t"})
    assert (tmp_path / "ds").read_text() == "someone's notes"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
