import json
from pathlib import Path

import pytest
import yaml
from conftest import fake_digest, lock_with, pinned_lock

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.compiling import verify
from mnist_ct.orchestration.errors import OrchestrationError
from mnist_ct.orchestration.lock import LOCK_PATH, read_lock, write_lock
from mnist_ct.orchestration.pipeline import DEV_MARKER, ORDER
from mnist_ct.orchestration.spec import CompiledPipeline, load, parse


def docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def rewrite(path: Path, tmp_path: Path, change) -> Path:
    """A copy of a compiled pipeline with `change(spec_doc, platform_doc)` applied."""
    spec, platform = docs(path)
    change(spec, platform)
    out = tmp_path / "changed.yaml"
    out.write_text(yaml.safe_dump_all([spec, platform]))
    return out


def problems_of(path: Path, dev: bool = False) -> list[str]:
    lock = lock_with(dict.fromkeys(ORDER)) if dev else pinned_lock()
    with pytest.raises(OrchestrationError) as e:
        verify(path, lock, dev)
    return [e.value.message, *e.value.problems]


def test_strict_compile_pins_every_image_to_the_lock(tmp_path, pinned_lock_file, capsys):
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "-o", str(out), "--lock", str(pinned_lock_file)]) == 0
    assert "strict check passed" in capsys.readouterr().out
    compiled = load(out)
    lock = json.loads(pinned_lock_file.read_text())["packages"]
    images = {e["container"]["command"][2]: e["container"]["image"] for e in compiled.executors.values()}
    assert images == {f"mnist_ct.{s}": f"{lock[s]['image']}@{fake_digest(s)}" for s in ORDER}
    assert not compiled.description.startswith(DEV_MARKER)


def test_strict_compile_without_digests_names_every_unpinned_step(tmp_path, unpinned_lock_file, capsys):
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "-o", str(out), "--lock", str(unpinned_lock_file)]) == 3
    err = capsys.readouterr().err
    assert "7 step(s) not pinned by digest" in err
    for step in ORDER:
        assert f"step {step}: " in err
    assert not out.exists()


def test_strict_compile_names_only_the_steps_without_digest(tmp_path, capsys):
    lock = pinned_lock()
    lock_path = tmp_path / "lock.json"
    partial = lock_with({**{s: fake_digest(s) for s in ORDER}, "validate": None, "deploy": None})
    write_lock(partial, lock_path)
    assert lock.content_hash() != partial.content_hash()
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--lock", str(lock_path)]) == 3
    first = capsys.readouterr().err.splitlines()[0]
    assert first.endswith(
        "2 step(s) not pinned by digest in the image lock: validate, deploy; "
        "build and pin them (`nox -s build-changed`), or use `compile --dev` for a local run"
    )


def test_a_tag_only_image_in_the_lock_is_an_error_naming_the_step(tmp_path, capsys):
    doc = pinned_lock().to_json()
    doc["packages"]["train_faiss"]["image"] = "ghcr.io/mnist-ct/mnist-ct-train-faiss:0.1.0"
    doc["packages"]["train_faiss"]["digest"] = None
    lock_path = tmp_path / "lock.json"
    lock_path.write_text(json.dumps(doc))
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--lock", str(lock_path)]) == 3
    err = capsys.readouterr().err
    assert "train_faiss: image 'ghcr.io/mnist-ct/mnist-ct-train-faiss:0.1.0' must be a repository" in err


def test_a_tag_in_the_digest_field_is_an_error_naming_the_step(tmp_path, capsys):
    lock_path = tmp_path / "lock.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "analysis": "0.1.0"}), lock_path)
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--lock", str(lock_path)]) == 3
    err = capsys.readouterr().err
    assert "step analysis: ghcr.io/mnist-ct/mnist-ct-analysis: digest '0.1.0' is not sha256:<64 hex digits>" in err


