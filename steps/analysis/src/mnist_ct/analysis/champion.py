"""The champion measured on this run's test split, and the blessing: is the challenger good enough to deploy?

embedding embedded this run's test split with the champion's model (`champion/test.npy` in the embeddings
artifact, the champion's record in its manifest's `meta.champion`). Here those vectors are searched in the
champion's own index and labels, read from exactly the history entry embedding used (`read_deployed`: even if
another version went live since), and voted with the k-NN setting the champion is served with. Both accuracies
are then figures on the same digits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mnist_ct.artifacts import ArtifactError, Champion, Manifest, RunPaths, find_champion, read_deployed
from mnist_ct.artifacts.champion import INDEX_MEMBER, LABELS_MEMBER
from mnist_ct.artifacts.embeddings import read_vectors

from .classify import VOTES, predicted_labels, search
from .index_artifact import check_index_labels
from .metrics import Evaluation, evaluate

CHAMPION_FILE = "champion/test.npy"  # embedding's name for the test split embedded by the champion's model


@dataclass
class ChampionResult:
    champion: Champion
    evaluation: Evaluation
    k: int
    vote: str

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    def to_json(self) -> dict[str, Any]:
        """metrics.json's `champion`."""
        c = self.champion
        return {
            "version": c.version,
            "run_id": c.run_id,
            "accuracy": self.accuracy,
            "archive_sha256": c.archive_sha256,
            "k": self.k,
            "vote": self.vote,
            "recorded_accuracy": c.accuracy,  # deploy's figure, on the champion's own test split
        }


@dataclass(frozen=True)
class Blessing:
    blessed: bool
    baseline: float
    min_improvement: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "blessed": self.blessed,
            "baseline": self.baseline,
            "min_improvement": self.min_improvement,
            "reason": self.reason,
        }


def bless(accuracy: float, champion: ChampionResult | None, baseline: float, min_improvement: float) -> Blessing:
    """Blessed when accuracy > baseline and (no champion, or accuracy >= champion accuracy + min_improvement)."""
    if not accuracy > baseline:
        return Blessing(False, baseline, min_improvement, f"<= baseline {baseline:.4f}")
    if champion is None:
        return Blessing(True, baseline, min_improvement, f"> baseline {baseline:.4f}, no champion")
    needed = champion.accuracy + min_improvement
    if accuracy >= needed:
        return Blessing(True, baseline, min_improvement, f">= champion + {min_improvement:.4f}")
    return Blessing(False, baseline, min_improvement, f"< champion + {min_improvement:.4f} = {needed:.4f}")


def verdict_line(accuracy: float, queries: int, champion: ChampionResult | None, blessing: Blessing) -> str:
    """The one log line that says what was compared and what was decided."""
    versus = f" vs champion {champion.champion.version} {champion.accuracy:.4f}" if champion else " (no champion)"
    decision = "blessed" if blessing.blessed else "not blessed"
    return f"challenger {accuracy:.4f}{versus} on this run's {queries} test digits: {decision} ({blessing.reason})"


def measure_champion(
    paths: RunPaths, model_name: str, embeddings: Manifest, labels: np.ndarray
) -> ChampionResult | None:
    """The champion embedding used, evaluated on this run's test split (true `labels`); None when it had none."""
    if "champion" not in embeddings.meta:
        # Embeddings from before embedding embedded the champion: fine only while nothing is live to compare with.
        live = find_champion(paths.deploy_root, model_name)
        if live is None:
            return None
        raise ArtifactError(
            f"{paths.embeddings}: has no champion embeddings (made by embedding {embeddings.producer.version}), but "
            f"{model_name} version {live.version} is live on {paths.deploy_root}; rerun the embedding step"
        )
    recorded = embeddings.meta["champion"]
    if recorded is None:
        return None
    where = f"{paths.embeddings / 'manifest.json'}: meta.champion"
    if not isinstance(recorded, dict) or not isinstance(recorded.get("version"), str):
        raise ArtifactError(f"{where} is {recorded!r}, not a champion's record; rerun the embedding step")
    if recorded.get("model_name", model_name) != model_name:
        raise ArtifactError(
            f"{where} is model {recorded.get('model_name')!r}, but analysis compares with --model-name {model_name}; "
            "give the same --model-name to embedding and analysis"
        )
    champion = read_deployed(paths.deploy_root, model_name, recorded["version"])
    if champion.archive_sha256 != recorded.get("archive_sha256"):
        raise ArtifactError(
            f"{champion.archive}: sha256 {champion.archive_sha256[:12]}, but the embedding step embedded version "
            f"{champion.version} from an archive with {str(recorded.get('archive_sha256'))[:12]}; history was "
            "rewritten: rerun the embedding step"
        )
    vectors = read_vectors(paths.embeddings, embeddings, CHAMPION_FILE)
    if len(vectors) != len(labels):
        raise ArtifactError(
            f"{paths.embeddings / CHAMPION_FILE}: {len(vectors)} vectors for {len(labels)} test digits; "
            "rerun the embedding step"
        )
    index, gallery_labels = champion_index(champion)
    if index.d != vectors.shape[1]:
        raise ArtifactError(
            f"{champion.archive}: its index.faiss has dimension {index.d} but {paths.embeddings / CHAMPION_FILE} "
            f"has {vectors.shape[1]}; the champion's model and index disagree: roll back or redeploy"
        )
    k, vote = serving_setting(champion, int(index.ntotal))
    neighbours = search(index, gallery_labels, np.asarray(vectors), k)
    return ChampionResult(champion, evaluate(labels, predicted_labels(neighbours, vote)), k, vote)


def champion_index(champion: Champion) -> tuple[faiss.Index, np.ndarray]:
    """The champion's index.faiss and labels.npy, from its verified archive, checked to agree."""
    fix = f"the champion ({champion.model_name} version {champion.version}) is broken: roll back or redeploy"
    data = champion.member(INDEX_MEMBER)
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        reason = " ".join(str(e).split())[-200:]
        raise ArtifactError(f"{champion.archive}: FAISS cannot read its {INDEX_MEMBER} ({reason}); {fix}") from None
    try:
        labels = np.load(io.BytesIO(champion.member(LABELS_MEMBER)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(
            f"{champion.archive}: its {LABELS_MEMBER} is not a readable .npy array ({e}); {fix}"
        ) from None
    names = (
        f"{champion.archive} member {INDEX_MEMBER}",
        f"{champion.archive} member {LABELS_MEMBER}",
        champion.archive,
    )
    check_index_labels(index, labels, names, fix)
    return index, labels.astype(np.int64)


def serving_setting(champion: Champion, ntotal: int) -> tuple[int, str]:
    """The k and vote the champion is served with (k capped at its index's size, as the handler caps it)."""
    try:
        serving = champion.serving
    except (TypeError, ValueError):
        serving = {"k": None, "vote": None}
    k, vote = serving["k"], serving["vote"]
    if not isinstance(k, int) or k < 1 or vote not in VOTES:
        raise ArtifactError(
            f"{Path(champion.folder) / 'deployment.json'}: serving {champion.record.get('serving')!r} is not a k-NN "
            f"setting (k >= 1, vote one of {', '.join(VOTES)})"
        )
    return min(k, ntotal), vote
