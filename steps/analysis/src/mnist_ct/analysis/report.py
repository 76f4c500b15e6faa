"""report.html: one self-contained page (figures as inline SVG, digits as PNG data URIs, no external references)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .lineage import LineageEntry

if TYPE_CHECKING:
    from .champion import Blessing, ChampionResult
from .metrics import CLASSES, Evaluation, top_confusion


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def digit_png(image: np.ndarray) -> bytes:
    """A 28x28 uint8 digit as a grayscale PNG (scaled in the page, pixelated)."""
    from PIL import Image  # only when there is a misclassified digit to show: off the start-up path

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass
class Misclassified:
    query: int  # index in the test split
    image: np.ndarray  # uint8 [28,28]
    true: int
    predicted: int  # -1: no neighbour found
    score: float  # inner product with the nearest neighbour


@dataclass
class ReportData:
    run_id: str
    k: int
    vote: str
    evaluation: Evaluation
    gallery_size: int
    index_info: dict[str, Any]
    lineage: list[LineageEntry]
    data_digest: str
    dataset_meta: dict[str, Any]
    confusion_svg: str  # figures.confusion_svg
    projection_svg: str  # figures.projection_svg
    misclassified: list[Misclassified] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # MNIST_CT_IMAGES: step -> image reference
    champion: ChampionResult | None = None  # measured on the same test digits
    blessing: Blessing | None = None


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:70rem;
color:#1d1d1f;padding:0 1rem;line-height:1.4}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.headline{font-size:2.6rem;font-weight:700;margin:.3rem 0}
.muted{color:#666}table{border-collapse:collapse;margin:.5rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}td.l{text-align:left}
code{font-size:.85em;background:#f4f4f4;padding:0 .2em}
.bad{color:#b00020;font-weight:600}.ok{color:#137333;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}
figure.digit{margin:0;text-align:center;font-size:.75rem;width:72px}
figure.digit img{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ccc;background:#000}
svg.plot{max-width:100%;height:auto;display:block}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _per_class_rows(evaluation: Evaluation) -> str:
    rows = []
    for c in CLASSES:
        confused = top_confusion(evaluation, c)
        confused_text = f"{confused[0]} ({confused[1]}&times;)" if confused else "&mdash;"
        rows.append(
            f"<tr><td>{c}</td><td>{int(evaluation.support[c])}</td><td>{evaluation.precision[c]:.4f}</td>"
            f"<td>{evaluation.recall[c]:.4f}</td><td>{evaluation.f1[c]:.4f}</td><td>{confused_text}</td></tr>"
        )
    macro = evaluation.macro()
    rows.append(
        f"<tr><th>macro</th><th>{len(evaluation.y_true)}</th><th>{macro['precision']:.4f}</th>"
        f"<th>{macro['recall']:.4f}</th><th>{macro['f1']:.4f}</th><th></th></tr>"
    )
    return "\n".join(rows)


def _lineage_rows(entries: list[LineageEntry]) -> str:
    rows = []
    for e in entries:
        if e.digest is None:
            state = '<span class="bad">missing</span>'
        elif e.stale_for:
            state = f'<span class="bad">replaced since {_e(", ".join(e.stale_for))} used it</span>'
        else:
            state = '<span class="ok">as recorded</span>'
        rows.append(
            f'<tr><td>{_e(e.artifact)}</td><td class="l">{_e(e.step or "?")}</td><td class="l">{_e(e.version or "?")}'
            f'</td><td class="l">{_e(e.created or "")}</td><td class="l"><code title="{_e(e.digest or "")}">'
            f'{_e((e.digest or "")[:16])}</code></td><td class="l">{_e(", ".join(e.used_by) or "this report")}'
            f'</td><td class="l">{state}</td></tr>'
        )
    return "\n".join(rows)


def _champion_section(data: ReportData) -> str:
    """Challenger against champion on this run's test digits, and whether (and why) the challenger is blessed."""
    if data.blessing is None:
        return ""
    b, c, ev = data.blessing, data.champion, data.evaluation
    verdict = '<span class="ok">blessed</span>' if b.blessed else '<span class="bad">not blessed</span>'
    rows = [
        f'<tr><td>challenger (this run)</td><td class="l"><code>{_e(data.run_id)}</code></td>'
        f'<td>{ev.accuracy:.4f}</td><td>{ev.errors}</td><td>{data.k}</td><td class="l">{_e(data.vote)}</td></tr>'
    ]
    if c is None:
        champion_text = "No champion: nothing is live for this model, so only the baseline applies."
    else:
        recorded = c.champion.accuracy
        rows.append(
            f'<tr><td>champion (live when embedding ran)</td><td class="l"><code>{_e(c.champion.version)}</code>'
            f"</td><td>{c.accuracy:.4f}</td><td>{c.evaluation.errors}</td><td>{c.k}</td>"
            f'<td class="l">{_e(c.vote)}</td></tr>'
        )
        champion_text = (
            "The champion's own model, index and k-NN setting (archive sha256 "
            f"<code>{_e(c.champion.archive_sha256[:16])}</code>) on the same {len(ev.y_true)} test digits"
            + (f"; deploy recorded {recorded:.4f} on its own test split." if recorded is not None else ".")
        )
    return f"""<h2 id="champion">Challenger vs champion</h2>
<p class="headline" id="blessing">{verdict}</p>
<p>accuracy {ev.accuracy:.4f} {_e(b.reason)}. The rule: accuracy &gt; baseline {b.baseline:.4f} and, with a
champion, accuracy &ge; the champion's accuracy on these digits + {b.min_improvement:.4f}.</p>
<table><thead><tr><th>model</th><th>run / version</th><th>accuracy</th><th>errors</th><th>k</th><th>vote</th></tr>
</thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<p class="muted">{champion_text}</p>
"""