def test_a_step_missing_from_the_lock_is_an_error_naming_it(tmp_path, capsys):
    doc = pinned_lock().to_json()
    del doc["packages"]["embedding"]
    lock_path = tmp_path / "lock.json"
    lock_path.write_text(json.dumps(doc))
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--lock", str(lock_path)]) == 3
    assert "step embedding: embedding: no entry in the image lock" in capsys.readouterr().err
    assert main(["compile", "--dev", "-o", str(tmp_path / "p.yaml"), "--lock", str(lock_path)]) == 3


def test_dev_compile_uses_tags_where_unpinned_and_is_marked_not_releasable(tmp_path, capsys):
    lock_path = tmp_path / "lock.json"
    write_lock(lock_with({**dict.fromkeys(ORDER), "deploy": fake_digest("deploy")}), lock_path)
    out = tmp_path / "dev.yaml"
    assert main(["compile", "--dev", "-o", str(out), "--lock", str(lock_path)]) == 0
    compiled = load(out)
    images = {e["container"]["command"][2]: e["container"]["image"] for e in compiled.executors.values()}
    version = read_lock(LOCK_PATH).packages["validate"].version  # the tag is the locked version
    assert images["mnist_ct.validate"] == f"ghcr.io/mnist-ct/mnist-ct-validate:{version}"
    assert images["mnist_ct.deploy"] == f"ghcr.io/mnist-ct/mnist-ct-deploy@{fake_digest('deploy')}"
    assert compiled.description.startswith(DEV_MARKER)
    assert "not releasable" in capsys.readouterr().out


