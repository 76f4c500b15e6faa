"""Test helpers every package shares, as a pytest plugin (entry point `pytest11: mnist_ct`, loaded by pytest).

Real data, not blobs: the fixtures serve the 5,000 real MNIST digits of the built-in data set.

    def test_something(published_run: RunPaths) -> None:     # run "t": 30 train + 10 test digits per class
        assert main([*run_args(published_run), "--epochs", "1"]) == 0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .dataset import Split
from .manifest import Producer, atomic_write_bytes, publish
from .mnist5k import TEST_PRODUCER, mnist5k, publish_run, take
from .paths import RunPaths

__all__ = [
    "tmpfs_volume",
    "TEST_PRODUCER",
    "KNN_VOTE_CASES",
    "FAISS_NO_NEIGHBOUR",
    "mnist5k",
    "publish_run",
    "take",
    "run_args",
    "executor_input",
    "read_executor_output",
]

# The k-NN vote's behaviour, one table for every implementation that must agree with mnist_ct.artifacts.knn
# (analysis, the serving handler inside the .mar): (neighbour labels nearest first, inner products, vote)
# -> (label, score).
FAISS_NO_NEIGHBOUR = -3.4028235e38  # the score FAISS returns beside id -1
KNN_VOTE_CASES = [
    ([3], [0.9], "majority", 3, 0.9),
    ([3, 5, 5], [0.9, 0.8, 0.7], "majority", 5, 0.8),  # two votes beat the nearest one
    ([2, 1], [0.9, 0.9], "majority", 2, 0.9),  # a tie goes to the nearest
    ([1, 2, 2, 1], [0.9, 0.8, 0.7, 0.6], "majority", 1, 0.9),  # tied classes: the one met first
    ([4, 7, 7], [0.99, 0.5, 0.5], "distance", 4, 0.99),  # one very near neighbour outweighs two far ones
    ([2, -1, -1], [0.9, 0.0, 0.0], "majority", 2, 0.9),  # -1: FAISS found no neighbour there
    ([-1, -1], [0.0, 0.0], "distance", -1, 0.0),  # no neighbour at all: UNANSWERED
    ([2, 5, 5], [0.99, 0.5, 0.4], "majority", 5, 0.5),  # the most frequent label
    ([7, 4, 4, 7, 1], [0.9, 0.8, 0.7, 0.6, 0.5], "majority", 7, 0.9),  # a tie: the nearest tied class
    ([2, 5, 5], [0.99, 0.5, 0.5], "distance", 2, 0.99),  # weight 7.1 against two of 1
    ([2, 5, 5], [0.99, 0.5, 0.5], "majority", 5, 0.5),  # the same neighbours, counted
    # FAISS's real "no neighbour" score is -FLT_MAX, not 0:
    ([-1, -1], [FAISS_NO_NEIGHBOUR, FAISS_NO_NEIGHBOUR], "majority", -1, 0.0),
    ([-1, -1], [FAISS_NO_NEIGHBOUR, FAISS_NO_NEIGHBOUR], "distance", -1, 0.0),
    ([3, -1], [0.8, FAISS_NO_NEIGHBOUR], "majority", 3, 0.8),  # a missing neighbour does not vote
    ([3, -1], [0.8, FAISS_NO_NEIGHBOUR], "distance", 3, 0.8),
]


def run_args(paths: RunPaths) -> list[str]:
    """A step's core options for `paths`, quiet."""
    return [*paths.cli_args(), "--quiet"]


def executor_input(output_file: Path, artifacts: Mapping[str, str], task: str = "task") -> str:
    """An ExecutorInput as the KFP v2 launcher substitutes it for {{$}}, with output artifacts NAME -> schema title.

    Built with KFP's own protobuf types (kfp-pipeline-spec, imported here only), so it has their JSON form.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    message = pipeline_spec_pb2.ExecutorInput()
    message.outputs.output_file = str(output_file)
    for name, schema in artifacts.items():
        artifact = message.outputs.artifacts[name].artifacts.add()
        artifact.name = name
        artifact.type.schema_title = schema
        artifact.uri = f"minio://mlpipeline/v2/artifacts/run/{task}/{name}"
    return json_format.MessageToJson(message)


def read_executor_output(path: Path) -> dict[str, dict[str, Any]]:
    """An ExecutorOutput file parsed strictly into KFP's protobuf type: each artifact's metadata, by name."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    message = json_format.Parse(Path(path).read_text(), pipeline_spec_pb2.ExecutorOutput(), ignore_unknown_fields=False)
    assert not message.parameter_values, "no output parameter travels in the ExecutorOutput"
    found = {}
    for name, listed in message.artifacts.items():
        assert len(listed.artifacts) == 1, f"{path}: {name} has {len(listed.artifacts)} artifacts"
        found[name] = json.loads(json_format.MessageToJson(listed.artifacts[0].metadata))
    return found


