"""Our foreach AdamW against torch.optim.AdamW, and its state round trip."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from mnist_ct.train_model.optim import AdamW


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))


def _groups(model: nn.Module, wd: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim == 1]
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def _train(model: nn.Module, opt, steps: int = 12) -> None:
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        x = torch.randn(8, 1, 28, 28, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        for group in opt.param_groups:
            group["lr"] = 1e-3 * (1 + i % 3)  # the schedule changes lr between steps
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_the_update_is_torch_adamw_step_for_step():
    ours, theirs = _model(), _model()
    _train(ours, AdamW(_groups(ours, 5e-4), lr=1e-3, betas=(0.9, 0.99)))
    _train(theirs, torch.optim.AdamW(_groups(theirs, 5e-4), lr=1e-3, betas=(0.9, 0.99), foreach=True))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_state_round_trip_continues_the_same_run():
    straight, resumed = _model(), _model()
    opt = AdamW(_groups(straight, 1e-2), lr=1e-3)
    _train(straight, opt, steps=6)
    resumed.load_state_dict(straight.state_dict())
    again = AdamW(_groups(resumed, 1e-2), lr=5.0)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["lr"] == opt.param_groups[0]["lr"] and again.steps == 6
    _train(straight, opt, steps=4)
    _train(resumed, again, steps=4)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("how", ["shapes", "groups", "steps"])
def test_a_state_that_does_not_fit_raises_value_error_and_changes_nothing(how):
    model = _model()
    opt = AdamW(_groups(model, 0.0), lr=1e-3)
    _train(model, opt, steps=2)
    state = opt.state_dict()
    if how == "shapes":
        state["exp_avg"][0][0] = torch.zeros(2)
    elif how == "groups":
        state["exp_avg_sq"] = state["exp_avg_sq"][:1]
    else:
        state["steps"] = -1
    before = [t.clone() for t in opt.exp_avg[0]]
    with pytest.raises(ValueError):
        opt.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(before, opt.exp_avg[0], strict=True)) and opt.steps == 2


def test_a_parameter_without_a_gradient_is_left_alone():
    model = _model()
    last = model[3]
    assert isinstance(last, nn.Linear)
    frozen = last.bias
    opt = AdamW(_groups(model, 0.1), lr=1e-2)
    before = frozen.detach().clone()
    frozen.requires_grad_(False)
    _train(model, opt, steps=3)
    assert torch.equal(frozen, before)


def test_training_and_export_never_import_the_compiler(tmp_path):
    """Why it exists: torch.optim's optimizers import torch._dynamo (seconds of start-up), so does nothing else here."""
    code = f"""
import sys, numpy as np, torch
from pathlib import Path
from mnist_ct.train_model.training import TrainConfig, Trainer
from mnist_ct.train_model.model import export_torchscript
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 255, (64, 28, 28), dtype=np.uint8), np.arange(64) % 10
config = TrainConfig(epochs=1, batch_size=16, widths=(4, 4, 4))
result = Trainer(config, torch.device("cpu"), Path({str(tmp_path)!r}), "x").fit(images, labels)
export_torchscript(result.net)
print(sorted(m for m in sys.modules if m.startswith("torch._dynamo")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
