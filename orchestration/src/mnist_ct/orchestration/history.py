"""`mnist-ct history`: the champion timeline, every deploy, refusal, rollback and recovery of one model.

Read from `<deploy-root>/deployments.jsonl`, the deploy step's append-only log (one JSON object a line, written
by steps/deploy's event_log.py; read here by its format, not its code: orchestration depends on no step). A
line that is not a JSON object (a torn write of a killed run, or damage) is skipped and counted, as deploy
itself skips it. Each event is joined with its run's data set manifest,
`<data-root>/runs/<run>/dataset/manifest.json` (when `--data-root` is given and the run's folder is there):
its `data_version` (where the event did not record one: refusals do not) and `batches`, the number of
incoming batches preprocess added. `live` is the version live after the event (a rollback pops back).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_ct.artifacts import ArtifactError, UsageError
from mnist_ct.artifacts.manifest import read_manifest
from mnist_ct.artifacts.paths import confined

if TYPE_CHECKING:
    import pandas as pd

LOG_FILE = "deployments.jsonl"
EVENTS = ("deploy", "refused", "rollback", "recovered")
LIVE_EVENTS = ("deploy", "recovered")  # they make their version live; a rollback too (and pops)
COLUMNS = (
    "time",
    "event",
    "version",
    "run_id",
    "accuracy",
    "champion",
    "champion_accuracy",
    "live",
    "data_version",
    "batches",
    "reason",
)
PLOT_FORMATS = (".png", ".svg")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a folder name under runs/, never a path


def check_plot_path(path: Path) -> Path:
    if path.suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot {path}: give a file ending in .png or .svg (the format follows the extension)")
    return path


def read_log(deploy_root: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The log's events, oldest first, and the numbers of the lines skipped as unreadable."""
    root = Path(deploy_root)
    if not root.is_dir():
        raise ArtifactError(f"--deploy-root {root}: no such folder; give the deploy volume (deploy's --deploy-root)")
    path = root / LOG_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: no deployments log; nothing was deployed there yet (or the wrong --deploy-root)")
    events: list[dict[str, Any]] = []
    skipped: list[int] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            skipped.append(number)
    return events, skipped


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def run_data(data_root: Path | None, run_id: str | None) -> dict[str, Any]:
    """`data_version` and `batches` of the run's data set manifest; {} where there is none to read."""
    if data_root is None or run_id is None or not _RUN_ID.fullmatch(run_id):
        return {}
    folder = confined(Path(data_root), "runs", run_id, "dataset")
    if not (folder / "manifest.json").is_file():
        return {}  # a run whose data set was cleaned up, or made elsewhere: the event alone says what it knows
    meta = read_manifest(folder).meta  # a manifest that is there but unreadable is bad input (ArtifactError)
    batches = meta.get("batches")
    return {
        "data_version": _text(meta.get("data_version")),
        "batches": len(batches) if isinstance(batches, list) else None,
    }


def timeline(events: list[dict[str, Any]], model_name: str, data_root: Path | None = None) -> list[dict[str, Any]]:
    """One row per event of `model_name`, oldest first, with the version live after it and its run's data."""
    rows: list[dict[str, Any]] = []
    stack: list[str] = []
    for e in events:
        kind = e.get("event")
        if e.get("model") != model_name or kind not in EVENTS:
            continue
        version, run_id = _text(e.get("version")), _text(e.get("run_id"))
        if version is not None and kind in LIVE_EVENTS and (not stack or stack[-1] != version):
            stack.append(version)
        elif version is not None and kind == "rollback":
            if stack and stack[-1] == e.get("from"):
                stack.pop()
            if not stack or stack[-1] != version:
                stack.append(version)
        data = run_data(data_root, run_id)
        rows.append(
            {
                "time": _text(e.get("time")),
                "event": kind,
                "version": version,
                "run_id": run_id,
                "accuracy": _number(e.get("accuracy")),
                "champion": _text(e.get("champion")),
                "champion_accuracy": _number(e.get("champion_accuracy")),
                "live": stack[-1] if stack else None,
                "data_version": _text(e.get("data_version")) or data.get("data_version"),
                "batches": data.get("batches"),
                "reason": _text(e.get("reason")),
            }
        )
    return rows


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["batches"] = table["batches"].astype("Int64")  # a count, blank where unknown (not 3.0 / NaN)
    return table