def test_the_compiled_pipeline_has_the_designed_structure(strict_yaml):
    compiled = load(strict_yaml)
    tasks = {}
    for path, name, task in compiled.walk_tasks():
        tasks["/".join([*path, name])] = {
            "after": sorted(task.get("dependentTasks", [])),
            "cache": task.get("cachingOptions", {}).get("enableCache", False),
        }
    # The loop: validate .. analysis inside `proceed`, deploy inside `blessed` nested in it.
    assert tasks == {
        "preprocess": {"after": [], "cache": False},
        "condition-1": {"after": ["preprocess"], "cache": False},
        "condition-1/validate": {"after": [], "cache": False},
        "condition-1/train-model": {"after": ["validate"], "cache": False},
        "condition-1/embedding": {"after": ["train-model"], "cache": False},
        "condition-1/train-faiss": {"after": ["embedding"], "cache": False},
        "condition-1/analysis": {"after": ["train-faiss"], "cache": False},
        "condition-1/condition-2": {"after": ["analysis"], "cache": False},
        "condition-1/condition-2/deploy": {"after": [], "cache": False},
    }
    mounts = {label: sorted(compiled.pvc_mounts(label)) for label in compiled.executors}
    data, model, deploy = ("data-pvc", "/data"), ("train-model-pvc", "/model"), ("deploy-model-pvc", "/deploy-model")
    assert mounts == {
        "exec-preprocess": [data, deploy],
        "exec-validate": [data, deploy],
        "exec-train-model": [data, model],
        "exec-embedding": [data, deploy, model],
        "exec-train-faiss": [model],
        "exec-analysis": [data, deploy, model],
        "exec-deploy": [deploy, model],
    }
    proceed = compiled.root["dag"]["tasks"]["condition-1"]
    assert proceed["taskInfo"]["name"] == "data-or-steps-changed"
    assert (
        proceed["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--preprocess-proceed'] == true"
    )
    assert proceed["inputs"]["parameters"]["pipelinechannel--preprocess-proceed"] == {
        "taskOutputParameter": {"producerTask": "preprocess", "outputParameterKey": "proceed"}
    }
    blessed = compiled.components["comp-condition-1"]["dag"]["tasks"]["condition-2"]
    assert blessed["taskInfo"]["name"] == "challenger-blessed"
    assert (
        blessed["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--analysis-blessed'] == true"
    )
    assert blessed["inputs"]["parameters"]["pipelinechannel--analysis-blessed"] == {
        "taskOutputParameter": {"producerTask": "analysis", "outputParameterKey": "blessed"}
    }
    outputs = {
        c: {n: d["parameterType"] for n, d in compiled.components[c]["outputDefinitions"]["parameters"].items()}
        for c in ("comp-preprocess", "comp-analysis")
    }
    assert outputs == {
        "comp-preprocess": {"proceed": "BOOLEAN"},
        "comp-analysis": {"accuracy": "NUMBER_DOUBLE", "champion_accuracy": "NUMBER_DOUBLE", "blessed": "BOOLEAN"},
    }
    analysis = compiled.executors["exec-analysis"]["container"]
    assert analysis["command"] == ["python", "-m", "mnist_ct.analysis"]
    assert analysis["args"][:8] == [
        "--run-id", "{{$.inputs.parameters['run_id']}}",
        "--data-root", "/data", "--model-root", "/model", "--deploy-root", "/deploy-model",
    ]  # fmt: skip
    pairs = dict(zip(analysis["args"][8::2], analysis["args"][9::2], strict=False))
    assert {k: pairs[k] for k in ("--baseline", "--min-improvement", "--model-name", "--blessed-out")} == {
        "--baseline": "{{$.inputs.parameters['baseline']}}",
        "--min-improvement": "{{$.inputs.parameters['min_improvement']}}",
        "--model-name": "{{$.inputs.parameters['model_name']}}",
        "--blessed-out": "{{$.outputs.parameters['blessed'].output_file}}",
    }
    assert "{{$.outputs.parameters['accuracy'].output_file}}" in analysis["args"]
    assert "{{$.outputs.parameters['champion_accuracy'].output_file}}" in analysis["args"]
    preprocess = compiled.executors["exec-preprocess"]["container"]["args"]
    assert preprocess[preprocess.index("--only-if-changed") + 1] == "{{$.inputs.parameters['only_if_changed']}}"
    assert preprocess[preprocess.index("--proceed-out") + 1] == "{{$.outputs.parameters['proceed'].output_file}}"
    for step in ("validate", "embedding"):
        args = compiled.executors[f"exec-{step}"]["container"]["args"]
        assert args[args.index("--model-name") + 1] == "{{$.inputs.parameters['model_name']}}"
    params = compiled.pipeline_parameters()
    assert {"dataset", "epochs", "baseline", "index", "min_improvement", "only_if_changed"} <= set(params)
    assert params["baseline"]["defaultValue"] == 0.8
    assert params["dataset"]["defaultValue"] == "mnist-5k"
    assert params["min_improvement"] == {"defaultValue": 0.0, "isOptional": True, "parameterType": "NUMBER_DOUBLE"}
    assert params["only_if_changed"] == {"defaultValue": True, "isOptional": True, "parameterType": "BOOLEAN"}
    for executor in compiled.executors.values():
        assert {"resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"} <= set(
            executor["container"]["resources"]
        )


def test_the_compiled_pipeline_declares_the_typed_artifacts_images_and_retries(strict_yaml):
    compiled = load(strict_yaml)
    artifacts = {
        name: {
            a: d["artifactType"]["schemaTitle"] for a, d in c.get("outputDefinitions", {}).get("artifacts", {}).items()
        }
        for name, c in compiled.components.items()
        if "executorLabel" in c
    }
    assert artifacts == {
        "comp-preprocess": {"dataset": "system.Dataset"},
        "comp-validate": {},
        "comp-train-model": {"model": "system.Model"},
        "comp-embedding": {},
        "comp-train-faiss": {},
        "comp-analysis": {
            "metrics": "system.Metrics", "confusion_matrix": "system.ClassificationMetrics", "report": "system.HTML",
        },
        "comp-deploy": {"model": "system.Model"},
    }  # fmt: skip
    analysis = compiled.executors["exec-analysis"]["container"]
    assert analysis["args"][-8:] == [
        "--executor-input", "{{$}}",
        "--output-artifact", "metrics={{$.outputs.artifacts['metrics'].path}}",
        "--output-artifact", "confusion_matrix={{$.outputs.artifacts['confusion_matrix'].path}}",
        "--output-artifact", "report={{$.outputs.artifacts['report'].path}}",
    ]  # fmt: skip
    lock = pinned_lock()
    for executor in compiled.executors.values():
        env = {e["name"]: json.loads(e["value"]) for e in executor["container"]["env"]}
        assert env == {  # strict: the lock's images and the versions they were built from
            "MNIST_CT_IMAGES": {s: lock.image_ref(s) for s in ORDER},
            "MNIST_CT_STEP_VERSIONS": {s: lock.entry(s).version for s in ORDER},
        }
    retries = {
        "/".join([*path, name]): task.get("retryPolicy", {}).get("maxRetryCount")
        for path, name, task in compiled.walk_tasks()
    }
    assert retries == {
        "preprocess": 3, "condition-1": None, "condition-1/validate": None, "condition-1/train-model": 1,
        "condition-1/embedding": 2, "condition-1/train-faiss": 2, "condition-1/analysis": 2,
        "condition-1/condition-2": None, "condition-1/condition-2/deploy": None,
    }  # fmt: skip
    assert _gated(compiled.spec)["analysis"]["retryPolicy"] == {
        "maxRetryCount": 2, "backoffDuration": "30s", "backoffFactor": 2.0, "backoffMaxDuration": "3600s",
    }  # fmt: skip


def _gated(spec: dict) -> dict:
    """The tasks inside the `proceed` condition: validate .. analysis and the `blessed` condition."""
    return spec["components"]["comp-condition-1"]["dag"]["tasks"]


def _component(spec: dict, name: str) -> dict:
    return spec["components"][name]


def _container(spec: dict, label: str) -> dict:
    return spec["deploymentSpec"]["executors"][label]["container"]


def _without_confusion_matrix(spec: dict) -> None:
    """analysis as compiled without its confusion matrix (the declaration and the argument: else the
    reference check names the placeholder first)."""
    _component(spec, "comp-analysis")["outputDefinitions"]["artifacts"].pop("confusion_matrix")
    args = _container(spec, "exec-analysis")["args"]
    at = args.index("confusion_matrix={{$.outputs.artifacts['confusion_matrix'].path}}")
    del args[at - 1 : at + 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            _without_confusion_matrix,
            "step analysis (exec-analysis): output artifact confusion_matrix (system.ClassificationMetrics) is not "
            "declared",
        ),
        (
            lambda s: _component(s, "comp-preprocess")["outputDefinitions"]["artifacts"]["dataset"].update(
                artifactType={"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}
            ),
            "step preprocess (exec-preprocess): output artifact dataset is system.Artifact, designed system.Dataset",
        ),
        (
            lambda s: _component(s, "comp-validate").update(
                outputDefinitions={"artifacts": {"report": {"artifactType": {"schemaTitle": "system.HTML"}}}}
            ),
            "step validate (exec-validate): output artifact report (system.HTML) is not in the design",
        ),
        (
            lambda s: _container(s, "exec-deploy")["args"].remove("{{$}}"),
            "step deploy (exec-deploy): no `--executor-input {{$}}` argument",
        ),
        (
            lambda s: _container(s, "exec-train-model")["args"].__setitem__(-1, "model=/model/model.json"),
            "step train_model (exec-train-model): no `--output-artifact model={{$.outputs.artifacts['model'].path}}`",
        ),
        (
            lambda s: _container(s, "exec-embedding").update(env=_container(s, "exec-embedding")["env"][1:]),
            "step embedding (exec-embedding): no MNIST_CT_IMAGES environment variable",
        ),
        (
            lambda s: _container(s, "exec-train-model")["env"][1].update(value=json.dumps(dict.fromkeys(ORDER, "9.9"))),
            "step train_model (exec-train-model): MNIST_CT_STEP_VERSIONS differs from the lock's versions for analysis",
        ),
        (
            lambda s: _component(s, "comp-analysis")["outputDefinitions"]["parameters"]["blessed"].update(
                parameterType="STRING"
            ),
            "step analysis: no BOOLEAN output parameter `blessed`",
        ),
        (
            lambda s: _gated(s)["condition-2"]["triggerPolicy"].update(
                condition="inputs.parameter_values['pipelinechannel--analysis-blessed'] == false"
            ),
            "step deploy: condition \"inputs.parameter_values['pipelinechannel--analysis-blessed'] == false\" is not "
            "`analysis blessed == true`",
        ),
        (
            lambda s: _container(s, "exec-validate")["env"][0].update(
                value=json.dumps({st: f"ghcr.io/x/{st}@{fake_digest('other')}" for st in ORDER})
            ),
            "step validate (exec-validate): MNIST_CT_IMAGES differs from the lock's images for analysis, deploy, "
            "embedding, preprocess, train_faiss, train_model, validate",
        ),
        (
            lambda s: _gated(s)["train-faiss"].pop("retryPolicy"),
            "step train_faiss (task train-faiss): retryPolicy None is not the designed {'maxRetryCount': 2",
        ),
        (
            lambda s: _gated(s)["validate"].update(retryPolicy={"maxRetryCount": 5}),
            "step validate (task validate): has a retryPolicy; the design retries it never",
        ),
    ],
)
def test_a_compiled_file_without_the_designed_artifacts_images_or_retries_fails_the_check(
    strict_yaml, tmp_path, change, message
):
    problems = problems_of(rewrite(strict_yaml, tmp_path, lambda spec, platform: change(spec)))
    assert any(p.startswith(message) for p in problems), problems
    assert len(problems) == 2  # the heading and that one line


def test_a_wrong_pvc_fails_the_check_naming_the_step(strict_yaml, tmp_path):
    def change(spec, platform):
        mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-faiss"]["pvcMount"]
        mounts[0]["constant"] = mounts[0]["pvcNameParameter"]["runtimeValue"]["constant"] = "data-pvc"

    problems = problems_of(rewrite(strict_yaml, tmp_path, change))
    assert any(
        p.startswith("step train_faiss (exec-train-faiss): PVC mounts [('data-pvc', '/model')]") for p in problems
    )


def test_a_missing_mount_fails_the_check(strict_yaml, tmp_path):
    def change(spec, platform):
        del platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-deploy"]

    problems = problems_of(rewrite(strict_yaml, tmp_path, change))
    assert any("step deploy (exec-deploy): PVC mounts []" in p for p in problems)


def test_an_image_that_differs_from_the_lock_fails_the_check(strict_yaml, tmp_path):
    def change(spec, platform):
        spec["deploymentSpec"]["executors"]["exec-validate"]["container"]["image"] = (
            f"ghcr.io/mnist-ct/mnist-ct-validate@{fake_digest('something else')}"
        )

    problems = problems_of(rewrite(strict_yaml, tmp_path, change))
    assert any(
        p.startswith("step validate (exec-validate): image ghcr.io/mnist-ct/mnist-ct-validate@") for p in problems
    )


def test_a_tag_is_refused_outside_dev_builds(dev_yaml):
    problems = problems_of(dev_yaml, dev=False)
    tag = f"ghcr.io/mnist-ct/mnist-ct-deploy:{read_lock(LOCK_PATH).packages['deploy'].version}"
    assert any(f"image {tag} is not pinned by digest" in p for p in problems)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, p: s.update(extra=1), "document 0 is not a valid PipelineSpec"),
        (
            lambda s, p: s["deploymentSpec"]["executors"]["exec-deploy"]["container"].update(imagePulPolicy="x"),
            "deploymentSpec is not a valid PipelineDeploymentConfig",
        ),
        (
            lambda s, p: p["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-deploy"].update(
                pvcMounts=[]
            ),
            "kubernetes config of exec-deploy is not a valid KubernetesExecutorConfig",
        ),
        (lambda s, p: p["platforms"].update(vertex={}), "unsupported platform(s) vertex"),
    ],
)
def test_unknown_fields_are_refused_in_every_document(strict_yaml, tmp_path, change, message):
    with pytest.raises(OrchestrationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(rewrite(strict_yaml, tmp_path, change))


def _condition(spec: dict) -> dict:
    return spec["root"]["dag"]["tasks"]["condition-1"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s, p: _condition(s)["triggerPolicy"].update(condition="size(inputs.parameter_values['x']) > 0"),
            "task root/condition-1: condition: unsupported identifier 'size'",
        ),
        (
            lambda s, p: _condition(s)["triggerPolicy"].update(condition="inputs.parameter_values['nope'] > 0.5"),
            "task root/condition-1: condition reads nope, which is not an input of the task",
        ),
        (
            lambda s, p: _condition(s).update(dependentTasks=[]),
            "task root/condition-1: input pipelinechannel--preprocess-proceed reads task preprocess but does not",
        ),
        (
            lambda s, p: _gated(s)["validate"].update(dependentTasks=["analysis"]),
            "DAG condition-1: dependency cycle among",
        ),
        (
            lambda s, p: s["deploymentSpec"]["executors"]["exec-deploy"]["container"]["args"].append(
                "{{$.inputs.parameters['nothing']}}"
            ),
            "executor exec-deploy args[",
        ),
        (
            lambda s, p: _gated(s)["embedding"].update(componentRef={"name": "comp-nope"}),
            "task condition-1/embedding: component comp-nope does not exist",
        ),
        (
            lambda s, p: s["deploymentSpec"]["executors"]["exec-deploy"]["container"]["args"].append(
                "roc={{$.outputs.artifacts['roc'].path}}"
            ),
            "executor exec-deploy args[12]: {{$.outputs.artifacts['roc'].path}} names no output artifact",
        ),
        (
            lambda s, p: _gated(s)["analysis"]["inputs"].update(
                artifacts={
                    "model": {"taskOutputArtifact": {"producerTask": "train-model", "outputArtifactKey": "model"}}
                }
            ),
            "task condition-1/analysis: input artifacts are not supported",
        ),
    ],
)
def test_references_and_conditions_are_checked(strict_yaml, tmp_path, change, message):
    with pytest.raises(OrchestrationError) as e:
        load(rewrite(strict_yaml, tmp_path, change))
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems
    assert len(e.value.problems) == 1


