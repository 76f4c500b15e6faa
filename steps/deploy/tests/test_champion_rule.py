"""deploy's second line of defence: where analysis measured the champion (metrics.json `champion`), the live
version must still be the one it measured, and the run is compared with the champion's accuracy on the same
test split (not with the accuracy the champion recorded on its own). Real runs, real archives: the champion's
figure is measured here as analysis measures it, from the live archive (fixture_run.measure_champion).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from fixture_run import FixtureRun, build_run, cli_roots, measure_champion, record_champion

from mnist_ct.artifacts import sha256_file
from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.event_log import read_events


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory, runs: dict[str, FixtureRun]) -> FixtureRun:
    """The `good` network and gallery measured on an easier test split (10 of its 20 digits per class): a higher
    recorded accuracy than `good`'s for the same model."""
    run = build_run(tmp_path_factory.mktemp("easy"), "easy", per_class_test=10)
    assert run.accuracy > runs["good"].accuracy, "the fixture needs a champion whose recorded accuracy is higher"
    return run


@pytest.fixture
def model_root(runs: dict[str, FixtureRun], tmp_path: Path) -> Path:
    """A copy of the runs' model volume, whose analyses get a `champion` as an analysis that measures it writes."""
    copy = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, copy)
    return copy


def deploy(run: FixtureRun, deploy_root: Path, model_root: Path | None = None, *extra: str) -> int:
    args = cli_roots(run, deploy_root)
    if model_root is not None:
        args += ["--model-root", str(model_root)]
    return main([*args, *extra])


def live_version(deploy_root: Path) -> str:
    with zipfile.ZipFile(deploy_root / "model-store/mnist.mar") as z:
        return json.loads(z.read("deployment.json"))["version"]


def refusal_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deploy: error: refused: ") and "--force" in err[0], err
    return err[0]


def test_a_first_run_measured_against_no_champion_deploys_and_records_it(runs, deploy_root, model_root):
    record_champion(runs["good"], model_root, None, versions={"analysis": "0.4.0", "deploy": "0.4.0"})

    assert deploy(runs["good"], deploy_root, model_root) == 0

    event = read_events(deploy_root)[-1]
    assert (event["event"], event["champion"], event["champion_accuracy"]) == ("deploy", None, None)
    assert event["versions"] == {"analysis": "0.4.0", "deploy": "0.4.0"}  # analysis' record of the run
    record = json.loads((deploy_root / "history/good/deployment.json").read_text())
    assert record["champion"] is None and record["blessing"]["blessed"] is True
    assert record["versions"] == event["versions"]


def test_a_challenger_below_the_champion_on_the_same_test_split_is_refused(runs, deploy_root, model_root, capsys):
    assert deploy(runs["good"], deploy_root) == 0
    before = sha256_file(deploy_root / "model-store/mnist.mar")
    champion = measure_champion(deploy_root, runs["worse"].test)  # the live `good`, on worse's test split
    assert champion is not None and champion["version"] == "good"
    assert champion["accuracy"] == pytest.approx(runs["good"].accuracy)  # the same split here: the same figure
    record_champion(runs["worse"], model_root, champion)
    capsys.readouterr()

    assert deploy(runs["worse"], deploy_root, model_root) == 4

    line = refusal_line(capsys)
    assert (
        f"run worse has accuracy {runs['worse'].accuracy:.4f}, below the champion version good "
        f"({champion['accuracy']:.4f} on the same test split)" in line
    )
    assert sha256_file(deploy_root / "model-store/mnist.mar") == before
    assert not (deploy_root / "history/worse").exists()
    event = read_events(deploy_root)[-1]
    assert (event["event"], event["champion"], event["champion_accuracy"]) == ("refused", "good", champion["accuracy"])
    assert event["reason"] in line


def test_the_champion_is_compared_on_this_runs_test_split_not_on_its_recorded_accuracy(
    runs, easy, deploy_root, model_root, capsys
):
    # `easy` went live with a higher accuracy than `good`, measured on an easier test split. On good's split the
    # champion scores what good scores (the same network and gallery): a tie, so good deploys.
    assert deploy(easy, deploy_root) == 0
    assert deploy(runs["good"], deploy_root) == 4  # an older analysis (no `champion`): today's check refuses
    champion = measure_champion(deploy_root, runs["good"].test)
    assert champion is not None and champion["version"] == "easy"
    assert champion["accuracy"] == runs["good"].accuracy < easy.accuracy  # a tie on this split
    record_champion(runs["good"], model_root, champion)

    assert deploy(runs["good"], deploy_root, model_root) == 0

    assert live_version(deploy_root) == "good"
    event = read_events(deploy_root)[-1]
    assert (event["event"], event["previous"], event["previous_accuracy"]) == ("deploy", "easy", easy.accuracy)
    assert (event["champion"], event["champion_accuracy"]) == ("easy", champion["accuracy"])
    capsys.readouterr()
    assert main(["history", "--deploy-root", str(deploy_root)]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if " deploy  mnist version good " in line]
    assert shown and shown[-1].endswith(f"champion easy {champion['accuracy']:.4f} on the same test split")


