"""The embedding network, the ArcFace head, and the TorchScript export (the serving contract)."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

M = TypeVar("M", bound=nn.Module)

# Mean and std of MNIST pixels in [0,1]; the exported model applies them itself (serving contract).
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081


@dataclass(frozen=True)
class Architecture:
    """A small VGG-style net: three stages of conv3x3 + BN + ReLU at 28, 14 and 7 pixels, 2x2 max-pooling
    after each of the first two stages' last convolution, then a linear layer from the 7x7 map to D."""

    widths: tuple[int, int, int] = (32, 64, 128)
    blocks: tuple[int, int, int] = (1, 1, 1)  # conv-BN-ReLU layers per stage
    embedding_dim: int = 64

    def to_json(self) -> dict[str, Any]:
        return {"name": "convnet-3stage", **asdict(self), "widths": list(self.widths), "blocks": list(self.blocks)}


def channels_last(module: M, device: torch.device | None = None) -> M:
    """`module` on `device` with its 4-D weights channels-last (twice the CPU convolution speed here)."""
    # Module.to takes memory_format at run time, but torch's type stubs do not list it.
    return cast(M, cast(Any, module).to(device, memory_format=torch.channels_last))


class EmbeddingNet(nn.Module):
    """[N,1,28,28] float in [0,1] -> [N,D] unnormalised embedding (normalised by `Exported`)."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.mean = PIXEL_MEAN
        self.std = PIXEL_STD
        layers: list[nn.Module] = []
        cin = 1
        last_stage = len(arch.widths) - 1
        for stage, (width, blocks) in enumerate(zip(arch.widths, arch.blocks, strict=True)):
            for block in range(blocks):
                layers.append(nn.Conv2d(cin, width, 3, padding=1, bias=False))
                if stage < last_stage and block == blocks - 1:
                    # Pool straight after the convolution: BatchNorm and ReLU then run on a quarter of the
                    # activations, which on a CPU is most of their (memory-bound) cost.
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                cin = width
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(cin * 7 * 7, arch.embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(arch.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.features(x)
        return self.bn(self.embed(torch.flatten(x, 1)))


class ArcFace(nn.Module):
    """Additive angular margin head: s * cos(theta + m) for the target class, s * cos(theta) otherwise.

    Past theta = pi - m the margin would make cos(theta + m) grow again, so there the logit falls back
    to the linear cos(theta) - m * sin(m) (as in insightface). sin(theta) is taken from a clamped
    1 - cos^2, so gradients stay finite at cos = +-1.
    """

    def __init__(self, embedding_dim: int, num_classes: int = 10, scale: float = 32.0, margin: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.margin = margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos(theta) between each L2-normalised embedding and each class centre: [N, classes]."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings).float()
        m = self.margin
        sin = torch.sqrt(torch.clamp(1.0 - cos * cos, min=1e-7))
        cos_m = cos * math.cos(m) - sin * math.sin(m)
        cos_m = torch.where(cos > math.cos(math.pi - m), cos_m, cos - math.sin(math.pi - m) * m)
        target = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(target, cos_m, cos)


class Exported(nn.Module):
    """What model.pt holds: float32 [N,1,28,28] in [0,1] -> float32 [N,D], L2-normalised."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last runs the CPU convolutions about twice as fast as the default layout.
        x = x.float().contiguous(memory_format=torch.channels_last)
        return F.normalize(self.net(x), dim=1)


def export_torchscript(net: EmbeddingNet) -> bytes:
    """Script and freeze (folds BatchNorm into the convolutions) a CPU copy of `net`; the file's bytes."""
    copy = EmbeddingNet(net.arch)
    copy.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    copy = channels_last(copy)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript, but it is what the serving contract and TorchServe 0.12 load.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.freeze(torch.jit.script(Exported(copy).eval()))
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def layer_flops(net: nn.Module) -> list[int]:
    """Floating-point operations (2 per multiply-add) of one image's forward pass through each conv and linear
    layer, in the order they run, from the layer shapes."""
    flops: list[int] = []

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            flops.append(2 * k * output[0].numel())
        elif isinstance(module, nn.Linear):
            flops.append(2 * module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 1, 28, 28, device=next(net.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return flops


def forward_flops(net: nn.Module) -> int:
    """FLOPs of one image's forward pass through the convs and linears (what inference costs)."""
    return sum(layer_flops(net))


def training_flops(net: nn.Module, embedding_dim: int, classes: int = 10) -> int:
    """FLOPs of one training image: forward and backward through every conv and linear layer, ArcFace's included.

    The backward of a layer computes its weight gradient (as many FLOPs as its forward) and its input gradient
    (as many again), except the first layer's input gradient: nothing needs the image's. BatchNorm, pooling,
    activations, the loss and the optimizer are not counted (memory-bound, a few percent of the FLOPs).
    """
    layers = [*layer_flops(net), 2 * embedding_dim * classes]
    return 3 * sum(layers) - layers[0]