def documented_options(readme: Path, heading: str = "Options") -> set[str]:
    """Every `--option` named in the README section whose `## ` heading starts with `heading`."""
    sections = re.split(r"^## ", Path(readme).read_text(), flags=re.MULTILINE)
    chosen = [s for s in sections if s.startswith(heading)]
    assert chosen, f"{readme}: no '## {heading}' section"
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", chosen[0]))


def assert_readme_documents(parser: argparse.ArgumentParser, readme: Path, heading: str = "Options") -> None:
    """The README's Options section lists every option of `parser`, and nothing the parser lacks."""
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    documented = documented_options(readme, heading)
    assert not options - documented, f"{readme}: options missing from '## {heading}': {sorted(options - documented)}"
    assert not documented - options, f"{readme}: '## {heading}' lists unknown options: {sorted(documented - options)}"


@contextlib.contextmanager
def tmpfs_volume(folder: Path, size_kib: int = 64, read_only: bool = False) -> Iterator[Path]:
    """A real small (or read-only) file system mounted at `folder`, for disk-full and EROFS tests.

    Needs root (CI runs as root; chmod cannot stop root, a read-only mount can); the test is skipped, saying
    why, where mounting is impossible.
    """
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """mount(folder, size="200k", read_only=False) -> folder: tmpfs_volume for the rest of the test."""
    with contextlib.ExitStack() as mounts:

        def mount(folder: Path, size: str = "200k", read_only: bool = False) -> Path:
            kib = int(size[:-1]) * {"k": 1, "m": 1024}[size[-1]]  # mount's own notation: 200k, 1m
            return mounts.enter_context(tmpfs_volume(folder, kib, read_only))

        yield mount


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 64 KiB file system that is already full: every write fails with ENOSPC."""
    with tmpfs_volume(tmp_path / "full", 64) as folder:
        with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            f.write(b"\0" * (128 * 1024))
        yield folder


@pytest.fixture
def read_only_volume(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only file system: every write fails with EROFS (even as root)."""
    with tmpfs_volume(tmp_path / "ro", read_only=True) as folder:
        yield folder


DEPLOY_PRODUCER = Producer("deploy", "0.0.0+test")


def npy_bytes(array: Any) -> bytes:
    """`array` as the bytes of a .npy file (what labels.npy holds inside a model archive)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def mar_bytes(record: Mapping[str, Any], members: Mapping[str, bytes]) -> bytes:
    """A model archive as deploy builds it, reduced to what the champion is read from: a zip of deployment.json
    (`record`) and `members` (model.pt, index.faiss, labels.npy)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("deployment.json", json.dumps(record))
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def publish_deployment(
    deploy_root: Path,
    record: Mapping[str, Any],
    members: Mapping[str, bytes] | None = None,
    model_name: str = "mnist",
    live: bool = True,
) -> Path:
    """Version `record["version"]` laid out as deploy leaves it, reduced to what the champion is read from:
    history/<version>/ (kind "deployment": <model>.mar, a zip of deployment.json plus `members`, and
    deployment.json beside it) and, if `live`, model-store/<model>.mar, a byte-equal copy. The history archive."""
    archive = mar_bytes(record, members or {})
    folder = Path(deploy_root) / "history" / str(record["version"])
    with publish(folder, "deployment", DEPLOY_PRODUCER) as staging:
        (staging.path / f"{model_name}.mar").write_bytes(archive)
        (staging.path / "deployment.json").write_text(json.dumps(record))
    if live:
        atomic_write_bytes(Path(deploy_root) / "model-store" / f"{model_name}.mar", archive)
    return folder / f"{model_name}.mar"


@pytest.fixture(scope="session")
def digits() -> Split:
    """The 5,000 built-in digits."""
    return mnist5k()


@pytest.fixture
def published_run(tmp_path: Path) -> RunPaths:
    """Run "t" under tmp_path with a published data set: 30 train and 10 test digits per class."""
    return publish_run(tmp_path)
