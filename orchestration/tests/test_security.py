"""Security checks across the repo: no pickle loader in any package's source, non-root step images,
release never prints a token, a pipeline with a tag-only image is never released."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from conftest import release

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import LOCK_PATH

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p
    for pattern in ("libs/*/src/**/*.py", "steps/*/src/**/*.py", "orchestration/src/**/*.py")
    for p in ROOT.glob(pattern)
)

# Loaders that run pickled code: always refused in package sources.
PICKLE_LOADERS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "dill.load", "dill.loads",
    "cloudpickle.load", "cloudpickle.loads", "joblib.load", "pandas.read_pickle", "shelve.open", "marshal.load",
    "marshal.loads", "torch.serialization.load", "numpy.lib.format.read_array",
}  # fmt: skip


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """`np.load` -> `numpy.load` through the module's imports; None for anything not a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def pickle_loads(source: str, filename: str = "<source>") -> list[str]:
    """Every call in `source` that can unpickle: pickle & co., torch.load without weights_only=True,
    numpy.load with allow_pickle not False."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases)
        where = f"{filename}:{node.lineno}: {name}"
        if name in PICKLE_LOADERS:
            found.append(where)
        elif name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where} without weights_only=True")
        elif name == "numpy.load":
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where} with allow_pickle={ast.unparse(allow)}")
    return found


def test_no_package_source_loads_anything_with_a_pickle_loader():
    assert len(SOURCES) > 40  # every package's modules, not an empty glob
    found = [hit for path in SOURCES for hit in pickle_loads(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


def test_the_scan_finds_each_kind_of_pickle_load():
    bad = """
import pickle, torch
import numpy as np
from pandas import read_pickle as rp
from torch import load as tl
pickle.loads(b)
torch.load(p)
torch.load(p, weights_only=False)
tl(p, map_location="cpu")
np.load(p, allow_pickle=True)
np.load(p, allow_pickle=flag)
rp(p)
"""
    assert [hit.split(": ", 1)[1] for hit in pickle_loads(bad)] == [
        "pickle.loads",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "numpy.load with allow_pickle=True",
        "numpy.load with allow_pickle=flag",
        "pandas.read_pickle",
    ]
    good = "import torch, numpy\ntorch.load(p, weights_only=True)\nnumpy.load(p)\nnumpy.load(p, allow_pickle=False)\n"
    assert pickle_loads(good) == []


@pytest.mark.parametrize("dockerfile", sorted(ROOT.glob("steps/*/Dockerfile")), ids=lambda p: p.parent.name)
def test_every_step_image_switches_to_a_non_root_user(dockerfile):
    """The Dockerfile's last USER is a non-zero uid that the image creates (checked in a built image by
    the delivery tooling's image tests)."""
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    users = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert any(re.search(rf"useradd .*--uid {uid}\b", line) for line in lines)
    entry = next(i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT"))
    assert max(i for i, line in enumerate(lines) if line.startswith("USER ")) < entry


def test_a_compiled_pipeline_with_a_tag_only_image_is_refused_before_anything_is_sent(
    api, pinned_lock_file, strict_yaml, tmp_path, capsys
):
    text = strict_yaml.read_text()
    pinned = re.search(r"(ghcr\.io/mnist-ct/mnist-ct-train-faiss)@sha256:[0-9a-f]{64}", text)
    assert pinned, "the strict build pins train_faiss by digest"
    edited = tmp_path / "pipeline.yaml"
    edited.write_text(text.replace(pinned.group(0), f"{pinned.group(1)}:0.1.0"))
    assert release(api, pinned_lock_file, "--package", str(edited)) == 3
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        f"mnist-ct release: error: refusing to release {edited}: exec-train-faiss: image "
        "ghcr.io/mnist-ct/mnist-ct-train-faiss:0.1.0 is not pinned by digest"
    )
    assert api.state.requests == []


def test_a_lock_with_a_tag_only_image_is_refused_and_nothing_is_compiled(tmp_path, capsys):
    doc = json.loads(LOCK_PATH.read_text())
    doc["packages"]["train_faiss"]["image"] = "ghcr.io/mnist-ct/mnist-ct-train-faiss:0.1.0"
    lock_file = tmp_path / "images.lock.json"
    lock_file.write_text(json.dumps(doc))
    out = tmp_path / "pipeline.yaml"
    for argv in (["compile", "-o", str(out)], ["compile", "--dev", "-o", str(out)]):
        assert main([*argv, "--lock", str(lock_file)]) == 3
        assert capsys.readouterr().err.splitlines() == [
            f"mnist-ct compile: error: {lock_file}: train_faiss: image "
            "'ghcr.io/mnist-ct/mnist-ct-train-faiss:0.1.0' must be a repository, without tag or digest"
        ]
        assert not out.exists()
