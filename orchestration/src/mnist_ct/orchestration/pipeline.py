"""The KFP v2 pipeline: one container component per step, three PVCs; the continuous-training loop.

    preprocess --(proceed)--> validate -> train_model -> embedding -> train_faiss -> analysis --(blessed)--> deploy

Steps share nothing but files on three PersistentVolumeClaims, under a folder named by the run id
(`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), so the order comes from `.after()`; the values that flow through
KFP itself are output parameters: preprocess's `proceed` (false when the data and every step version
equal the champion's, with `only_if_changed`) gates validate .. analysis, and analysis' `blessed`
(challenger above the baseline and at least the champion + min_improvement, both on this run's test
split) gates deploy, in a `dsl.If` nested inside the first.

Caching is off for every task: a step's real inputs are files on a volume under the run id, which
KFP's cache key (component spec + input parameter values) does not see. A cache hit would skip the
step, and its files would be missing from this run's folders.

Typed artifacts (what the KFP UI and its metadata store show): each step that has some declares them
(`dsl.Output[dsl.Dataset]` ...) and gets `--executor-input {{$}}` (KFP's executor input, whose
`outputs.outputFile` names where the step writes its ExecutorOutput: the artifacts' metadata) and
`--output-artifact NAME={{$.outputs.artifacts['NAME'].path}}` per artifact. Every task gets
`MNIST_CT_IMAGES`, the JSON of every step's image as compiled, and `MNIST_CT_STEP_VERSIONS`, every step's
version, so the artifacts' metadata names the images and versions that made them (lineage; preprocess
compares the versions with the champion's to tell whether anything changed). Retries: `Step.retries`.
"""

# No `from __future__ import annotations`: kfp reads the component signatures' annotations as types.

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes

# The steps' one reader of each is mnist_ct.artifacts (step_images, step_versions).
from mnist_ct.artifacts import IMAGES_ENV, VERSIONS_ENV

PIPELINE_NAME = "mnist-ct"
DESCRIPTION = (
    "MNIST continuous training: preprocess -> (if anything changed) validate -> train_model -> embedding -> "
    "train_faiss -> analysis -> (if blessed: above the baseline and the champion) deploy (a TorchServe .mar and "
    "a KServe model). "
    "Volumes: data-pvc (/data), "
    "train-model-pvc (/model), deploy-model-pvc (/deploy-model)."
)
# Marks a `compile --dev` output (images by tag); release refuses any pipeline whose description starts so.
DEV_MARKER = "NOT RELEASABLE (dev build, images by tag): "
# preprocess takes `--limit-per-class N` (N >= 1) or nothing; a KFP parameter cannot be absent, so the
# default is a cap above every class count of every data set (MNIST's largest class has 6,742 images).
ALL_PER_CLASS = 100_000
EXECUTOR_INPUT = dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER  # "{{$}}"
# Argo (KFP's backend) retries any non-zero exit; maxDuration counts from the first attempt's start and
# becomes the retried pod's deadline, so it is far above any step's run time (KFP's own default).
RETRY_BACKOFF = "30s"
RETRY_BACKOFF_FACTOR = 2.0
RETRY_BACKOFF_MAX = "3600s"


@dataclass(frozen=True)
class Volume:
    pvc: str
    mount_path: str
    root_option: str  # the step option that takes the mount path


DATA = Volume("data-pvc", "/data", "--data-root")
MODEL = Volume("train-model-pvc", "/model", "--model-root")
DEPLOY = Volume("deploy-model-pvc", "/deploy-model", "--deploy-root")
VOLUMES = (DATA, MODEL, DEPLOY)