def plot(table: pd.DataFrame, path: Path, model_name: str) -> None:
    """Accuracy over runs: each event's accuracy, the champion's on the same test split, and the live model's."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here, nor in CI
    import matplotlib.pyplot as plt

    measured = table[table["accuracy"].notna()]
    if measured.empty:
        raise ArtifactError(f"--plot {path}: no event of model {model_name} records an accuracy; nothing to plot")
    x = list(range(len(table)))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.6 * len(table) + 4), 4.0))
    try:
        accuracy_of = {v: a for v, a in zip(table["version"], table["accuracy"], strict=True) if a == a}
        live = [accuracy_of.get(v) if isinstance(v, str) else None for v in table["live"]]
        ax.step(x, [float("nan") if a is None else a for a in live], where="post", color="0.6", label="live model")
        kinds = (("deploy", "o", "deployed"), ("refused", "x", "refused challenger"),
                 ("rollback", "^", "rolled back to"), ("recovered", "s", "recovered"))  # fmt: skip
        for kind, marker, label in kinds:
            rows = table[(table["event"] == kind) & table["accuracy"].notna()]
            if not rows.empty:
                ax.scatter(rows.index, rows["accuracy"], marker=marker, label=label, zorder=3)
        champion = table[table["champion_accuracy"].notna()]
        if not champion.empty:
            ax.scatter(champion.index, champion["champion_accuracy"], marker="_", s=200, color="k",
                       label="champion, same test split", zorder=3)  # fmt: skip
        ax.set_xticks(x, [str(r) if isinstance(r, str) else "?" for r in table["run_id"]], rotation=45, ha="right")
        ax.set_xlabel("run")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{model_name}: accuracy over runs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the points, not on them
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."))
        tmp.replace(path)  # no half-written plot under the real name
    finally:
        plt.close(fig)


def history(
    deploy_root: Path,
    *,
    data_root: Path | None = None,
    model_name: str = "mnist",
    output: str = "table",
    plot_path: Path | None = None,
    out: Callable[[str], None] = print,
    note: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Print the timeline as a table, CSV or JSON (`output`); with `plot_path`, draw it too. Returns it.
    Notes (skipped lines, the plot written) go to `note`, stderr by default: stdout stays the table alone."""
    note = note or (lambda line: print(line, file=sys.stderr))
    if plot_path is not None:
        check_plot_path(plot_path)
    if data_root is not None and not Path(data_root).is_dir():
        raise ArtifactError(f"--data-root {data_root}: no such folder; give the data volume (or leave it out)")
    events, skipped = read_log(deploy_root)
    if skipped:
        lines = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        note(f"{Path(deploy_root) / LOG_FILE}: skipped {len(skipped)} unreadable line(s) ({lines}): a torn write?")
    table = frame(timeline(events, model_name, data_root))
    if output == "csv":
        out(table.to_csv(index=False).rstrip("\n"))
    elif output == "json":
        out(table.to_json(orient="records"))
    elif table.empty:
        out(f"no deploy, refusal or rollback of model {model_name} in {Path(deploy_root) / LOG_FILE}")
    else:
        shown = table.astype(object).where(table.notna(), "-")  # unknown is "-", whatever the column's type
        for column in ("accuracy", "champion_accuracy"):
            shown[column] = [v if v == "-" else f"{v:.4f}" for v in shown[column]]
        out(shown.to_string(index=False))
    if plot_path is not None:
        plot(table, plot_path, model_name)
        note(f"plot: {plot_path} ({len(table)} events)")
    return table
