"""`mnist-ct release` against a fake KFP v2beta1 API on 127.0.0.1 (tests/kfp_api.py): no cluster runs here."""

import socket
import time
from importlib import metadata

import pytest
import yaml
from conftest import fake_digest, lock_with, release

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import read_lock, write_lock
from mnist_ct.orchestration.pipeline import ORDER
from mnist_ct.orchestration.release import version_name

TOKEN = "tok-3f9a-never-print-me"


pytestmark = pytest.mark.usefixtures("isolated_kfp_config")  # the unreachable-host test too


def writes(api):
    return [(r.method, r.path.removeprefix("/apis/v2beta1")) for r in api.state.requests if r.method != "GET"]


def test_first_release_creates_the_pipeline_with_one_lock_named_version(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file) == 0
    name = version_name(read_lock(pinned_lock_file))
    assert name == f"{metadata.version('mnist-ct-orchestration')}-{read_lock(pinned_lock_file).content_hash()[:12]}"
    [pipeline] = api.state.pipelines.values()
    assert pipeline["display_name"] == "mnist-ct"
    # KFP named the upload's first version after the pipeline; release replaced it with the named one.
    assert [v["display_name"] for v in api.state.versions[pipeline["pipeline_id"]]] == [name]
    assert writes(api) == [
        ("POST", "/pipelines/upload"),
        ("POST", "/pipelines/upload_version"),
        ("DELETE", f"/pipelines/{pipeline['pipeline_id']}/versions/version-0002"),
    ]
    uploaded = next(yaml.safe_load_all(api.state.uploads[-1]))
    images = sorted(e["container"]["image"] for e in uploaded["deploymentSpec"]["executors"].values())
    assert images == sorted(f"{read_lock(pinned_lock_file).packages[s].image}@{fake_digest(s)}" for s in ORDER)
    assert f"created pipeline mnist-ct (pipeline-0001) and version {name}" in capsys.readouterr().out


def test_releasing_the_same_lock_again_uploads_nothing_and_says_so(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file) == 0
    before = writes(api)
    capsys.readouterr()
    assert release(api, pinned_lock_file) == 0
    assert writes(api) == before
    name = version_name(read_lock(pinned_lock_file))
    assert f"version {name} of mnist-ct already exists (version-0003): nothing uploaded" in capsys.readouterr().out


def test_a_changed_lock_uploads_a_new_version(api, pinned_lock_file, tmp_path):
    assert release(api, pinned_lock_file) == 0
    changed = tmp_path / "changed.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "train_model": fake_digest("train_model v2")}), changed)
    assert release(api, changed) == 0
    [pid] = api.state.versions
    names = [v["display_name"] for v in api.state.versions[pid]]
    assert names == [version_name(read_lock(pinned_lock_file)), version_name(read_lock(changed))]
    assert names[0] != names[1]
    assert (
        f"{read_lock(changed).packages['train_model'].image}@{fake_digest('train_model v2')}".encode()
        in (api.state.uploads[-1])
    )


def test_run_starts_a_run_of_the_version_with_typed_parameters_and_reuses_the_experiment(api, pinned_lock_file):
    args = ["--run", "--experiment", "ct", "-p", "epochs=2", "-p", "baseline=0.9", "-p", "dataset=fashion-mnist"]
    assert release(api, pinned_lock_file, *args) == 0
    assert release(api, pinned_lock_file, "--run", "--experiment", "ct") == 0
    assert [e["display_name"] for e in api.state.experiments.values()] == ["ct"]
    first, second = api.state.runs
    [pid] = api.state.versions
    [version] = api.state.versions[pid]
    assert first["pipeline_version_reference"] == {
        "pipeline_id": pid,
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert first["runtime_config"]["parameters"] == {"epochs": 2, "baseline": 0.9, "dataset": "fashion-mnist"}
    assert second["runtime_config"].get("parameters", {}) == {}


def test_dry_run_looks_up_but_writes_nothing(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--dry-run", "--run") == 0
    assert writes(api) == []
    out = capsys.readouterr().out
    name = version_name(read_lock(pinned_lock_file))
    assert f"dry run: would create pipeline mnist-ct with version {name}" in out
    assert "dry run: would start a run in experiment mnist-ct (defaults)" in out
    assert ("GET", "/apis/v2beta1/pipelines") in [(r.method, r.path) for r in api.state.requests]


def test_the_token_is_sent_but_never_printed(api, pinned_lock_file, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_CT_KFP_TOKEN", TOKEN)
    assert release(api, pinned_lock_file, "--run") == 0
    assert release(api, pinned_lock_file, "--package", "/nonexistent.yaml") == 3  # an error path too
    auth = {r.authorization for r in api.state.requests if r.path != "/apis/v2beta1/healthz"}
    assert auth == {f"Bearer {TOKEN}"}
    out, err = capsys.readouterr()
    assert TOKEN not in out + err


def test_an_unreachable_host_fails_fast(pinned_lock_file, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    started = time.monotonic()
    # The images are not what this test is about (test_release_images.py): the KFP host is.
    argv = ["release", "--host", f"http://127.0.0.1:{port}", "--lock", str(pinned_lock_file), "--skip-image-check"]
    assert main(argv) == 4
    assert time.monotonic() - started < 5
    assert f"cannot reach KFP at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_a_dev_build_is_refused_before_anything_is_sent(api, pinned_lock_file, dev_yaml, capsys):
    assert release(api, pinned_lock_file, "--package", str(dev_yaml)) == 3
    assert "refusing to release" in capsys.readouterr().err
    assert api.state.requests == []


def test_an_unpinned_lock_is_refused_naming_the_steps(api, tmp_path, capsys):
    lock_file = tmp_path / "lock.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "deploy": None}), lock_file)
    assert release(api, lock_file) == 3
    assert "1 step(s) not pinned by digest in the image lock: deploy" in capsys.readouterr().err
    assert api.state.requests == []


def test_a_released_package_must_match_the_lock(api, pinned_lock_file, strict_yaml, tmp_path, capsys):
    assert release(api, pinned_lock_file, "--package", str(strict_yaml)) == 0  # compiled from the same lock
    other = tmp_path / "other.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "validate": fake_digest("v2")}), other)
    assert release(api, other, "--package", str(strict_yaml)) == 3
    assert "step validate (exec-validate): image" in capsys.readouterr().err


def test_an_unknown_parameter_is_refused_before_anything_is_sent(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--run", "-p", "learning_rate=1") == 3
    assert "unknown pipeline parameter(s) learning_rate" in capsys.readouterr().err
    assert api.state.requests == []


def test_an_api_error_is_one_line_with_exit_code_4(api, pinned_lock_file, tmp_path, capsys):
    assert release(api, pinned_lock_file) == 0
    changed = tmp_path / "changed.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "deploy": fake_digest("deploy v2")}), changed)
    api.failures[("POST", "/pipelines/upload_version")] = (503, "database is locked")
    capsys.readouterr()
    assert release(api, changed) == 4
    err = capsys.readouterr().err
    assert err.startswith("mnist-ct release: error: KFP refused uploading the version: HTTP 503")
    assert "database is locked" in err
    assert len(err.strip().splitlines()) == 1
