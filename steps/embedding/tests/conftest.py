"""Small TorchScript models to embed the built-in digits with (the mnist_ct.artifacts plugin serves the data)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_ct.artifacts import Manifest, Producer, RunPaths, publish, read_manifest


@pytest.fixture(autouse=True)
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the CI machine has two cores, shared
    yield
    torch.set_num_threads(threads)


class Embedder(nn.Module):
    """A small conv net that keeps the serving contract (the real one is train_model's)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 13 * 13, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(torch.flatten(torch.relu(self.conv(x)), 1)), dim=1)


def torchscript_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), buffer)
    return buffer.getvalue()


def publish_model(paths: RunPaths, data: bytes, dim: object = 8) -> Manifest:
    """Publish `data` as the run's model.pt, the way train_model does (kind "model", manifest last)."""
    meta = {"embedding_dim": dim} if dim is not None else {}
    inputs = {"dataset": read_manifest(paths.dataset).digest} if paths.dataset.is_dir() else {}
    with publish(paths.model, "model", Producer("train_model", "0.1.0"), inputs) as staging:
        (staging.path / "model.pt").write_bytes(data)
        staging.meta.update(meta)
    assert staging.manifest is not None
    return staging.manifest


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed run wrote on stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("embedding: error: ") and "Traceback" not in err[0]
    return err[0]


def nothing_published(paths: RunPaths) -> bool:
    """No embeddings artifact and no staging of one."""
    run = paths.model_root / "runs" / paths.run_id
    return not (run / "embeddings").exists() and not list(run.glob(".embeddings.*"))
