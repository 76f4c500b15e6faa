"""What --resume says when the options differ from the checkpoint's."""

from __future__ import annotations

from dataclasses import replace

from mnist_ct.train_model.augment import Augmentation
from mnist_ct.train_model.checkpoints import option_changes
from mnist_ct.train_model.training import TrainConfig


def test_the_same_options_have_no_changes():
    assert option_changes(TrainConfig().to_json(), TrainConfig().to_json()) == []


def test_each_changed_option_is_named_with_both_values():
    saved = TrainConfig().to_json()
    now = replace(TrainConfig(), lr=0.01, blocks=(2, 2, 2)).to_json()
    assert option_changes(saved, now) == ["--blocks 2,2,2 (checkpoint: 1,1,1)", "--lr 0.01 (checkpoint: 0.003)"]


def test_augmentation_ranges_set_in_code_are_named_as_ranges():
    saved = TrainConfig().to_json()
    now = replace(TrainConfig(), augmentation=Augmentation(max_shift=3.0)).to_json()
    assert option_changes(saved, now) == ["augmentation 3.0,10.0,0.1 (checkpoint: 2.0,10.0,0.1)"]


def test_a_checkpoint_from_an_older_version_names_the_fields_it_lacks():
    saved = {k: v for k, v in TrainConfig().to_json().items() if k != "precision"}
    assert option_changes(saved, TrainConfig().to_json()) == ["--precision fp32 (checkpoint: unset)"]
