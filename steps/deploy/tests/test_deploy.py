"""deploy: the archive, history, the live archive, the log, champion/challenger, rollback, bad input."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from fixture_run import cli_roots

from mnist_ct.artifacts import read_verified, sha256_file
from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.deployment import read_events
from mnist_ct.deploy.serving_config import parse

EXPECTED = {
    "MAR-INF/MANIFEST.json",
    "model.pt",
    "handler.py",
    "index.faiss",
    "labels.npy",
    "deployment.json",
    "requirements.txt",
}


def live(deploy_root: Path) -> Path:
    return deploy_root / "model-store" / "mnist.mar"


def live_version(deploy_root: Path) -> str:
    with zipfile.ZipFile(live(deploy_root)) as z:
        return json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]


def test_archive_unpacks_with_the_run_files_handler_and_metadata(runs, deploy_root, tmp_path):
    good = runs["good"]
    assert main(cli_roots(good, deploy_root)) == 0
    out = tmp_path / "unpacked"
    with zipfile.ZipFile(live(deploy_root)) as z:
        assert set(z.namelist()) == EXPECTED
        z.extractall(out)
    manifest = json.loads((out / "MAR-INF/MANIFEST.json").read_text())["model"]
    assert (manifest["modelName"], manifest["modelVersion"]) == ("mnist", "good")
    assert (manifest["serializedFile"], manifest["handler"]) == ("model.pt", "handler.py")
    p = good.paths
    assert (out / "model.pt").read_bytes() == (p.model / "model.pt").read_bytes()
    assert (out / "index.faiss").read_bytes() == (p.index / "index.faiss").read_bytes()
    assert (out / "labels.npy").read_bytes() == (p.index / "labels.npy").read_bytes()
    handler_src = Path(__file__).parents[1] / "src/mnist_ct/deploy/handler.py"
    assert (out / "handler.py").read_bytes() == handler_src.read_bytes()
    assert (out / "requirements.txt").read_text().startswith("faiss-cpu")
    meta = json.loads((out / "deployment.json").read_text())
    assert meta["accuracy"] == pytest.approx(good.accuracy)
    assert meta["run_id"] == "good" and meta["serving"]["k"] == 1 and meta["serving"]["vote"] == "majority"
    assert meta["inputs"]["model"] == read_verified(p.model).digest
    assert meta["lineage"]["embeddings"]["digest"] == read_verified(p.embeddings).digest


def test_history_keeps_each_version_verified_and_the_log_records_it(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    for run in ("worse", "good"):
        m = read_verified(deploy_root / "history" / run, "deployment")
        assert m.meta["run_id"] == run and m.meta["accuracy"] == pytest.approx(runs[run].accuracy)
        assert set(m.files) == {"mnist.mar", "deployment.json"}
    assert sha256_file(live(deploy_root)) == sha256_file(deploy_root / "history/good/mnist.mar")
    events = read_events(deploy_root)
    assert [(e["event"], e["version"], e["previous"]) for e in events] == [
        ("deploy", "worse", None),
        ("deploy", "good", "worse"),
    ]
    assert events[1]["mar_sha256"] == sha256_file(live(deploy_root))


def test_config_properties_follow_kserve_layout(runs, deploy_root):
    assert main([*cli_roots(runs["good"], deploy_root), "--workers", "3", "--batch-size", "4"]) == 0
    props = parse((deploy_root / "config/config.properties").read_text())
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["inference_address"] == "http://0.0.0.0:8085"
    assert props["disable_token_authorization"] == "true"
    assert props["install_py_dep_per_model"] == "true"  # faiss-cpu from the archive's requirements.txt
    entry = json.loads(props["model_snapshot"])["models"]["mnist"]["1.0"]
    assert entry["marName"] == "mnist.mar"
    assert (entry["minWorkers"], entry["maxWorkers"], entry["batchSize"]) == (3, 3, 4)


def test_worse_challenger_is_refused_with_exit_4_and_one_line(runs, deploy_root, capsys):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    before = sha256_file(live(deploy_root))
    capsys.readouterr()
    assert main(cli_roots(runs["worse"], deploy_root)) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "below the live version good" in err[0] and "--force" in err[0]
    assert sha256_file(live(deploy_root)) == before
    assert not (deploy_root / "history/worse").exists()
    assert read_events(deploy_root)[-1]["event"] == "refused"


def test_force_deploys_a_worse_challenger(runs, deploy_root):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert main([*cli_roots(runs["worse"], deploy_root), "--force"]) == 0
    assert live_version(deploy_root) == "worse"
    assert read_events(deploy_root)[-1]["forced"] is True


def test_equal_or_better_challenger_is_deployed(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert live_version(deploy_root) == "good"


def test_rollback_restores_the_previous_version_then_refuses_past_the_first(runs, deploy_root, capsys):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    rollback = ["--rollback", "--deploy-root", str(deploy_root), "--quiet"]
    assert main(rollback) == 0
    assert live_version(deploy_root) == "worse"
    assert sha256_file(live(deploy_root)) == sha256_file(deploy_root / "history/worse/mnist.mar")
    last = read_events(deploy_root)[-1]
    assert (last["event"], last["version"], last["from"]) == ("rollback", "worse", "good")
    capsys.readouterr()
    assert main(rollback) == 3
    assert "nothing to roll back to" in capsys.readouterr().err
    assert live_version(deploy_root) == "worse"


def test_redeploying_the_same_run_reuses_its_history_entry(runs, deploy_root):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    manifest = (deploy_root / "history/good/manifest.json").read_bytes()
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert (deploy_root / "history/good/manifest.json").read_bytes() == manifest
    assert live_version(deploy_root) == "good"


def test_changed_model_file_is_bad_input_and_nothing_is_deployed(runs, deploy_root, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, copy)
    model_pt = copy / "runs/good/model/model.pt"
    model_pt.write_bytes(model_pt.read_bytes()[:-10])
    args = [*cli_roots(runs["good"], deploy_root), "--model-root", str(copy)]
    assert main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pt" in err[0] and "manifest" in err[0]
    assert not live(deploy_root).exists()


def test_index_of_another_run_is_refused_by_lineage(runs, deploy_root, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, copy)
    shutil.rmtree(copy / "runs/good/index")
    shutil.copytree(copy / "runs/worse/index", copy / "runs/good/index")
    assert main([*cli_roots(runs["good"], deploy_root), "--model-root", str(copy)]) == 3
    assert "built from other embeddings" in capsys.readouterr().err


def test_missing_analysis_is_bad_input(runs, deploy_root, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, copy)
    (copy / "runs/good/analysis/manifest.json").unlink()
    assert main([*cli_roots(runs["good"], deploy_root), "--model-root", str(copy)]) == 3
    assert "analysis" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--model-name", "bad/name"], ["--run-id", "../escape"]])
def test_bad_usage_exits_2(runs, deploy_root, args):
    assert main([*cli_roots(runs["good"], deploy_root), *args]) == 2


def test_run_id_is_required_unless_rolling_back(deploy_root):
    with pytest.raises(SystemExit) as e:
        main(["--deploy-root", str(deploy_root)])
    assert e.value.code == 2


class _Marker:
    """Unpickling this creates a file: the proof that a loader unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_model_with_a_valid_manifest_is_refused_unloaded(runs, deploy_root, tmp_path, capsys):
    import pickle

    copy = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, copy)
    folder = copy / "runs/good/model"
    marker = tmp_path / "unpickled"
    (folder / "model.pt").write_bytes(pickle.dumps(_Marker(marker)))
    # The manifest is made to match, so only the TorchScript check stands between the pickle and TorchServe.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["model.pt"] = {
        "sha256": sha256_file(folder / "model.pt"),
        "bytes": (folder / "model.pt").stat().st_size,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert main([*cli_roots(runs["good"], deploy_root), "--model-root", str(copy)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a TorchScript archive" in err[0]
    assert not marker.exists() and not live(deploy_root).exists()
