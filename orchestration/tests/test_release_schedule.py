"""`mnist-ct release --schedule CRON` / `--unschedule` against the recording KFP v2beta1 API (tests/kfp_api.py)."""

import json

import pytest
from conftest import fake_digest, lock_with, release

from mnist_ct.artifacts import UsageError
from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import read_lock, write_lock
from mnist_ct.orchestration.pipeline import ORDER
from mnist_ct.orchestration.release import check_cron, version_name

pytestmark = pytest.mark.usefixtures("isolated_kfp_config")

NAME = "mnist-ct schedule"
DAILY = "0 0 3 * * *"


def writes(api):
    return [(r.method, r.path.removeprefix("/apis/v2beta1")) for r in api.state.requests if r.method != "GET"]


def version_id(api) -> str:
    [pid] = api.state.versions
    return api.state.versions[pid][-1]["pipeline_version_id"]


def test_schedule_creates_one_recurring_run_of_the_released_version(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--schedule", DAILY, "--experiment", "ct", "-p", "epochs=2") == 0
    [recurring] = api.state.recurring_runs.values()
    [pid] = api.state.versions
    [experiment] = api.state.experiments.values()
    assert experiment["display_name"] == "ct"
    assert recurring["display_name"] == NAME
    assert recurring["experiment_id"] == experiment["experiment_id"]
    assert recurring["pipeline_version_reference"] == {"pipeline_id": pid, "pipeline_version_id": version_id(api)}
    assert recurring["trigger"] == {"cron_schedule": {"cron": DAILY}}
    assert recurring["max_concurrency"] == "1"
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["runtime_config"]["parameters"] == {"epochs": 2}
    assert writes(api)[-2:] == [("POST", "/experiments"), ("POST", "/recurringruns")]
    assert api.calls("GET", "/recurringruns") == []  # a new experiment: nothing to look for
    out = capsys.readouterr().out
    name = version_name(read_lock(pinned_lock_file))
    assert f"created schedule '{NAME}' in experiment ct: cron '{DAILY}', version {name} (recurring-" in out
    assert "max concurrency 1, no catch-up" in out
    assert api.state.runs == []  # --schedule starts no run itself


def test_the_same_schedule_again_changes_nothing(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--schedule", DAILY) == 0
    before = writes(api)
    [first] = api.state.recurring_runs
    capsys.readouterr()
    assert release(api, pinned_lock_file, "--schedule", "0  0 3 * * *") == 0  # the same cron, spaced otherwise
    assert writes(api) == before
    assert list(api.state.recurring_runs) == [first]
    assert f"is already there ({first}): unchanged" in capsys.readouterr().out
    listed = api.calls("GET", "/recurringruns")[-1]  # looked up by name, in the experiment
    [experiment] = api.state.experiments
    assert listed.query["experiment_id"] == experiment
    assert json.loads(listed.query["filter"])["predicates"][0] == {
        "operation": "EQUALS",
        "key": "display_name",
        "stringValue": NAME,
    }


def test_another_cron_replaces_the_schedule_delete_then_create(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--schedule", DAILY) == 0
    [first] = api.state.recurring_runs
    n = len(writes(api))
    assert release(api, pinned_lock_file, "--schedule", "@hourly") == 0
    assert writes(api)[n:] == [("DELETE", f"/recurringruns/{first}"), ("POST", "/recurringruns")]
    [recurring] = api.state.recurring_runs.values()
    assert recurring["trigger"] == {"cron_schedule": {"cron": "@hourly"}}
    out = capsys.readouterr().out
    assert f"replace ({first}) schedule '{NAME}' in experiment mnist-ct: cron '@hourly'" in out
    assert f"replaced schedule '{NAME}' in experiment mnist-ct: cron '@hourly'" in out
    assert f"({first} -> recurring-" in out


def test_a_new_release_moves_the_schedule_to_the_new_version(api, pinned_lock_file, tmp_path):
    assert release(api, pinned_lock_file, "--schedule", DAILY) == 0
    changed = tmp_path / "changed.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "train_model": fake_digest("train_model v2")}), changed)
    assert release(api, changed, "--schedule", DAILY) == 0
    [recurring] = api.state.recurring_runs.values()
    assert recurring["pipeline_version_reference"]["pipeline_version_id"] == version_id(api)
    [pid] = api.state.versions
    assert [v["display_name"] for v in api.state.versions[pid]][-1] == version_name(read_lock(changed))


def test_other_parameters_replace_the_schedule(api, pinned_lock_file):
    assert release(api, pinned_lock_file, "--schedule", DAILY) == 0
    assert release(api, pinned_lock_file, "--schedule", DAILY, "-p", "min_improvement=0.01") == 0
    [recurring] = api.state.recurring_runs.values()
    assert recurring["runtime_config"]["parameters"] == {"min_improvement": 0.01}
    assert [m for m, _ in writes(api)].count("DELETE") == 2  # KFP's unnamed first version, then the old schedule


def test_dry_run_schedule_says_what_it_would_do_and_writes_nothing(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--schedule", DAILY) == 0
    before = writes(api)
    capsys.readouterr()
    assert release(api, pinned_lock_file, "--schedule", "@daily", "--dry-run") == 0
    assert writes(api) == before
    assert "dry run: would replace (recurring-" in capsys.readouterr().out


def test_unschedule_removes_it_and_says_so_when_there_is_none(api, pinned_lock_file, capsys):
    host = ["release", "--host", api.url, "--experiment", "ct"]
    assert main([*host, "--unschedule"]) == 0
    assert f"no schedule '{NAME}' in experiment ct (no such experiment)" in capsys.readouterr().out
    assert release(api, pinned_lock_file, "--schedule", DAILY, "--experiment", "ct") == 0
    [rid] = api.state.recurring_runs
    n = len(writes(api))
    assert main([*host, "--unschedule", "--dry-run"]) == 0
    assert writes(api)[n:] == []
    assert main([*host, "--unschedule"]) == 0
    assert writes(api)[n:] == [("DELETE", f"/recurringruns/{rid}")]
    assert api.state.recurring_runs == {}
    assert api.state.versions  # the pipeline and its versions stay
    out = capsys.readouterr().out
    assert f"removed schedule '{NAME}' ({rid}) from experiment ct" in out
    assert main([*host, "--unschedule"]) == 0
    assert f"no schedule '{NAME}' in experiment ct at {api.url}: nothing to remove" in capsys.readouterr().out


def test_unschedule_releases_nothing(api, capsys):
    assert main(["release", "--host", api.url, "--unschedule", "--run"]) == 2
    assert "--unschedule releases nothing: drop --run" in capsys.readouterr().err
    assert main(["release", "--host", api.url, "--unschedule", "--schedule", DAILY]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert api.state.requests == []


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        (
            "0 3 * * *",
            "has 5 fields, which KFP would read as second minute hour day-of-month month; for the crontab "
            "line you mean, put the seconds first: --schedule '0 0 3 * * *'",
        ),
        ("0 0 3 * *  * *", "has 7 fields"),
        ("", "has 0 fields"),
        ("60 0 3 * * *", "the second field '60': '60' is outside 0-59"),
        ("0 0 24 * * *", "the hour field '24': '24' is outside 0-23"),
        ("0 0 3 0 * *", "the day of month field '0': '0' is outside 1-31"),
        ("0 0 3 * 13 *", "the month field '13'"),
        ("0 0 3 * * 7", "the day of week field '7': '7' is outside 0-6"),
        ("0 */0 * * * *", "step 0 in '*/0'"),
        ("0 5-1 * * * *", "'5-1' starts after it ends"),
        ("0 x * * * *", "'x' is not a number"),
        ("0 0 3 * * funday", "'funday' is not a number or a name (sun, mon"),
        ("@fortnightly", "unknown descriptor"),
        ("@every 0s", "@every needs at least 1s"),
    ],
)
def test_a_bad_cron_is_bad_usage_before_anything_is_sent(api, pinned_lock_file, capsys, cron, why):
    assert release(api, pinned_lock_file, "--schedule", cron) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage, then the one error line
    assert last.startswith(f"mnist-ct release: error: argument --schedule: cron {cron!r}")
    assert why in last
    assert api.state.requests == []


@pytest.mark.parametrize(
    "cron",
    ["0 0 3 * * *", "*/30 * * * * ?", "0 0 9 ? * 2-6", "0 0/10 * * * ?", "0 15 10 * JAN-mar mon,Wed,FRI",
     "0 0 0 1 */2 *", "@daily", "@midnight", "@every 6h", "@every 1h30m", "  0 0 3 * * *  "],
)  # fmt: skip
def test_crons_kfp_accepts_pass_whitespace_normalised(cron):
    assert check_cron(cron) == " ".join(cron.split())


def test_check_cron_is_a_usage_error_for_the_api_too():
    with pytest.raises(UsageError, match="has 5 fields"):
        check_cron("*/5 * * * *")


def test_run_and_schedule_together_as_main_yml_releases(api, pinned_lock_file):
    """main.yml on a push: release the pinned version, start one run of it, move the schedule to it."""
    assert release(api, pinned_lock_file, "--run", "--schedule", DAILY) == 0
    [run] = api.state.runs
    [recurring] = api.state.recurring_runs.values()
    assert run["pipeline_version_reference"] == recurring["pipeline_version_reference"]
    assert run["pipeline_version_reference"]["pipeline_version_id"] == version_id(api)
    assert len(api.state.experiments) == 1  # the run's experiment is the schedule's


def test_a_failed_replacement_says_the_old_schedule_is_gone(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--schedule", DAILY) == 0
    [old] = api.state.recurring_runs
    api.failures[("POST", "/recurringruns")] = (503, "database is locked")
    capsys.readouterr()
    assert release(api, pinned_lock_file, "--schedule", "@daily") == 4
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mnist-ct release: error: KFP refused creating the recurring run: HTTP 503")
    assert line.endswith(f"the old schedule ({old}) was removed: run release --schedule again")
    assert api.state.recurring_runs == {}