def test_the_design_checks_catch_a_missing_condition_and_caching(strict_yaml, tmp_path):
    def change(spec, platform):
        _condition(spec)["triggerPolicy"]["condition"] = (
            "inputs.parameter_values['pipelinechannel--preprocess-proceed'] != true"
        )
        spec["root"]["dag"]["tasks"]["preprocess"]["cachingOptions"] = {"enableCache": True}

    problems = problems_of(rewrite(strict_yaml, tmp_path, change))
    assert any("is not `preprocess proceed == true`" in p for p in problems)
    assert any(p.startswith("step preprocess (task preprocess): caching is on") for p in problems)


def test_a_dev_build_passes_its_own_checks(dev_yaml):
    compiled = verify(dev_yaml, lock_with(dict.fromkeys(ORDER)), dev=True)
    assert isinstance(compiled, CompiledPipeline)
    assert parse(dev_yaml.read_text()).description.startswith(DEV_MARKER)


def test_compile_without_lock_option_uses_the_lock_of_the_working_directorys_repository(
    tmp_path, pinned_lock_file, monkeypatch, capsys
):
    """An installed mnist-ct (a wheel in a venv, as the workflows install it) pins the checkout it runs in."""
    repo = tmp_path / "clone"
    (repo / "orchestration").mkdir(parents=True)
    (repo / "orchestration" / "images.lock.json").write_bytes(pinned_lock_file.read_bytes())
    (repo / "steps" / "deep").mkdir(parents=True)
    monkeypatch.chdir(repo / "steps" / "deep")
    monkeypatch.setattr("mnist_ct.orchestration.lock.LOCK_PATH", tmp_path / "site-packages" / "images.lock.json")
    assert main(["compile", "-o", str(tmp_path / "p.yaml")]) == 0
    assert "every image pinned by digest" in capsys.readouterr().out
    assert load(tmp_path / "p.yaml").executors  # compiled from the clone's lock, not the module's


def test_compile_outside_any_repository_names_the_missing_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mnist_ct.orchestration.lock.LOCK_PATH", tmp_path / "site-packages" / "images.lock.json")
    assert main(["compile", "-o", str(tmp_path / "p.yaml")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "orchestration/images.lock.json" in err and "--lock" in err
    assert not (tmp_path / "p.yaml").exists()