@dataclass(frozen=True)
class Step:
    name: str  # module mnist_ct.<name>, lock entry <name>
    display_name: str
    volumes: tuple[Volume, ...]  # only what the step reads or writes
    cpu: tuple[str, str]  # request, limit
    memory: tuple[str, str]
    # torch/faiss size their thread pools by the node's cores, not by the pod's CPU limit: pass the limit.
    threads: bool = False
    # Typed output artifacts (the step interface): name -> the KFP artifact class (its schema title).
    outputs: tuple[tuple[str, type[dsl.Artifact]], ...] = ()
    retries: int = 0  # KFP retryPolicy maxRetryCount (0: none); backoff RETRY_BACKOFF * RETRY_BACKOFF_FACTOR^n

    @property
    def module(self) -> str:
        return f"mnist_ct.{self.name}"


# Retries are for transient faults: a network volume's I/O error, a lost or preempted node, a download.
# KFP cannot tell those from a deterministic failure (Argo retries any non-zero exit), and every step
# republishes its artifacts under the run id atomically, so a retry is safe; what it costs on a real
# failure is the step's time again. So: steps whose failure is a verdict are not retried (validate: the
# data fails its checks, exit 3; deploy: the champion stays, exit 4, and a retry would redo a change of
# the live model); preprocess downloads (data sets) besides its volume, so one retry more.
STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step(
            "preprocess", "Preprocess: collect and split the data set", (DATA, DEPLOY), ("500m", "1"), ("1Gi", "2Gi"),
            outputs=(("dataset", dsl.Dataset),), retries=3,
        ),
        # The steps that compare with the champion mount the deploy volume (they only read it):
        # preprocess, validate, embedding, analysis.
        Step("validate", "Validate: schema and statistics checks", (DATA, DEPLOY), ("500m", "1"), ("1Gi", "2Gi")),
        # Reads the dataset (data) and writes the model (model). One retry: a rerun trains from scratch.
        Step(
            "train_model", "Train model: CNN embedding + ArcFace", (DATA, MODEL), ("2", "4"), ("4Gi", "8Gi"), True,
            outputs=(("model", dsl.Model),), retries=1,
        ),
        Step(
            "embedding", "Embedding: embed train and test splits", (DATA, MODEL, DEPLOY), ("1", "2"), ("2Gi", "4Gi"),
            True,
            retries=2,
        ),
        Step("train_faiss", "Train FAISS: build the index", (MODEL,), ("1", "2"), ("2Gi", "4Gi"), True, retries=2),
        # Reads index + embeddings (model), the test images (data), to show misclassified digits, and the
        # champion's index and labels (deploy-model).
        Step(
            "analysis", "Analysis: accuracy, confusion matrix, report", (DATA, MODEL, DEPLOY), ("500m", "1"),
            ("1Gi", "2Gi"), True,
            outputs=(("metrics", dsl.Metrics), ("confusion_matrix", dsl.ClassificationMetrics), ("report", dsl.HTML)),
            retries=2,
        ),
        # Reads model + index + analysis (model) and writes the archive (deploy-model).
        Step(
            "deploy", "Deploy: TorchServe model archive", (MODEL, DEPLOY), ("500m", "1"), ("1Gi", "2Gi"),
            outputs=(("model", dsl.Model),),
        ),
    )
}  # fmt: skip
ORDER = tuple(STEPS)
# The two conditions (dsl.If names): validate .. analysis only when preprocess says proceed; deploy, nested
# inside it, only when analysis blesses the challenger.
PROCEED_CONDITION = "data-or-steps-changed"
BLESSED_CONDITION = "challenger-blessed"
GATED = ("validate", "train_model", "embedding", "train_faiss", "analysis")  # under PROCEED_CONDITION


def image_tag(repository: str, version: str) -> str:
    return f"{repository}:{version}"


def output_artifact_arg(name: str) -> str:
    """The value of `--output-artifact` for artifact `name`, as compiled (kfp renders `.path` so)."""
    return f"{name}={{{{$.outputs.artifacts['{name}'].path}}}}"


