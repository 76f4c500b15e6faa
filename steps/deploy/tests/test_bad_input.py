# mypy: disable-error-code="override"
# (the models below break the contract on purpose; TorchScript reads a "# type:" comment on a def line as types)
"""Bad input, as a hostile user would give it: every option at and past its limits, every file deploy reads,
every folder it writes. Each: the exit code, one line on stderr naming the problem (no traceback), and the
deploy volume exactly as it was (no archive, history entry, log line or hidden staging).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_run import FixtureRun, cli_roots, replace_listed_file, script_bytes
from torch import nn

from mnist_ct.artifacts.testing import tmpfs_volume
from mnist_ct.deploy.__main__ import main

# -- helpers ---------------------------------------------------------------------------------------


def volume_state(root: Path) -> dict[str, str]:
    """Every file and folder under `root` (hidden ones included) -> its sha256 ("dir" for folders)."""
    if not root.exists():
        return {}
    state = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        state[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for word in words:
        assert word in err[0], (word, err[0])
    return err[0]


def usage_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """argparse's usage lines, then one error line naming the option; no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error:" in last, err
    for word in words:
        assert word in last, (word, last)
    return last


@pytest.fixture
def model_copy(runs: dict[str, FixtureRun], tmp_path: Path) -> Path:
    """A copy of the model volume of the runs, to damage."""
    copy = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, copy)
    return copy


@pytest.fixture
def live_worse(runs: dict[str, FixtureRun], deploy_root: Path) -> Iterator[dict[str, str]]:
    """`worse` deployed first; yields the deploy volume's state, which a failing deploy must leave as is."""
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    yield volume_state(deploy_root)


def deploy_args(runs: dict[str, FixtureRun], deploy_root: Path, model_root: Path, run: str = "good") -> list[str]:
    return [*cli_roots(runs[run], deploy_root), "--model-root", str(model_root)]


# -- options: exit 2 at parse time, nothing created --------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--workers", "0"),
        ("--workers", "65"),
        ("--workers", "-1"),
        ("--workers", "two"),
        ("--workers", "1.5"),
        ("--batch-size", "0"),
        ("--batch-size", "1025"),
        ("--batch-size", "nan"),
        ("--max-batch-delay", "-1"),
        ("--max-batch-delay", "60001"),
        ("--max-request-mb", "0"),
        ("--max-request-mb", "-4"),
        ("--max-request-mb", "2048"),  # 2**31 bytes: TorchServe's Integer.parseInt overflows
        ("--max-request-mb", "nan"),
        ("--max-request-mb", "inf"),
        ("--max-request-mb", "1e-9"),  # less than one byte
        ("--max-request-mb", "four"),
        ("--max-pixels", "0"),
        ("--max-pixels", "783"),  # not even one 28x28 digit
        ("--max-pixels", "89478486"),  # beyond Pillow's own decompression-bomb limit
        ("--max-pixels", "1e6"),
        ("--threads-per-worker", "0"),
        ("--threads-per-worker", "1025"),
        ("--model-name", "bad/name"),
        ("--model-name", ""),
        ("--model-name", "-mnist"),
        ("--model-name", "mnist.v2"),  # TorchServe would turn the '.' into '_' where it derives a name
        ("--model-name", "m" * 65),
        ("--model-name", "mnist\n"),
        ("--serving-root", "mnt/models"),
        ("--serving-root", "/mnt\\models"),
        ("--serving-root", "/mnt/mo\ndels"),
        ("--serving-root", ""),
        ("--run-id", "../escape"),
        ("--run-id", "/abs/path"),
        ("--run-id", "r\n"),
    ],
)
def test_bad_input_option_out_of_range_exits_2_before_any_work(runs, deploy_root, capsys, option, value):
    assert main([*cli_roots(runs["good"], deploy_root), option, value]) == 2
    usage_error(capsys, option)
    assert not deploy_root.exists()


