"""The KFP v2 pipeline: one container component per step, three PVCs, deploy only above the baseline.

    preprocess -> validate -> train_model -> embedding -> train_faiss -> analysis --(accuracy > baseline)--> deploy

Steps share nothing but files on three PersistentVolumeClaims, under a folder named by the run id
(`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), so the order comes from `.after()`; the one value that flows
through KFP itself is `accuracy`, an output parameter of analysis that the deploy condition reads.

Caching is off for every task: a step's real inputs are files on a volume under the run id, which
KFP's cache key (component spec + input parameter values) does not see. A cache hit would skip the
step, and its files would be missing from this run's folders.
"""

# No `from __future__ import annotations`: kfp reads the component signatures' annotations as types.

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kfp import dsl, kubernetes

PIPELINE_NAME = "mnist-ct"
DESCRIPTION = (
    "MNIST continuous training: preprocess -> validate -> train_model -> embedding -> train_faiss -> "
    "analysis -> deploy (TorchServe .mar) when accuracy > baseline. Volumes: data-pvc (/data), "
    "train-model-pvc (/model), deploy-model-pvc (/deploy-model)."
)
# Marks a `compile --dev` output (images by tag); release refuses any pipeline whose description starts so.
DEV_MARKER = "NOT RELEASABLE (dev build, images by tag): "
# preprocess takes `--limit-per-class N` (N >= 1) or nothing; a KFP parameter cannot be absent, so the
# default is a cap above every class count of every data set (MNIST's largest class has 6,742 images).
ALL_PER_CLASS = 100_000


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

    @property
    def module(self) -> str:
        return f"mnist_ct.{self.name}"


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("preprocess", "Preprocess: collect and split the data set", (DATA,), ("500m", "1"), ("1Gi", "2Gi")),
        Step("validate", "Validate: schema and statistics checks", (DATA,), ("500m", "1"), ("1Gi", "2Gi")),
        # Reads the dataset (data) and writes the model (model).
        Step("train_model", "Train model: CNN embedding + ArcFace", (DATA, MODEL), ("2", "4"), ("4Gi", "8Gi"), True),
        Step("embedding", "Embedding: embed train and test splits", (DATA, MODEL), ("1", "2"), ("2Gi", "4Gi"), True),
        Step("train_faiss", "Train FAISS: build the index", (MODEL,), ("1", "2"), ("2Gi", "4Gi"), True),
        # Reads index + embeddings (model) and the test images (data), to show misclassified digits.
        Step(
            "analysis",
            "Analysis: accuracy, confusion matrix, report",
            (DATA, MODEL),
            ("500m", "1"),
            ("1Gi", "2Gi"),
            True,
        ),
        # Reads model + index + analysis (model) and writes the archive (deploy-model).
        Step("deploy", "Deploy: TorchServe model archive", (MODEL, DEPLOY), ("500m", "1"), ("1Gi", "2Gi")),
    )
}
ORDER = tuple(STEPS)


def image_tag(repository: str, version: str) -> str:
    return f"{repository}:{version}"


def _spec(images: Mapping[str, str], step: str, run_id: object, *options: object) -> dsl.ContainerSpec:
    roots: list[object] = []
    for volume in STEPS[step].volumes:
        roots += [volume.root_option, volume.mount_path]
    if STEPS[step].threads:
        options = (*options, "--threads", str(int(STEPS[step].cpu[1])))
    return dsl.ContainerSpec(
        image=images[step],
        command=["python", "-m", STEPS[step].module],
        args=["--run-id", run_id, *roots, *options],
    )


def components(images: Mapping[str, str]) -> dict[str, Callable[..., dsl.PipelineTask]]:
    """The seven container components, each with its image (`repo@sha256:...`, or a tag in dev builds)."""

    @dsl.container_component
    def preprocess(run_id: str, dataset: str, limit_per_class: int, seed: int):
        return _spec(
            images, "preprocess", run_id, "--dataset", dataset, "--limit-per-class", limit_per_class, "--seed", seed
        )

    @dsl.container_component
    def validate(run_id: str):
        return _spec(images, "validate", run_id)

    @dsl.container_component
    def train_model(run_id: str, epochs: int, seed: int):
        return _spec(images, "train_model", run_id, "--epochs", epochs, "--seed", seed)

    @dsl.container_component
    def embedding(run_id: str):
        return _spec(images, "embedding", run_id)

    @dsl.container_component
    def train_faiss(run_id: str, index: str):
        return _spec(images, "train_faiss", run_id, "--index", index)

    @dsl.container_component
    def analysis(run_id: str, k: int, accuracy: dsl.OutputPath(float)):  # type: ignore[valid-type]  # kfp's form
        return _spec(images, "analysis", run_id, "--k", k, "--accuracy-out", accuracy)

    @dsl.container_component
    def deploy(run_id: str, model_name: str):
        # No --force: past the accuracy > baseline gate, deploy's champion/challenger check still
        # refuses a model that scores below the live one (exit 4, one line), so CT never regresses.
        return _spec(images, "deploy", run_id, "--model-name", model_name)

    return {
        "preprocess": preprocess,
        "validate": validate,
        "train_model": train_model,
        "embedding": embedding,
        "train_faiss": train_faiss,
        "analysis": analysis,
        "deploy": deploy,
    }


def _configure(task: dsl.PipelineTask, step: Step) -> dsl.PipelineTask:
    task.set_display_name(step.display_name)
    task.set_caching_options(False)
    task.set_cpu_request(step.cpu[0]).set_cpu_limit(step.cpu[1])
    task.set_memory_request(step.memory[0]).set_memory_limit(step.memory[1])
    for volume in step.volumes:
        kubernetes.mount_pvc(task, pvc_name=volume.pvc, mount_path=volume.mount_path)
    return task


def build(images: Mapping[str, str], description: str = DESCRIPTION) -> Callable[..., None]:
    """The pipeline function, over the given image per step."""
    missing = [s for s in ORDER if s not in images]
    if missing:
        raise ValueError(f"no image for step(s) {', '.join(missing)}")
    ops = components(images)

    @dsl.pipeline(name=PIPELINE_NAME, description=description)
    def mnist_ct(
        dataset: str = "mnist-5k",
        limit_per_class: int = ALL_PER_CLASS,
        seed: int = 0,
        epochs: int = 15,  # train_model's own default
        index: str = "Flat",
        k: int = 1,
        baseline: float = 0.8,
        model_name: str = "mnist",
    ) -> None:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

        def step(name: str, **inputs: object) -> dsl.PipelineTask:
            return _configure(ops[name](run_id=run_id, **inputs), STEPS[name])

        pre = step("preprocess", dataset=dataset, limit_per_class=limit_per_class, seed=seed)
        val = step("validate").after(pre)
        model = step("train_model", epochs=epochs, seed=seed).after(val)
        emb = step("embedding").after(model)
        idx = step("train_faiss", index=index).after(emb)
        ana = step("analysis", k=k).after(idx)
        with dsl.If(ana.outputs["accuracy"] > baseline, name="accuracy-above-baseline"):
            step("deploy", model_name=model_name)

    return mnist_ct
