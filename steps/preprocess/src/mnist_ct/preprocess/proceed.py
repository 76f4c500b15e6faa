"""Skip when nothing changed: does this run's data and code differ from what made the champion?"""

from __future__ import annotations

from dataclasses import dataclass

from mnist_ct.artifacts import Champion


@dataclass(frozen=True)
class Decision:
    """Whether the steps after preprocess run (`proceed`), and why, in one line."""

    proceed: bool
    reason: str

    def line(self) -> str:
        return f"proceed: {'true' if self.proceed else 'false'} ({self.reason})"


def decide(only_if_changed: bool, champion: Champion | None, data_version: str, versions: dict[str, str]) -> Decision:
    """proceed is false only when `only_if_changed`, a champion is live, its data version is this run's and
    the step versions (MNIST_CT_STEP_VERSIONS) are known and equal to those that made it."""
    if not only_if_changed:
        return Decision(True, "--only-if-changed false: every run trains")
    if champion is None:
        return Decision(True, "no champion: nothing is live yet")
    who = f"champion {champion.model_name} version {champion.version}"
    if champion.data_version != data_version:
        return Decision(
            True, f"data version {data_version[:12]} differs from the {who}'s {str(champion.data_version)[:12]}"
        )
    if not versions:
        unknown = "the step versions are unknown (MNIST_CT_STEP_VERSIONS unset: run by hand)"
        return Decision(True, f"same data as the {who}, but {unknown}")
    if versions != champion.versions:
        changed = sorted(set(versions) | set(champion.versions))
        diff = [
            f"{s} {champion.versions.get(s, '-')} -> {versions.get(s, '-')}"
            for s in changed
            if versions.get(s) != champion.versions.get(s)
        ]
        return Decision(True, f"same data as the {who}, new step versions: {', '.join(diff)}")
    return Decision(False, f"data version and every step version equal the {who}'s: nothing to retrain, skipped")