def test_bad_input_missing_run_id_exits_2(deploy_root, capsys):
    assert main(["--deploy-root", str(deploy_root)]) == 2
    one_error_line(capsys, "--run-id is required")
    assert not deploy_root.exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--run-id", "good"], "--run-id"),
        (["--force"], "--force"),
        (["--workers", "3"], "--workers"),
        (["--max-request-mb", "8"], "--max-request-mb"),
        (["--max-pixels", "1000"], "--max-pixels"),
        (["--threads-per-worker", "2"], "--threads-per-worker"),
    ],
)
def test_bad_input_rollback_with_an_option_it_would_ignore_exits_2(runs, deploy_root, capsys, extra, named):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    before = volume_state(deploy_root)
    capsys.readouterr()
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet", *extra]) == 2
    one_error_line(capsys, "--rollback", named)
    assert volume_state(deploy_root) == before


@pytest.mark.parametrize("root", ["--data-root", "--model-root", "--deploy-root"])
def test_bad_input_a_root_that_is_a_file_exits_2(runs, deploy_root, tmp_path, capsys, root):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert main([*cli_roots(runs["good"], deploy_root), root, str(a_file)]) == 2
    usage_error(capsys, root, "is a file")
    assert a_file.read_text() == "not a folder" and not deploy_root.exists()


# -- the files deploy reads: exit 3, one line naming the file, the deploy volume untouched ------------


def test_bad_input_changed_model_file_is_refused_by_its_checksum(runs, deploy_root, model_copy, live_worse, capsys):
    model_pt = model_copy / "runs/good/model/model.pt"
    model_pt.write_bytes(model_pt.read_bytes()[:-10])
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "model.pt", "manifest")
    assert volume_state(deploy_root) == live_worse


def test_bad_input_missing_model_file(runs, deploy_root, model_copy, capsys):
    (model_copy / "runs/good/model/model.pt").unlink()
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "model.pt", "missing")
    assert not deploy_root.exists()


def test_bad_input_missing_model_artifact(runs, deploy_root, model_copy, capsys):
    shutil.rmtree(model_copy / "runs/good/model")
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "runs/good/model", "not found")
    assert not deploy_root.exists()


def test_bad_input_a_folder_where_model_pt_should_be(runs, deploy_root, model_copy, capsys):
    model_pt = model_copy / "runs/good/model/model.pt"
    model_pt.unlink()
    model_pt.mkdir()
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "model.pt")
    assert not deploy_root.exists()


def test_bad_input_a_file_where_the_index_folder_should_be(runs, deploy_root, model_copy, capsys):
    index = model_copy / "runs/good/index"
    shutil.rmtree(index)
    index.write_text("not a folder")
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "runs/good/index")
    assert not deploy_root.exists()


def test_bad_input_a_model_folder_that_is_a_symlink_out_of_the_volume(runs, deploy_root, model_copy, tmp_path, capsys):
    outside = tmp_path / "outside-model"
    shutil.move(model_copy / "runs/good/model", outside)
    (model_copy / "runs/good/model").symlink_to(outside)
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "runs/good/model", "leads out of its volume")
    assert not deploy_root.exists()


