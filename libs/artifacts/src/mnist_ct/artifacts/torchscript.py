"""Recognise a TorchScript archive without loading it: no step ever unpickles a model file."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from .errors import ArtifactError


def is_torchscript_archive(source: Path | bytes) -> bool:
    """True if `source` (a file, or its bytes: a member of a model archive) has the zip layout torch.jit.save
    writes: <name>/data.pkl, constants.pkl and code/.

    Looks at the zip directory only, so a plain pickle (or a torch.save'd state dict, which has no code/)
    is refused without a byte of it being unpickled.
    """
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    if not zipfile.is_zipfile(file):
        return False
    try:
        with zipfile.ZipFile(file) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1:
        return False
    root = roots.pop()
    return {f"{root}/data.pkl", f"{root}/constants.pkl"} <= set(names) and any(
        n.startswith(f"{root}/code/") for n in names
    )


def require_torchscript(source: Path | bytes, name: str | Path | None = None) -> None:
    """Raise the one-line ArtifactError for a model file (or its bytes, called `name`) that is not a TorchScript
    archive."""
    if not is_torchscript_archive(source):
        if name is None:
            name = "model bytes" if isinstance(source, (bytes, bytearray)) else source
        raise ArtifactError(
            f"{name}: not a TorchScript archive (a pickle or a state dict?); "
            "refusing to load it. Export the model with torch.jit.script/trace + torch.jit.save (train_model does)"
        )
