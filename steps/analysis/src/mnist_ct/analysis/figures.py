"""The report's figures as inline SVG, drawn here (numpy and string formatting: no plotting library).

- `confusion_svg`: the confusion matrix as a heat map (colour: share of the true class, text: the count,
  a tooltip per cell) with its colour bar.
- `projection_svg`: the test embeddings in the first two principal components of the gallery (`pca_2d`, by
  numpy), coloured by true class, the misclassified ones marked with a cross (tooltip: which test digit).

The SVG is meant to sit inside the HTML page (no `xmlns`: the HTML parser puts it in the SVG namespace),
so the page stays one self-contained file without any external reference.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

from .metrics import CLASSES

PROJECTION_POINTS = 3000  # queries drawn in the 2-D projection (all errors among them)
PCA_FIT_POINTS = 5000  # gallery vectors the projection is fitted on

# matplotlib's "Blues" (ColorBrewer, 9 stops, linear between them) and "tab10": the colours the report had.
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ERROR_TEXT = "#b00020"
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: float) -> str:
    """A coordinate: one decimal, no trailing zeros (keeps the page small)."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def blues(share: float) -> str:
    """The colour of `share` (0..1, clipped) on the Blues scale, as #rrggbb."""
    position = min(max(float(share), 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(position), len(BLUES) - 2)
    t = position - i
    lo, hi = _rgb(BLUES[i]), _rgb(BLUES[i + 1])
    return "#" + "".join(f"{int(a + (b - a) * t + 0.5):02x}" for a, b in zip(lo, hi, strict=True))


def _svg(width: int, height: int, label: str, body: Sequence[str]) -> str:
    return (
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(label)}" {FONT}><title>{_e(label)}</title>\n' + "\n".join(body) + "\n</svg>"
    )


def _text(x: float, y: float, text: str, size: float = 12, anchor: str = "middle", extra: str = "") -> str:
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size:g}" text-anchor="{anchor}" '
        f'dominant-baseline="central"{extra}>{text}</text>'
    )


def confusion_svg(confusion: np.ndarray) -> str:
    """Heat map: colour is the share of the true class (so rare mistakes show), text the count."""
    counts = np.asarray(confusion, dtype=np.int64)
    support = np.maximum(counts.sum(axis=1), 1)
    n = len(CLASSES)
    cell, left, top = 42, 56, 40
    grid = cell * n
    bar_x = left + grid + 22
    body = [_text(left + grid / 2, 18, "Confusion matrix (colour: share of the true class)", 14)]
    for t in CLASSES:
        for p in CLASSES:
            share = counts[t, p] / support[t]
            x, y = left + p * cell, top + t * cell
            tip = f"true {t}, predicted {p}: {int(counts[t, p])} of {int(counts[t].sum())} ({share:.1%})"
            rect = f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{blues(share)}">'
            body.append(f"{rect}<title>{tip}</title></rect>")
            if counts[t, p]:
                colour = "white" if share > 0.5 else (ERROR_TEXT if t != p else "black")
                fill = f' fill="{colour}" pointer-events="none"'  # the cell's tooltip shows through
                body.append(_text(x + cell / 2, y + cell / 2, str(int(counts[t, p])), 11, extra=fill))
    body.append(f'<rect x="{left}" y="{top}" width="{grid}" height="{grid}" fill="none" stroke="#333"/>')
    for c in CLASSES:
        centre = c * cell + cell / 2
        body.append(_text(left + centre, top + grid + 14, str(c)))
        body.append(_text(left - 12, top + centre, str(c)))
    body.append(_text(left + grid / 2, top + grid + 36, "predicted", 13))
    body.append(_text(16, top + grid / 2, "true", 13, extra=f' transform="rotate(-90 16 {_n(top + grid / 2)})"'))
    # The colour bar: the same scale as a vertical gradient, 1.0 at the top.
    stops = "".join(
        f'<stop offset="{i / (len(BLUES) - 1):.4f}" stop-color="{c}"/>' for i, c in enumerate(reversed(BLUES))
    )
    body.append(f'<defs><linearGradient id="blues-bar" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>')
    body.append(f'<rect x="{bar_x}" y="{top}" width="18" height="{grid}" fill="url(#blues-bar)" stroke="#333"/>')
    for tick in range(6):
        tick_y = top + grid - grid * tick / 5
        body.append(f'<line x1="{bar_x + 18}" x2="{bar_x + 22}" y1="{_n(tick_y)}" y2="{_n(tick_y)}" stroke="#333"/>')
        body.append(_text(bar_x + 25, tick_y, f"{tick / 5:.1f}", 11, "start"))
    return _svg(bar_x + 56, top + grid + 52, "confusion matrix heatmap", body)