class _Marker:
    """Unpickling this creates a file: the proof that a loader unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_bad_input_pickle_model_with_a_valid_manifest_is_refused_unloaded(
    runs, deploy_root, model_copy, tmp_path, capsys
):
    import pickle

    marker = tmp_path / "unpickled"
    # The manifest is made to match, so only the TorchScript check stands between the pickle and TorchServe.
    replace_listed_file(model_copy / "runs/good/model", "model.pt", pickle.dumps(_Marker(marker)))
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "model.pt", "not a TorchScript archive")
    assert not marker.exists() and not deploy_root.exists()


def test_bad_input_truncated_torchscript_archive_with_a_valid_manifest(runs, deploy_root, model_copy, capsys):
    model_dir = model_copy / "runs/good/model"
    replace_listed_file(model_dir, "model.pt", (model_dir / "model.pt").read_bytes()[:5000])
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "model.pt")
    assert not deploy_root.exists()


def test_bad_input_index_of_another_run_is_refused_by_lineage(runs, deploy_root, model_copy, capsys):
    shutil.rmtree(model_copy / "runs/good/index")
    shutil.copytree(model_copy / "runs/worse/index", model_copy / "runs/good/index")
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "built from other embeddings")
    assert not deploy_root.exists()


def test_bad_input_missing_analysis_manifest(runs, deploy_root, model_copy, capsys):
    (model_copy / "runs/good/analysis/manifest.json").unlink()
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "analysis", "manifest")
    assert not deploy_root.exists()


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"accuracy": "0.9"}', "'accuracy' must be a number"),
        (b'{"accuracy": 1.5}', "outside 0..1"),
        (b'{"accuracy": NaN}', "'accuracy' must be a number"),
        (b'{"accuracy": true}', "'accuracy' must be a number"),
        (b"[0.9]", "'accuracy' must be a number"),
        (b'{"accuracy": 0.9, "k": 0}', "not a k-NN setting"),
        (b'{"accuracy": 0.9, "vote": "median"}', "not a k-NN setting"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_input_analysis_metrics(runs, deploy_root, model_copy, capsys, metrics, words):
    replace_listed_file(model_copy / "runs/good/analysis", "metrics.json", metrics)
    shutil.rmtree(model_copy / "runs/good/embeddings")  # the analysis digest changed: lineage is not the point here
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "metrics.json", words)
    assert not deploy_root.exists()


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (np.zeros(600, dtype=np.float32), "integer [N]"),
        (np.zeros((600, 1), dtype=np.int64), "integer [N]"),
        (np.zeros(0, dtype=np.int64), "non-empty"),
        (np.full(600, 10, dtype=np.int64), "digits 0..9"),
    ],
)
def test_bad_input_index_labels(runs, deploy_root, model_copy, capsys, labels, words):
    buffer = io.BytesIO()
    np.save(buffer, labels)
    replace_listed_file(model_copy / "runs/good/index", "labels.npy", buffer.getvalue())
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "labels.npy", words)
    assert not deploy_root.exists()


def test_bad_input_labels_not_one_per_index_vector(runs, deploy_root, model_copy, capsys):
    index_dir = model_copy / "runs/good/index"
    buffer = io.BytesIO()
    np.save(buffer, np.load(index_dir / "labels.npy")[:-1])
    replace_listed_file(index_dir, "labels.npy", buffer.getvalue())
    doc = json.loads((index_dir / "manifest.json").read_text())
    doc["meta"].pop("size")  # without index.json's count, the probe's ntotal check is what stands
    (index_dir / "manifest.json").write_text(json.dumps(doc))
    shutil.rmtree(model_copy / "runs/good/embeddings")
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "index.faiss holds 600 vectors", "labels.npy has 599 labels")
    assert not deploy_root.exists()


def test_bad_input_index_faiss_that_faiss_cannot_read(runs, deploy_root, model_copy, capsys):
    replace_listed_file(model_copy / "runs/good/index", "index.faiss", b"IxFI" + os.urandom(200))
    shutil.rmtree(model_copy / "runs/good/embeddings")
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "index.faiss", "FAISS cannot read it")
    assert not deploy_root.exists()


def test_bad_input_index_that_measures_l2_instead_of_inner_product(runs, deploy_root, model_copy, tmp_path, capsys):
    import faiss

    index_dir = model_copy / "runs/good/index"
    ip = faiss.read_index(str(index_dir / "index.faiss"))
    l2 = faiss.IndexFlatL2(ip.d)
    l2.add(ip.reconstruct_n(0, ip.ntotal))
    faiss.write_index(l2, str(tmp_path / "l2.faiss"))
    replace_listed_file(index_dir, "index.faiss", (tmp_path / "l2.faiss").read_bytes())
    shutil.rmtree(model_copy / "runs/good/embeddings")
    assert main(deploy_args(runs, deploy_root, model_copy)) == 3
    one_error_line(capsys, "index.faiss", "not inner product")
    assert not deploy_root.exists()


# -- the model probe: a model TorchServe could not serve never goes live ------------------------------


class Embedder(nn.Module):
    """float32 [N,1,28,28] -> unit [N,dim] (a valid model of another embedding size than the index's)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(28 * 28, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(x.flatten(1)), dim=1)


class Unnormalised(Embedder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1)) * 3.0


class Float64(Embedder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(x.flatten(1)), dim=1).double()


class OneRow(Embedder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(x.flatten(1)).mean(0, keepdim=True), dim=1)


class ThreeDims(Embedder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(x.flatten(1)), dim=1).unsqueeze(1)