def _spec(
    images: Mapping[str, str],
    step: str,
    run_id: object,
    *options: object,
    artifacts: Mapping[str, Any] | None = None,  # name -> kfp's output artifact placeholder (has .path)
) -> dsl.ContainerSpec:
    artifacts = artifacts or {}
    roots: list[object] = []
    for volume in STEPS[step].volumes:
        roots += [volume.root_option, volume.mount_path]
    if STEPS[step].threads:
        options = (*options, "--threads", str(int(STEPS[step].cpu[1])))
    designed = [name for name, _ in STEPS[step].outputs]
    if list(artifacts) != designed:
        raise ValueError(f"step {step}: the component's output artifacts {list(artifacts)} are not STEPS' {designed}")
    if artifacts:
        options = (*options, "--executor-input", EXECUTOR_INPUT)
        for name, artifact in artifacts.items():
            options = (*options, "--output-artifact", f"{name}={artifact.path}")
    return dsl.ContainerSpec(
        image=images[step],
        command=["python", "-m", STEPS[step].module],
        args=["--run-id", run_id, *roots, *options],
    )


def components(images: Mapping[str, str]) -> dict[str, Callable[..., dsl.PipelineTask]]:
    """The seven container components, each with its image (`repo@sha256:...`, or a tag in dev builds)."""

    # A component's output artifact is named after its function argument, so preprocess's input for the
    # data set's name is `dataset_name` (its output artifact is `dataset`; the pipeline parameter `dataset`).
    @dsl.container_component
    def preprocess(
        run_id: str,
        dataset_name: str,
        limit_per_class: int,
        seed: int,
        only_if_changed: bool,
        model_name: str,
        proceed: dsl.OutputPath(bool),  # type: ignore[valid-type]  # kfp's form
        dataset: dsl.Output[dsl.Dataset],
    ):
        return _spec(
            images, "preprocess", run_id, "--dataset", dataset_name, "--limit-per-class", limit_per_class,
            "--seed", seed, "--only-if-changed", only_if_changed, "--model-name", model_name,
            "--proceed-out", proceed, artifacts={"dataset": dataset},
        )  # fmt: skip

    @dsl.container_component
    def validate(run_id: str, model_name: str):
        return _spec(images, "validate", run_id, "--model-name", model_name)

    @dsl.container_component
    def train_model(run_id: str, epochs: int, seed: int, model: dsl.Output[dsl.Model]):
        return _spec(images, "train_model", run_id, "--epochs", epochs, "--seed", seed, artifacts={"model": model})

    @dsl.container_component
    def embedding(run_id: str, model_name: str):
        return _spec(images, "embedding", run_id, "--model-name", model_name)

    @dsl.container_component
    def train_faiss(run_id: str, index: str):
        return _spec(images, "train_faiss", run_id, "--index", index)

    @dsl.container_component
    def analysis(
        run_id: str,
        k: int,
        baseline: float,
        min_improvement: float,
        model_name: str,
        accuracy: dsl.OutputPath(float),  # type: ignore[valid-type]  # kfp's form
        champion_accuracy: dsl.OutputPath(float),  # type: ignore[valid-type]
        blessed: dsl.OutputPath(bool),  # type: ignore[valid-type]
        metrics: dsl.Output[dsl.Metrics],
        confusion_matrix: dsl.Output[dsl.ClassificationMetrics],
        report: dsl.Output[dsl.HTML],
    ):
        return _spec(
            images, "analysis", run_id, "--k", k, "--baseline", baseline, "--min-improvement", min_improvement,
            "--model-name", model_name, "--accuracy-out", accuracy, "--champion-accuracy-out", champion_accuracy,
            "--blessed-out", blessed,
            artifacts={"metrics": metrics, "confusion_matrix": confusion_matrix, "report": report},
        )  # fmt: skip

    @dsl.container_component
    def deploy(run_id: str, model_name: str, model: dsl.Output[dsl.Model]):
        # No --force: past analysis' blessing, deploy's champion/challenger check (the same two figures)
        # still refuses a model that scores below the live one (exit 4, one line), so CT never regresses.
        return _spec(images, "deploy", run_id, "--model-name", model_name, artifacts={"model": model})

    return {
        "preprocess": preprocess,
        "validate": validate,
        "train_model": train_model,
        "embedding": embedding,
        "train_faiss": train_faiss,
        "analysis": analysis,
        "deploy": deploy,
    }