def pca_2d(fit: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`points` in the first two principal components of `fit`, and the share of variance each explains.

    Centred on `fit`'s mean, in float64. The components are the right singular vectors of the centred
    `fit`, found as the eigenvectors of its d x d scatter matrix (scikit-learn's "covariance_eigh" solver,
    the one it picks for such tall data): the same components as the SVD of the N x d matrix, but a 64 x 64
    problem instead of a 4000 x 64 one (2 ms instead of 0.4-0.9 s through OpenBLAS's threads on a busy
    two-core machine). The sign of each component is fixed as scikit-learn fixes it (its entry of largest
    magnitude is positive), so the result is deterministic and equals `PCA(2).fit(fit).transform(points)`
    up to rounding. A direction without variance (one fitted vector; dimension 1) is no component: its
    coordinates are 0. Returns float64 [N,2] and float64 [2].
    """
    fit = np.asarray(fit, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    mean = fit.mean(axis=0)
    centred = fit - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)  # ascending
    variance = np.clip(eigenvalues[::-1], 0.0, None)  # the squared singular values, largest first
    total = float(variance.sum())
    keep = min(2, int(np.sum(variance > total * 1e-12))) if total > 0 else 0
    components = eigenvectors[:, ::-1][:, :keep].T
    strongest = np.argmax(np.abs(components), axis=1)
    components = components * np.sign(components[np.arange(keep), strongest])[:, None]
    xy = np.zeros((len(points), 2))
    xy[:, :keep] = (points - mean) @ components.T
    explained = np.zeros(2)
    explained[:keep] = variance[:keep] / total if keep else 0.0
    return xy, explained


def nice_ticks(lo: float, hi: float, target: int = 8) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten apart) covering lo..hi."""
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    i = first
    while i * step <= hi + step * 1e-9:
        ticks.append(round(i * step, 12))
        i += 1
    return ticks


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """`value` with the fewest decimals that tell every tick apart; a true minus sign."""
    for decimals in range(7):
        if all(abs(round(t, decimals) - t) < 1e-9 for t in ticks):
            break
    text = f"{value:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", "\u2212")


def _axis_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (-1.0, 1.0)
    pad = (hi - lo) * 0.05 if hi > lo else 1.0
    return lo - pad, hi + pad


def projection_svg(
    gallery: np.ndarray, queries: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, seed: int = 0
) -> str:
    """The queries in the first two principal components of the gallery embeddings; errors marked."""
    rng = np.random.default_rng(seed)
    fit = gallery if len(gallery) <= PCA_FIT_POINTS else gallery[rng.choice(len(gallery), PCA_FIT_POINTS, False)]
    xy, explained = pca_2d(fit, queries)
    wrong = np.flatnonzero(y_true != y_pred)
    right = np.flatnonzero(y_true == y_pred)
    if len(right) + len(wrong) > PROJECTION_POINTS:
        right = np.sort(rng.choice(right, max(PROJECTION_POINTS - len(wrong), 0), replace=False))
    shown = np.concatenate([right, wrong])
    left, top, width, height = 72, 40, 520, 460
    (x0, x1), (y0, y1) = _axis_range(xy[shown, 0]), _axis_range(xy[shown, 1])
    xticks = [t for t in nice_ticks(x0, x1) if x0 <= t <= x1]
    yticks = [t for t in nice_ticks(y0, y1) if y0 <= t <= y1]

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * width

    def sy(v: float) -> float:
        return top + height - (v - y0) / (y1 - y0) * height

    body = [_text(left + width / 2, 18, "Test embeddings, PCA fitted on the gallery", 14)]
    body.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#333"/>')
    for t in xticks:
        tx = _n(sx(t))
        body.append(f'<line x1="{tx}" x2="{tx}" y1="{top + height}" y2="{top + height + 4}" stroke="#333"/>')
        body.append(_text(sx(t), top + height + 14, tick_label(t, xticks), 11))
    for t in yticks:
        ty = _n(sy(t))
        body.append(f'<line x1="{left - 4}" x2="{left}" y1="{ty}" y2="{ty}" stroke="#333"/>')
        body.append(_text(left - 7, sy(t), tick_label(t, yticks), 11, "end"))
    body.append(_text(left + width / 2, top + height + 36, f"PC1 ({explained[0]:.0%} of variance)", 13))
    y_mid = _n(top + height / 2)
    body.append(
        _text(
            18,
            top + height / 2,
            f"PC2 ({explained[1]:.0%} of variance)",
            13,
            extra=f' transform="rotate(-90 18 {y_mid})"',
        )
    )
    for c in CLASSES:
        sel = right[y_true[right] == c]
        dots = "".join(f'<circle cx="{_n(sx(xy[q, 0]))}" cy="{_n(sy(xy[q, 1]))}" r="1.7"/>' for q in sel)
        body.append(f'<g fill="{TAB10[c]}" fill-opacity="0.6">{dots}</g>')
    for q in wrong:
        x, y = sx(xy[q, 0]), sy(xy[q, 1])
        predicted = "none" if y_pred[q] < 0 else str(int(y_pred[q]))
        body.append(
            f'<path d="M{_n(x - 3.5)} {_n(y - 3.5)}l7 7m0 -7l-7 7" stroke="{TAB10[int(y_true[q]) % len(TAB10)]}" '
            f'stroke-width="1.6"><title>test #{int(q)}: true {int(y_true[q])}, predicted {predicted}</title></path>'
        )
    legend_x = left + width + 18
    for c in CLASSES:
        entry_y = top + 120 + c * 18
        body.append(f'<circle cx="{legend_x}" cy="{entry_y}" r="4" fill="{TAB10[c]}" fill-opacity="0.6"/>')
        body.append(_text(legend_x + 10, entry_y, str(c), 11, "start"))
    if len(wrong):
        entry_y = top + 120 + len(CLASSES) * 18 + 8
        cross = f"M{legend_x - 5} {entry_y - 5}l10 10m0 -10l-10 10"
        body.append(f'<path d="{cross}" stroke="black" stroke-width="1.6"/>')
        body.append(_text(legend_x + 10, entry_y, "misclassified", 11, "start"))
        body.append(_text(legend_x + 10, entry_y + 14, "(colour: true class)", 11, "start"))
    return _svg(legend_x + 130, top + height + 52, "PCA projection of the test embeddings", body)