class MixesTheBatch(Embedder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.proj(x.flatten(1))
        return nn.functional.normalize(v - 0.5 * v.mean(0, keepdim=True), dim=1)


class ReturnsTuple(Embedder):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = nn.functional.normalize(self.proj(x.flatten(1)), dim=1)
        return v, v


class NaNs(Embedder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1)) * float("nan")


class ColourOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.conv(x).flatten(1), dim=1)


@pytest.fixture
def with_model(runs, model_copy):
    """Put a TorchScript model in the copy (its manifest made to match, the embeddings removed so the
    lineage, whose digests no longer chain, does not stop it first): only the probe stands in the way."""

    def put(module: nn.Module) -> list[str]:
        torch.manual_seed(0)
        replace_listed_file(model_copy / "runs/good/model", "model.pt", script_bytes(module.eval()))
        shutil.rmtree(model_copy / "runs/good/embeddings", ignore_errors=True)
        return [*cli_roots(runs["good"], Path()), "--model-root", str(model_copy)]

    return put


def test_bad_input_model_whose_embedding_size_differs_from_the_index_does_not_go_live(
    with_model, deploy_root, live_worse, capsys
):
    args = with_model(Embedder(16))
    args[args.index("--deploy-root") + 1] = str(deploy_root)
    assert main(args) == 3
    line = one_error_line(capsys, "model.pt returns 16-dimensional embeddings", "index.faiss holds 32-dimensional")
    assert "runs/good/model/model.pt" in line and "runs/good/index/index.faiss" in line
    assert volume_state(deploy_root) == live_worse  # live archive, history and log as they were


@pytest.mark.parametrize(
    ("module", "words"),
    [
        (Unnormalised(32), "not L2-normalised"),
        (NaNs(32), "NaN"),
        (Float64(32), "returned float64 [20, 32], expected float32 [20,D]"),
        (OneRow(32), "returned float32 [1, 32], expected float32 [20,D]"),
        (ThreeDims(32), "returned float32 [20, 1, 32]"),
        (ReturnsTuple(32), "returned tuple, not a tensor"),
        (ColourOnly(), "fails on float32 [20, 1, 28, 28]"),
        (MixesTheBatch(32), "embeds differently alone than in a batch"),
    ],
)
def test_bad_input_model_that_breaks_the_serving_contract_does_not_go_live(
    with_model, deploy_root, live_worse, capsys, module, words
):
    args = with_model(module)
    args[args.index("--deploy-root") + 1] = str(deploy_root)
    assert main(args) == 3
    one_error_line(capsys, "model.pt", words)
    assert volume_state(deploy_root) == live_worse


# -- the deploy volume: what is already there, and the folders deploy writes --------------------------


def test_bad_input_unreadable_live_archive_is_refused_unless_forced(runs, deploy_root, capsys):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    live = deploy_root / "model-store/mnist.mar"
    live.write_bytes(live.read_bytes()[:1000])
    before = volume_state(deploy_root)
    capsys.readouterr()
    assert main(cli_roots(runs["good"], deploy_root)) == 3
    one_error_line(capsys, "mnist.mar", "--force replaces it")
    assert volume_state(deploy_root) == before
    assert main([*cli_roots(runs["good"], deploy_root), "--force"]) == 0
    with zipfile.ZipFile(live) as z:
        assert json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "good"