def _image_rows(data: ReportData) -> str:
    """One row per step of the pipeline that ran this report, with the image it ran in."""
    if not data.images:
        return (
            '<tr><td>every step</td><td class="l"><span class="muted">not given</span> (MNIST_CT_IMAGES is not '
            "set: the steps ran by hand, not from a compiled pipeline)</td></tr>"
        )
    return "\n".join(
        f'<tr><td>{_e(step)}</td><td class="l"><code>{_e(image)}</code></td></tr>'
        for step, image in data.images.items()
    )


def _digits(data: ReportData) -> str:
    if not data.misclassified:
        return "<p>No test digit was misclassified.</p>"
    shown = len(data.misclassified)
    total = data.evaluation.errors
    note = f'<p class="muted">Showing {shown} of {total}, ordered by true class.</p>' if shown < total else ""
    items = []
    for m in data.misclassified:
        predicted = "none" if m.predicted < 0 else str(m.predicted)
        caption = f"true {m.true} &rarr; {predicted}"
        alt = f"test digit {m.query}: true {m.true}, predicted {predicted}"
        items.append(
            f'<figure class="digit" title="test #{m.query}, nearest score {m.score:.3f}">'
            f'<img alt="{_e(alt)}" src="{png_data_uri(digit_png(m.image))}"><figcaption>{caption}</figcaption></figure>'
        )
    return note + '<div class="grid">' + "\n".join(items) + "</div>"


def render(data: ReportData) -> str:
    """The whole page as one string."""
    ev = data.evaluation
    info = data.index_info
    dataset = data.dataset_meta.get("dataset", "?")
    index_rows = "".join(
        f'<tr><td>{_e(label)}</td><td class="l">{_fmt(info.get(key, "?"))}</td></tr>'
        for label, key in (
            ("factory string", "factory"),
            ("metric", "metric"),
            ("vectors", "size"),
            ("dimension", "dim"),
            ("search parameters", "search_params"),
            ("build seconds", "build_seconds"),
            ("recall@1 vs exact search", "recall_at_1"),
            ("recall@10 vs exact search", "recall_at_10"),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mnist-ct analysis: run {_e(data.run_id)}</title>
<style>{_CSS}</style></head>
<body>
<h1>mnist-ct analysis</h1>
<p class="muted">run <code>{_e(data.run_id)}</code> &middot; data set <code>{_e(dataset)}</code> &middot;
data manifest sha256 <code>{_e(data.data_digest)}</code></p>
<p class="headline" id="accuracy">accuracy {ev.accuracy:.2%}</p>
<p>{len(ev.y_true)} test digits classified by their {data.k} nearest neighbour{"s" if data.k > 1 else ""}
({_e(data.vote)} vote) among {data.gallery_size} training digits in the FAISS index:
<strong>{ev.errors}</strong> errors{f", {ev.unanswered} without any neighbour" if ev.unanswered else ""}.</p>

{_champion_section(data)}
<h2 id="confusion">Confusion matrix</h2>
{data.confusion_svg}

<h2 id="per-class">Per class</h2>
<table><thead><tr><th>class</th><th>support</th><th>precision</th><th>recall</th><th>F1</th>
<th>most often mistaken for</th></tr></thead>
<tbody>
{_per_class_rows(ev)}
</tbody></table>

<h2 id="misclassified">Misclassified test digits</h2>
{_digits(data)}

<h2 id="projection">2-D projection of the embeddings</h2>
{data.projection_svg}

<h2 id="index">Index</h2>
<table><tbody>{index_rows}</tbody></table>

<h2 id="lineage">Lineage</h2>
<table><thead><tr><th>artifact</th><th>step</th><th>version</th><th>created</th><th>manifest sha256</th>
<th>used by</th><th>state</th></tr></thead>
<tbody>
{_lineage_rows(data.lineage)}
</tbody></table>

<h2 id="images">Images</h2>
<p class="muted">The container image of every step of the pipeline run (from the image lock it was compiled with).</p>
<table><thead><tr><th>step</th><th>image</th></tr></thead>
<tbody>
{_image_rows(data)}
</tbody></table>
</body></html>
"""
