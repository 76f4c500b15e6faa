"""The folders the step reads and writes: symlinks out of the volume, a full or read-only disk."""

import os
import subprocess

from step_runs import error_line, refused, run
from tiny_datasets import write_good


def fill(volume):
    """Write until the volume is full (a real ENOSPC for the next writer)."""
    with open(volume / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_bad_input_validation_folder_is_a_symlink_out_of_the_volume(tmp_path, capsys):
    root = tmp_path / "data"
    write_good(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "runs/r1/validation").symlink_to(elsewhere)
    assert run(root) == 3
    line = error_line(capsys.readouterr().err, 3)
    assert line.startswith(f"validate: error: {root / 'runs/r1/validation'}: leads out of its volume")
    assert os.listdir(elsewhere) == [] and (root / "runs/r1/validation").is_symlink()
    assert sorted(os.listdir(root / "runs/r1")) == ["dataset", "validation"]  # no staging beside them


def test_bad_input_data_set_is_a_symlink_out_of_the_volume(tmp_path, capsys):
    outside = write_good(tmp_path / "outside")
    root = tmp_path / "data"
    (root / "runs/r1").mkdir(parents=True)
    (root / "runs/r1/dataset").symlink_to(outside)
    line = refused(root, capsys, 3)
    assert line.startswith(f"validate: error: {root / 'runs/r1/dataset'}: leads out of its volume")


def test_bad_input_full_disk_while_writing_the_report(tmp_path, capsys, tmpfs):
    root = tmpfs(tmp_path / "data", size="1m")
    write_good(root)  # 250 digits, about 200 KB
    fill(root)
    line = refused(root, capsys, 5)
    assert line.startswith(f"validate: error: {root / 'runs/r1/validation'}: No space left on device")
    assert "the disk is full" in line


def test_bad_input_read_only_data_volume(tmp_path, capsys, tmpfs):
    root = tmpfs(tmp_path / "data", size="1m")
    write_good(root)
    subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    line = refused(root, capsys, 5)
    assert line.startswith(f"validate: error: {root / 'runs/r1'}") and "Read-only file system" in line
    assert "mounted read-only" in line


def test_a_good_data_set_on_a_volume_with_room_passes(tmp_path, tmpfs):
    root = tmpfs(tmp_path / "data", size="1m")
    write_good(root)
    assert run(root) == 0
