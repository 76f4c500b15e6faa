"""Where training runs: the torch device and the arithmetic it computes in."""

from __future__ import annotations

import torch

from mnist_ct.artifacts import UsageError

DEVICES = ("auto", "cpu", "cuda")
COMPUTE_PRECISIONS = ("fp32", "bf16")  # what the training loop computes in (bf16: autocast; weights stay fp32)
PRECISIONS = ("auto", *COMPUTE_PRECISIONS)  # auto: resolve_precision picks one for the device


def resolve_device(name: str) -> torch.device:
    """auto: CUDA if there is one; cuda where there is none is refused (exit 2) before any work."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in DEVICES:
        raise UsageError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 autocast where the hardware computes in bf16 natively (CUDA, CPUs with AVX512-BF16 or AMX)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # Private helpers of torch.cpu (2.x); a torch without them gets fp32.
    probes = [getattr(torch.cpu, probe, None) for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    native = any(probe() for probe in probes if probe is not None)
    return "bf16" if native and torch.backends.mkldnn.is_available() else "fp32"
