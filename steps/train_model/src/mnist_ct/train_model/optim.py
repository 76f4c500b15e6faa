"""AdamW on torch's foreach ops.

torch.optim's optimizers import torch._dynamo when they are built (about 1.5 s on two quiet cores, more than
the rest of train_model's start-up), only to keep the compiler out of their own code. This is the same update
rule as torch.optim.AdamW (foreach path, no amsgrad), which a test checks step by step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn


class AdamW:
    """Adam with decoupled weight decay; `param_groups[i]["lr"]` may be changed between steps."""

    def __init__(
        self,
        groups: Sequence[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.param_groups: list[dict[str, Any]] = [
            {"params": list(g["params"]), "weight_decay": float(g.get("weight_decay", 0.0)), "lr": lr} for g in groups
        ]
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.exp_avg = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]
        self.exp_avg_sq = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]

    @staticmethod
    def parameters_of(groups: Iterable[dict[str, Any]]) -> list[nn.Parameter]:
        return [p for g in groups for p in g["params"]]

    def zero_grad(self) -> None:
        for p in self.parameters_of(self.param_groups):
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        bias1 = 1 - beta1**self.steps
        bias2_sqrt = math.sqrt(1 - beta2**self.steps)
        for group, exp_avg, exp_avg_sq in zip(self.param_groups, self.exp_avg, self.exp_avg_sq, strict=True):
            live = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not live:
                continue
            params = [group["params"][i] for i in live]
            grads = [p.grad for p in params if p.grad is not None]
            m = [exp_avg[i] for i in live]
            v = [exp_avg_sq[i] for i in live]
            lr = group["lr"]
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, bias2_sqrt)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, m, denom, -lr / bias1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": [g["lr"] for g in self.param_groups],
            "exp_avg": [[t.detach().cpu().clone() for t in ts] for ts in self.exp_avg],
            "exp_avg_sq": [[t.detach().cpu().clone() for t in ts] for ts in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); one that does not fit these parameters raises ValueError (nothing changed)."""
        steps, lrs = state["steps"], state["lr"]
        if not isinstance(steps, int) or steps < 0 or len(lrs) != len(self.param_groups):
            raise ValueError("optimizer state does not match: step count or parameter groups")
        loaded = []
        for key in ("exp_avg", "exp_avg_sq"):
            groups = state[key]
            if len(groups) != len(self.param_groups):
                raise ValueError(f"optimizer state {key}: {len(groups)} parameter groups, not {len(self.param_groups)}")
            for saved, group in zip(groups, self.param_groups, strict=True):
                if [tuple(t.shape) for t in saved] != [tuple(p.shape) for p in group["params"]]:
                    raise ValueError(f"optimizer state {key}: tensor shapes do not match the model's parameters")
            loaded.append(
                [
                    [t.to(device=p.device, dtype=p.dtype) for t, p in zip(saved, g["params"], strict=True)]
                    for saved, g in zip(groups, self.param_groups, strict=True)
                ]
            )
        self.exp_avg, self.exp_avg_sq = loaded
        self.steps = steps
        for group, lr in zip(self.param_groups, lrs, strict=True):
            group["lr"] = float(lr)
