"""deploy: the archive, history, the live archive, the log, champion/challenger, rollback, the README."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from fixture_run import cli_roots

from mnist_ct.artifacts import digits, knn, read_verified, sha256_file
from mnist_ct.artifacts.testing import assert_readme_documents
from mnist_ct.deploy.__main__ import build_parser, build_serve_parser, main
from mnist_ct.deploy.event_log import read_events
from mnist_ct.deploy.serving_config import parse

README = Path(__file__).parents[1] / "README.md"

EXPECTED = {
    "MAR-INF/MANIFEST.json",
    "model.pt",
    "handler.py",
    "index.faiss",
    "labels.npy",
    "deployment.json",
    "requirements.txt",
    "mnist_ct_knn.py",
    "mnist_ct_digits.py",
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
    assert (out / "mnist_ct_knn.py").read_bytes() == Path(knn.__file__).read_bytes()  # the one vote, copied
    assert (out / "mnist_ct_digits.py").read_bytes() == Path(digits.__file__).read_bytes()  # the one decoding
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


def test_readme_options_section_lists_every_deploy_option():
    assert_readme_documents(build_parser(), README, "Options")


def test_readme_serve_options_section_lists_every_serve_option():
    assert_readme_documents(build_serve_parser(), README, "Serve options")


def test_a_rollback_needs_no_run_id(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 0
    assert live_version(deploy_root) == "worse"


def test_rollback_writes_the_batching_the_version_was_deployed_with(runs, deploy_root):
    assert main([*cli_roots(runs["worse"], deploy_root), "--batch-size", "3", "--max-request-mb", "1.5"]) == 0
    assert main([*cli_roots(runs["good"], deploy_root), "--batch-size", "16"]) == 0
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 0
    props = parse((deploy_root / "config/config.properties").read_text())
    assert json.loads(props["model_snapshot"])["models"]["mnist"]["1.0"]["batchSize"] == 3
    assert props["max_request_size"] == str(round(1.5 * 2**20))


def test_serving_root_sets_the_model_store_of_the_config(runs, deploy_root):
    assert main([*cli_roots(runs["good"], deploy_root), "--serving-root", "/srv/models/"]) == 0
    props = parse((deploy_root / "config/config.properties").read_text())
    assert props["model_store"] == "/srv/models/model-store"


def test_handler_settings_go_into_the_archive(runs, deploy_root):
    args = [*cli_roots(runs["good"], deploy_root), "--max-pixels", "1000000", "--threads-per-worker", "2"]
    assert main(args) == 0
    with zipfile.ZipFile(live(deploy_root)) as z:
        serving = json.loads(z.read("deployment.json"))["serving"]
    assert (serving["max_pixels"], serving["threads"]) == (1_000_000, 2)


def test_a_live_archive_of_a_deploy_0_1_0_without_the_vote_file_is_still_read(runs, deploy_root, tmp_path):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    old = tmp_path / "old.mar"
    with zipfile.ZipFile(live(deploy_root)) as z, zipfile.ZipFile(old, "w") as out:
        for item in z.infolist():
            if item.filename != "mnist_ct_knn.py":
                out.writestr(item, z.read(item))
    live(deploy_root).write_bytes(old.read_bytes())
    assert main(cli_roots(runs["good"], deploy_root)) == 0  # the champion's accuracy was read from it
    assert read_events(deploy_root)[-1]["previous"] == "worse"