def _configure(task: dsl.PipelineTask, step: Step, images_env: str, versions_env: str) -> dsl.PipelineTask:
    task.set_display_name(step.display_name)
    task.set_caching_options(False)
    task.set_cpu_request(step.cpu[0]).set_cpu_limit(step.cpu[1])
    task.set_memory_request(step.memory[0]).set_memory_limit(step.memory[1])
    task.set_env_variable(IMAGES_ENV, images_env)
    task.set_env_variable(VERSIONS_ENV, versions_env)
    if step.retries:
        task.set_retry(step.retries, RETRY_BACKOFF, RETRY_BACKOFF_FACTOR, RETRY_BACKOFF_MAX)
    for volume in step.volumes:
        kubernetes.mount_pvc(task, pvc_name=volume.pvc, mount_path=volume.mount_path)
    return task


def images_json(images: Mapping[str, str]) -> str:
    """The value of IMAGES_ENV (MNIST_CT_IMAGES, every task's): every step's image as compiled, JSON."""
    return json.dumps({step: images[step] for step in sorted(ORDER)}, sort_keys=True)


def versions_json(versions: Mapping[str, str]) -> str:
    """The value of VERSIONS_ENV (MNIST_CT_STEP_VERSIONS, every task's): every step's version, JSON."""
    return json.dumps({step: versions[step] for step in sorted(ORDER)}, sort_keys=True)


def build(
    images: Mapping[str, str], versions: Mapping[str, str], description: str = DESCRIPTION
) -> Callable[..., None]:
    """The pipeline function, over the given image and version per step."""
    for what, given in (("image", images), ("version", versions)):
        missing = [s for s in ORDER if s not in given]
        if missing:
            raise ValueError(f"no {what} for step(s) {', '.join(missing)}")
    ops = components(images)
    images_env, versions_env = images_json(images), versions_json(versions)

    @dsl.pipeline(name=PIPELINE_NAME, description=description)
    def mnist_ct(
        dataset: str = "mnist-5k",
        limit_per_class: int = ALL_PER_CLASS,
        seed: int = 0,
        epochs: int = 12,  # train_model's own default
        index: str = "Flat",
        k: int = 1,
        baseline: float = 0.8,
        model_name: str = "mnist",
        min_improvement: float = 0.0,  # analysis' own default
        only_if_changed: bool = True,  # preprocess's own default
    ) -> None:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

        def step(name: str, **inputs: object) -> dsl.PipelineTask:
            return _configure(ops[name](run_id=run_id, **inputs), STEPS[name], images_env, versions_env)

        pre = step(
            "preprocess", dataset_name=dataset, limit_per_class=limit_per_class, seed=seed,
            only_if_changed=only_if_changed, model_name=model_name,
        )  # fmt: skip
        with dsl.If(pre.outputs["proceed"] == True, name=PROCEED_CONDITION):  # noqa: E712 - kfp's CEL form
            val = step("validate", model_name=model_name).after(pre)
            model = step("train_model", epochs=epochs, seed=seed).after(val)
            emb = step("embedding", model_name=model_name).after(model)
            idx = step("train_faiss", index=index).after(emb)
            ana = step(
                "analysis", k=k, baseline=baseline, min_improvement=min_improvement, model_name=model_name
            ).after(idx)
            with dsl.If(ana.outputs["blessed"] == True, name=BLESSED_CONDITION):  # noqa: E712
                step("deploy", model_name=model_name)

    return mnist_ct
