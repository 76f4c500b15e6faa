"""Recognise a TorchScript archive without loading it: no step ever unpickles a model file."""

from __future__ import annotations

import zipfile
from pathlib import Path

from .errors import ArtifactError


def is_torchscript_archive(path: Path) -> bool:
    """True if `path` has the zip layout torch.jit.save writes: <name>/data.pkl, constants.pkl and code/.

    Looks at the zip directory only, so a plain pickle (or a torch.save'd state dict, which has no code/)
    is refused without a byte of it being unpickled.
    """
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
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


def require_torchscript(path: Path) -> None:
    """Raise the one-line ArtifactError for a model file that is not a TorchScript archive."""
    if not is_torchscript_archive(path):
        raise ArtifactError(
            f"{path}: not a TorchScript archive (a pickle or a state dict?); refusing to load it. "
            "Export the model with torch.jit.script/trace + torch.jit.save (train_model does)"
        )
