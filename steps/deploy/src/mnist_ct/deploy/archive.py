"""The TorchServe model archive (.mar): build it with torch-model-archiver, and read one back."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import ArtifactError, check_model_name  # noqa: F401  (check_model_name: re-exported)

MAR_MANIFEST = "MAR-INF/MANIFEST.json"
SETTINGS_FILE = "deployment.json"  # the deployment's metadata and the handler's settings, inside the .mar
MODEL_FILE = "model.pt"
HANDLER_FILE = "handler.py"
INDEX_FILE = "index.faiss"
LABELS_FILE = "labels.npy"
REQUIREMENTS_FILE = "requirements.txt"
# The one k-NN vote (mnist_ct.artifacts.knn imports only numpy), copied in so the archive stays
# self-contained: TorchServe puts the unpacked archive on the worker's sys.path, the handler imports it.
KNN_FILE = "mnist_ct_knn.py"
# The one image decoding (mnist_ct.artifacts.digits: numpy and Pillow), copied in for the same reason.
DIGITS_FILE = "mnist_ct_digits.py"
# What the handler needs beyond a TorchServe image (which has torch, numpy, Pillow): KServe's
# TorchServe runtime installs it when the model loads (install_py_dep_per_model=true).
HANDLER_REQUIREMENTS = "faiss-cpu>=1.15\n"
# What every mnist-ct archive holds (KNN_FILE only since deploy 0.2.0: older ones in history stay readable).
ARCHIVE_FILES = frozenset(
    {MAR_MANIFEST, MODEL_FILE, HANDLER_FILE, INDEX_FILE, LABELS_FILE, SETTINGS_FILE, REQUIREMENTS_FILE}
)


def handler_source() -> bytes:
    """The TorchServe handler shipped with this package (mnist_ct/deploy/handler.py)."""
    return resources.files("mnist_ct.deploy").joinpath("handler.py").read_bytes()


def knn_source() -> bytes:
    """The k-NN vote analysis measured with (mnist_ct/artifacts/knn.py), for the archive."""
    return resources.files("mnist_ct.artifacts").joinpath("knn.py").read_bytes()


def digits_source() -> bytes:
    """The image decoding preprocess converts incoming digits with (mnist_ct/artifacts/digits.py), for the archive."""
    return resources.files("mnist_ct.artifacts").joinpath("digits.py").read_bytes()


@dataclass(frozen=True)
class ArchiveInfo:
    """What a .mar holds: its name and version (from MAR-INF/MANIFEST.json) and deployment.json."""

    path: Path
    model_name: str
    version: str
    files: dict[str, str]  # name inside the archive -> sha256
    deployment: dict[str, Any]

    @property
    def accuracy(self) -> float | None:
        value = self.deployment.get("accuracy")
        return float(value) if isinstance(value, (int, float)) else None


def build_archive(
    out_dir: Path,
    model_name: str,
    version: str,
    sources: dict[str, Path],
    deployment: dict[str, Any],
) -> Path:
    """Run torch-model-archiver on copies of `sources` (model.pt, index.faiss, labels.npy) plus the
    handler, the k-NN vote and deployment.json; return `<out_dir>/<model_name>.mar`.

    The archiver copies its inputs to `$TMPDIR/<model name>`, so it runs with a private TMPDIR.
    """
    with tempfile.TemporaryDirectory(prefix="mnist-ct-mar-") as tmp:
        work = Path(tmp) / "in"
        work.mkdir()
        for name in (MODEL_FILE, INDEX_FILE, LABELS_FILE):
            shutil.copyfile(sources[name], work / name)
        (work / HANDLER_FILE).write_bytes(handler_source())
        (work / KNN_FILE).write_bytes(knn_source())
        (work / DIGITS_FILE).write_bytes(digits_source())
        (work / SETTINGS_FILE).write_text(json.dumps(deployment, indent=2, sort_keys=True) + "\n")
        (work / REQUIREMENTS_FILE).write_text(HANDLER_REQUIREMENTS)
        cmd = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            model_name,
            "--version",
            version,
            "--serialized-file",
            MODEL_FILE,
            "--handler",
            HANDLER_FILE,
            "--extra-files",
            f"{INDEX_FILE},{LABELS_FILE},{SETTINGS_FILE},{KNN_FILE},{DIGITS_FILE}",
            "--requirements-file",
            REQUIREMENTS_FILE,
            "--export-path",
            str(Path(out_dir).resolve()),
            "--force",
        ]
        env = {**os.environ, "TMPDIR": tmp, "TEMP": tmp}
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            output = done.stderr + done.stdout
            for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES):
                if os.strerror(code) in output:  # the volume, not the input: the same exit code as our own writes
                    raise OSError(code, os.strerror(code), str(out_dir))
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise ArtifactError(f"torch-model-archiver failed (exit {done.returncode}): {last}")
    mar = Path(out_dir) / f"{model_name}.mar"
    if not mar.is_file():
        raise ArtifactError(f"{mar}: torch-model-archiver reported success but wrote no archive")
    return mar


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_archive(path: Path) -> ArchiveInfo:
    """Open a .mar, check it is a complete zip with the expected files, return what it holds."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                raise ArtifactError(f"{path}: archive member {bad} is corrupt (CRC mismatch)")
            names = set(z.namelist())
            missing = sorted(ARCHIVE_FILES - names)
            if missing:
                raise ArtifactError(f"{path}: not an mnist-ct model archive (missing {', '.join(missing)})")
            files = {name: _sha256(z.read(name)) for name in sorted(names) if not name.endswith("/")}
            manifest = json.loads(z.read(MAR_MANIFEST))
            deployment = json.loads(z.read(SETTINGS_FILE))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: archive not found") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArtifactError(f"{path}: not a readable zip archive ({e}); it is truncated or corrupt") from None
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{path}: unreadable {MAR_MANIFEST} or {SETTINGS_FILE} ({e})") from None
    model = manifest.get("model", {})
    return ArchiveInfo(path, str(model.get("modelName", "")), str(model.get("modelVersion", "")), files, deployment)
