"""The ArcFace head, the augmentation, the schedule and the TorchScript export."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_ct.train_model.augment import Augmentation, random_affine
from mnist_ct.train_model.hardware import resolve_precision
from mnist_ct.train_model.model import (
    ArcFace,
    Architecture,
    EmbeddingNet,
    export_torchscript,
    forward_flops,
    training_flops,
)
from mnist_ct.train_model.training import EpochMetrics, Trainer, holdout_split, lr_at


def test_arcface_adds_the_margin_to_the_target_class_only():
    head = ArcFace(4, num_classes=3, scale=10.0, margin=0.5)
    emb = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = head(emb, labels)
    cos = head.cosine(emb)
    target = F.one_hot(labels, 3).bool()
    assert torch.allclose(logits[~target], 10 * cos[~target])
    theta = torch.acos(cos[target].clamp(-1, 1))
    expected = torch.where(theta + 0.5 < math.pi, torch.cos(theta + 0.5), cos[target] - math.sin(math.pi - 0.5) * 0.5)
    assert torch.allclose(logits[target], 10 * expected, atol=1e-4)
    assert (logits[target] < 10 * cos[target]).all()  # the margin makes the target harder


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_arcface_gradients_are_finite_at_cos_plus_minus_one(sign):
    head = ArcFace(3, num_classes=3, scale=32.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    emb = (sign * torch.eye(3)).requires_grad_()
    loss = F.cross_entropy(head(emb, torch.arange(3)), torch.arange(3))
    loss.backward()
    assert torch.allclose(head.cosine(emb).diagonal(), torch.full((3,), sign))
    assert emb.grad is not None and head.weight.grad is not None
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    assert torch.isfinite(loss)


def test_augmentation_keeps_shape_and_range_and_moves_pixels():
    x = torch.rand(64, 1, 28, 28)
    out = random_affine(x, Augmentation(3, 15, 0.2), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().mean() > 0.05


def test_augmentation_is_reproducible_from_the_generator_and_off_when_zero():
    x = torch.rand(8, 1, 28, 28)
    a = random_affine(x, Augmentation(), torch.Generator().manual_seed(3))
    b = random_affine(x, Augmentation(), torch.Generator().manual_seed(3))
    c = random_affine(x, Augmentation(), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert random_affine(x, Augmentation(0, 0, 0), torch.Generator()) is x


def test_identity_warp_is_exact():
    x = torch.rand(4, 1, 28, 28)
    out = random_affine(x, Augmentation(1e-9, 1e-9, 1e-9), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)


def _trained_looking_net(arch: Architecture) -> EmbeddingNet:
    torch.manual_seed(0)
    net = EmbeddingNet(arch)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so freezing them into the convs matters
        for _ in range(3):
            net(torch.rand(32, 1, 28, 28))
    return net.eval()


@pytest.mark.parametrize("arch", [Architecture(), Architecture(widths=(8, 16, 16), blocks=(1, 2, 1), embedding_dim=32)])
def test_torchscript_export_round_trips_and_matches_eager(arch):
    net = _trained_looking_net(arch)
    data = export_torchscript(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(io.BytesIO(data))
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        eager = F.normalize(net(x), dim=1)
        scripted = loaded(x)
    assert scripted.dtype == torch.float32 and scripted.shape == (5, arch.embedding_dim)
    assert torch.allclose(scripted, eager, atol=1e-5)
    assert torch.allclose(scripted.norm(dim=1), torch.ones(5), atol=1e-5)
    assert loaded(x[:1]).shape == (1, arch.embedding_dim)  # one image at a time works (serving)


def test_export_leaves_the_training_net_untouched():
    net = _trained_looking_net(Architecture(widths=(8, 8, 8)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_torchscript(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_forward_flops_counts_convs_and_linears():
    net = EmbeddingNet(Architecture(widths=(2, 3, 4), blocks=(1, 1, 1), embedding_dim=5))
    expected = 2 * (1 * 9 * 2 * 28 * 28 + 2 * 9 * 3 * 14 * 14 + 3 * 9 * 4 * 7 * 7 + 4 * 49 * 5)
    assert forward_flops(net) == expected


def test_training_flops_are_what_torchs_flop_counter_counts_in_a_real_training_step():
    from torch.utils.flop_counter import FlopCounterMode

    net = EmbeddingNet(Architecture(widths=(2, 3, 4), blocks=(2, 1, 1), embedding_dim=5))
    head = ArcFace(5)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(head(net(x), y), y).backward()
    assert counter.get_total_flops() == 3 * training_flops(net, 5)


def test_one_cycle_schedule_warms_up_peaks_and_anneals():
    total, peak = 1000, 1e-2
    lrs = [lr_at(s, total, peak, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / 25)
    assert max(lrs) == pytest.approx(peak) and int(np.argmax(lrs)) == 100
    assert lrs[-1] < peak / 100
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))


def test_holdout_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    train, val = holdout_split(labels, 0.1, seed=1)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 500
    assert np.bincount(labels[val]).tolist() == [5] * 10
    again, _ = holdout_split(labels, 0.1, seed=1)
    other, _ = holdout_split(labels, 0.1, seed=2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    all_train, none = holdout_split(labels, 0.0, seed=1)
    assert len(all_train) == 500 and len(none) == 0


def test_precision_auto_resolves_to_fp32_or_bf16_and_explicit_choices_stay():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def _history(scores: list[float]) -> list[EpochMetrics]:
    return [EpochMetrics(i + 1, 0.0, 0.0, 0.0, 0.0, s, 0.0, 0.0, 0.0) for i, s in enumerate(scores)]


def test_best_epoch_is_the_last_unless_an_earlier_one_is_measurably_better():
    # 3000 validation images at ~93%: two standard errors are about 0.9 points.
    assert Trainer.best_epoch(_history([0.90, 0.935, 0.93, 0.929]), val_size=3000) == 4
    assert Trainer.best_epoch(_history([0.90, 0.95, 0.93, 0.92]), val_size=3000) == 2
    assert Trainer.best_epoch(_history([0.5, 0.9, 0.7]), val_size=0) == 2  # no size given: strict maximum
    assert Trainer.best_epoch(_history([float("nan")] * 3), val_size=0) == 3  # no validation: the last
