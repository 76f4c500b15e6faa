"""What --resume says when the options differ from the checkpoint's; checkpoints written in the background."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mnist_ct.train_model.augment import Augmentation
from mnist_ct.train_model.checkpoints import (
    STATE_FILE,
    BackgroundWriter,
    epoch_checkpoint,
    load_checkpoint,
    option_changes,
)
from mnist_ct.train_model.training import TrainConfig


def test_the_same_options_have_no_changes():
    assert option_changes(TrainConfig().to_json(), TrainConfig().to_json()) == []


def test_each_changed_option_is_named_with_both_values():
    saved = TrainConfig().to_json()
    now = replace(TrainConfig(), lr=0.01, blocks=(2, 2, 2)).to_json()
    assert option_changes(saved, now) == ["--blocks 2,2,2 (checkpoint: 1,1,1)", "--lr 0.01 (checkpoint: 0.006)"]


def test_augmentation_ranges_set_in_code_are_named_as_ranges():
    saved = TrainConfig().to_json()
    now = replace(TrainConfig(), augmentation=Augmentation(max_shift=3.0)).to_json()
    assert option_changes(saved, now) == ["augmentation 3.0,10.0,0.1 (checkpoint: 2.0,10.0,0.1)"]


def test_a_checkpoint_from_an_older_version_names_the_fields_it_lacks():
    saved = {k: v for k, v in TrainConfig().to_json().items() if k != "precision"}
    assert option_changes(saved, TrainConfig().to_json()) == ["--precision fp32 (checkpoint: unset)"]


def test_the_background_writer_writes_in_order_and_close_waits(tmp_path: Path):
    writer = BackgroundWriter()
    for epoch in range(1, 6):
        writer.submit(epoch_checkpoint(tmp_path, epoch), {"epoch": epoch, "w": torch.full((1000,), float(epoch))})
        writer.submit(tmp_path / STATE_FILE, {"epoch": epoch})
    writer.close()
    assert load_checkpoint(tmp_path / STATE_FILE) == {"epoch": 5}
    assert [int(load_checkpoint(epoch_checkpoint(tmp_path, e))["w"][0]) for e in range(1, 6)] == [1, 2, 3, 4, 5]
    assert not list(tmp_path.glob(".*tmp-*"))


def test_a_failed_background_write_is_raised_by_the_next_submit_or_by_close(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    writer = BackgroundWriter()
    writer.submit(blocker / "epoch-001.pt", {"epoch": 1})  # its folder is a file: the write fails
    with pytest.raises(OSError):
        for _ in range(200):  # the failure reaches this thread by the next submit once the write ran
            writer.submit(tmp_path / STATE_FILE, {"epoch": 1})
            time.sleep(0.01)
        writer.close()
    assert not (tmp_path / STATE_FILE).exists(), "nothing after the failed write was written"
    writer.close()  # the error was raised once; closing again is quiet