def test_bad_input_history_entry_made_from_other_artifacts(runs, deploy_root, capsys):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    manifest = deploy_root / "history/good/manifest.json"
    doc = json.loads(manifest.read_text())
    doc["inputs"]["model"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    before = volume_state(deploy_root)
    capsys.readouterr()
    assert main(cli_roots(runs["good"], deploy_root)) == 3
    one_error_line(capsys, "history/good", "deployed from other artifacts")
    assert volume_state(deploy_root) == before


@pytest.mark.parametrize("link", ["model-store", "history"])
def test_bad_input_deploy_folder_that_is_a_symlink_out_of_the_volume(runs, deploy_root, tmp_path, capsys, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    deploy_root.mkdir()
    (deploy_root / link).symlink_to(outside)
    assert main(cli_roots(runs["good"], deploy_root)) == 3
    one_error_line(capsys, link, "leads out of its volume")
    assert list(outside.iterdir()) == []


def test_bad_input_deploy_root_below_a_file_exits_2(runs, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(cli_roots(runs["good"], a_file / "deploy")) == 2
    usage_error(capsys, "--deploy-root", "a-file is a file")
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("folder", ["model-store", "config"])
def test_bad_input_a_file_where_a_deploy_folder_should_be(runs, deploy_root, capsys, folder):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    shutil.rmtree(deploy_root / folder)
    (deploy_root / folder).write_text("in the way")
    capsys.readouterr()
    assert main(cli_roots(runs["good"], deploy_root)) == 3
    one_error_line(capsys, folder)
    assert (deploy_root / folder).read_text() == "in the way"


@pytest.fixture(params=[200, 380])
def small_volume(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A tmpfs too small for a deploy: 200 kB fill up while the sources (~200 kB) are copied into the history
    staging, 380 kB while torch-model-archiver writes the archive (~190 kB) beside them."""
    with tmpfs_volume(tmp_path / "full", request.param) as where:
        yield where


def test_bad_input_full_deploy_volume_exits_5_and_leaves_nothing_half_written(runs, small_volume, capsys):
    assert main(cli_roots(runs["good"], small_volume)) == 5
    one_error_line(capsys, str(small_volume / "history"), "No space left on device", "the disk is full")
    # the lock and an empty history/: no archive, history entry, hidden staging or log line
    assert volume_state(small_volume) == {".deploy.lock": hashlib.sha256(b"").hexdigest(), "history": "dir"}


def test_bad_input_read_only_deploy_volume_exits_5(runs, read_only_volume, capsys):
    assert main(cli_roots(runs["good"], read_only_volume)) == 5
    one_error_line(capsys, str(read_only_volume), "Read-only file system", "read-write")
    assert volume_state(read_only_volume) == {}


# -- rollback's inputs ---------------------------------------------------------------------------------


def test_bad_input_rollback_with_nothing_deployed_creates_nothing(deploy_root, capsys):
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 3
    one_error_line(capsys, "mnist.mar", "nothing to roll back")
    assert not deploy_root.exists()


def test_bad_input_rollback_to_a_corrupted_history_entry_keeps_the_live_one(runs, deploy_root, capsys):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    old = deploy_root / "history/worse/mnist.mar"
    old.write_bytes(old.read_bytes()[:-100])
    before = volume_state(deploy_root)
    capsys.readouterr()
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 3
    one_error_line(capsys, "history/worse/mnist.mar")
    assert volume_state(deploy_root) == before


def test_bad_input_rollback_when_the_log_names_a_version_that_is_no_run_id(runs, deploy_root, capsys):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    log = deploy_root / "deployments.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    forged = {**events[0], "version": "../../etc", "previous": None}
    log.write_text("".join(json.dumps(e) + "\n" for e in (forged, *events)))
    before = volume_state(deploy_root)
    capsys.readouterr()
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 3
    one_error_line(capsys, "deployments.jsonl", "not a run id")
    assert volume_state(deploy_root) == before


# -- serve's inputs (no TorchServe is started: each is refused before) --------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "65536"], "--port"),
        (["--port", "-1"], "--port"),
        (["--management-port", "http"], "--management-port"),
        (["--ready-timeout", "0"], "--ready-timeout"),
        (["--ready-timeout", "3601"], "--ready-timeout"),
        (["--ready-timeout", "nan"], "--ready-timeout"),
        (["--workers", "0"], "--workers"),
        (["--batch-size", "2000"], "--batch-size"),
        (["--max-batch-delay", "-5"], "--max-batch-delay"),
    ],
)
def test_bad_input_serve_option_out_of_range_exits_2(tmp_path, capsys, args, named):
    assert main(["serve", "--runtime", "torchserve", "--deploy-root", str(tmp_path / "deploy"), *args]) == 2
    usage_error(capsys, named)


def test_bad_input_serve_ports_that_collide_exit_2(tmp_path, capsys):
    args = ["serve", "--runtime", "torchserve", "--deploy-root", str(tmp_path), "--port", "9000"]
    args += ["--metrics-port", "9000"]
    assert main(args) == 2
    one_error_line(capsys, "must differ")


@pytest.mark.parametrize("option", ["--deploy-root", "--workdir"])
def test_bad_input_serve_folder_that_is_a_file_exits_2(tmp_path, capsys, option):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    args = ["serve", "--runtime", "torchserve", "--deploy-root", str(tmp_path), option, str(a_file)]
    assert main(args) == 2
    usage_error(capsys, option, "is a file")


def test_bad_input_serve_a_deploy_root_with_nothing_deployed_exits_3(tmp_path, capsys):
    assert main(["serve", "--runtime", "torchserve", "--deploy-root", str(tmp_path), "--quiet"]) == 3
    one_error_line(capsys, "config.properties", "run deploy first")
    assert main(["serve", "--deploy-root", str(tmp_path), "--quiet"]) == 3  # kserve, the default
    one_error_line(capsys, "kserve/mnist/live", "deploy a run first")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--batch-size", "4"], "--batch-size"),  # TorchServe's options with KServe, and the other way round
        (["--management-port", "9001"], "--management-port"),
        (["--runtime", "torchserve", "--poll-interval", "2"], "--poll-interval"),
        (["--runtime", "torchserve", "--model-name", "digits"], "--model-name"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--poll-interval", "61"], "--poll-interval"),
        (["--runtime", "tensorflow"], "--runtime"),
        (["--model-name", "../x"], "--model-name"),
    ],
)
def test_bad_input_serve_options_of_the_other_runtime_or_out_of_range_exit_2(tmp_path, capsys, args, named):
    assert main(["serve", "--deploy-root", str(tmp_path), *args]) == 2
    usage_error(capsys, named)


@pytest.mark.parametrize("target", ["../elsewhere", "/etc", ".hidden", ""])
def test_bad_input_serve_kserve_with_a_live_pointer_off_its_folder_exits_3(runs, deploy_root, capsys, target):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    live = deploy_root / "kserve" / "mnist" / "live"
    live.unlink()
    if target:
        live.symlink_to(target)
    else:
        live.write_text("good\n")  # a file where the link belongs
    capsys.readouterr()
    assert main(["serve", "--deploy-root", str(deploy_root), "--quiet"]) == 3
    one_error_line(capsys, "kserve/mnist/live", "deploy again")


def test_bad_input_serve_kserve_with_a_tampered_version_folder_exits_3(runs, deploy_root, capsys):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    version = deploy_root / "kserve" / "mnist" / runs["good"].paths.run_id
    (version / "labels.npy").write_bytes(b"not the labels")
    capsys.readouterr()
    assert main(["serve", "--deploy-root", str(deploy_root), "--quiet"]) == 3
    one_error_line(capsys, "labels.npy")


def test_bad_input_serve_a_config_without_a_usable_model_snapshot_exits_3(runs, deploy_root, capsys):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    config = deploy_root / "config/config.properties"
    config.write_text(config.read_text().replace('"batchSize":8', '"batchSize":0'))
    capsys.readouterr()
    assert main(["serve", "--runtime", "torchserve", "--deploy-root", str(deploy_root), "--quiet"]) == 3
    one_error_line(capsys, "config.properties", "no usable model_snapshot")


def test_bad_input_every_error_is_one_line_from_a_fresh_process(runs, deploy_root):
    """The same through `python -m`: no traceback even before the entry point's boundary is set up."""
    done = subprocess.run(
        [sys.executable, "-m", "mnist_ct.deploy", *cli_roots(runs["good"], deploy_root), "--workers", "1000"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--workers" in done.stderr


def test_bad_input_serve_kserve_on_a_busy_port_or_the_wrong_folder_exits_3(runs, deploy_root, capsys):
    import socket

    assert main(cli_roots(runs["good"], deploy_root)) == 0
    capsys.readouterr()
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert main(["serve", "--deploy-root", str(deploy_root), "--port", str(taken), "--quiet"]) == 3
        one_error_line(capsys, f"port {taken} is not free", "--port")
    assert main(["serve", "--model-dir", str(deploy_root), "--quiet"]) == 3  # the deploy root, not kserve/mnist
    one_error_line(capsys, "is a deploy root", "kserve/<model>")