def test_a_live_version_that_changed_since_analysis_measured_is_refused(runs, easy, deploy_root, model_root, capsys):
    assert deploy(runs["worse"], deploy_root) == 0
    record_champion(runs["good"], model_root, measure_champion(deploy_root, runs["good"].test))  # against `worse`
    assert deploy(easy, deploy_root) == 0  # another run went live in between
    capsys.readouterr()

    assert deploy(runs["good"], deploy_root, model_root) == 4

    line = refusal_line(capsys)
    assert "analysis measured run good against champion version worse, but version easy is live now" in line
    assert "rerun analysis" in line
    assert live_version(deploy_root) == "easy"
    event = read_events(deploy_root)[-1]
    assert (event["event"], event["live"], event["champion"]) == ("refused", "easy", "worse")
    assert deploy(runs["good"], deploy_root, model_root, "--force") == 0  # deploy anyway
    assert live_version(deploy_root) == "good" and read_events(deploy_root)[-1]["forced"] is True


def test_measured_against_no_champion_while_one_is_live_now_is_refused(runs, deploy_root, model_root, capsys):
    record_champion(runs["good"], model_root, None)  # nothing was live when analysis ran
    assert deploy(runs["worse"], deploy_root) == 0
    capsys.readouterr()

    assert deploy(runs["good"], deploy_root, model_root) == 4

    line = refusal_line(capsys)
    assert "against no champion (nothing was live), but version worse is live now" in line
    assert live_version(deploy_root) == "worse"


def test_measured_against_a_champion_while_nothing_is_live_now_is_refused(runs, deploy_root, model_root, capsys):
    other = deploy_root.parent / "other-deploy"  # where analysis found `worse` live
    assert deploy(runs["worse"], other) == 0
    record_champion(runs["good"], model_root, measure_champion(other, runs["good"].test))
    capsys.readouterr()

    assert deploy(runs["good"], deploy_root, model_root) == 4  # a deploy root where nothing is live

    assert "against champion version worse, but nothing is live now" in refusal_line(capsys)
    assert not (deploy_root / "model-store/mnist.mar").exists() and not (deploy_root / "history/good").exists()
    assert read_events(deploy_root)[-1]["event"] == "refused"


def test_a_live_archive_other_than_the_one_analysis_measured_is_refused(runs, deploy_root, model_root, capsys):
    assert deploy(runs["worse"], deploy_root) == 0
    champion = measure_champion(deploy_root, runs["good"].test)
    assert champion is not None
    record_champion(runs["good"], model_root, {**champion, "archive_sha256": "0" * 64})
    capsys.readouterr()

    assert deploy(runs["good"], deploy_root, model_root) == 4

    assert "of version worse is not the one analysis measured run good against (sha256 000000000000)" in (
        refusal_line(capsys)
    )


def test_redeploying_the_live_run_is_no_challenge(runs, deploy_root, model_root):
    # A retried deploy task: analysis measured `worse`, the first try made good live, the retry finds good live.
    assert deploy(runs["worse"], deploy_root) == 0
    record_champion(runs["good"], model_root, measure_champion(deploy_root, runs["good"].test))
    assert deploy(runs["good"], deploy_root, model_root) == 0
    assert deploy(runs["good"], deploy_root, model_root) == 0
    assert live_version(deploy_root) == "good"


@pytest.mark.parametrize(
    ("champion", "words"),
    [
        (3, "'champion' must be null or an object"),
        ({"accuracy": 0.9}, "champion.version must be the run id of a deployed version, got None"),
        ({"version": "../good", "accuracy": 0.9}, "champion.version must be the run id"),
        ({"version": "good", "accuracy": 1.5}, "champion.accuracy must be a number in 0..1, got 1.5"),
        ({"version": "good", "accuracy": True}, "champion.accuracy must be a number in 0..1"),
        ({"version": "good", "accuracy": 0.9, "archive_sha256": 5}, "champion.archive_sha256 must be a string"),
    ],
)
def test_bad_input_a_malformed_champion_in_metrics_exits_3_before_the_volume_is_touched(
    runs, deploy_root, model_root, capsys, champion, words
):
    record_champion(runs["good"], model_root, champion)

    assert deploy(runs["good"], deploy_root, model_root) == 3

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json" in err[0] and words in err[0], err
    assert not deploy_root.exists()
