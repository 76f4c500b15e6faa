"""The report's figures: numpy PCA against scikit-learn's, and the SVG drawn without a plotting library."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from sklearn.decomposition import PCA

from mnist_ct.analysis.figures import (
    BLUES,
    PROJECTION_POINTS,
    TAB10,
    blues,
    confusion_svg,
    nice_ticks,
    pca_2d,
    projection_svg,
    tick_label,
)
from mnist_ct.analysis.metrics import evaluate
from mnist_ct.artifacts.testing import mnist5k

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    """The inline SVG as a standalone document would have it: well-formed XML in the SVG namespace."""
    assert svg.startswith("<svg ") and "xmlns" not in svg  # inline in HTML: the parser gives the namespace
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def _digit_vectors(n: int, skip: int = 0) -> np.ndarray:
    """Real digits as unit vectors of their 14x14 (2x2-pooled) pixels: real structure, quick SVDs."""
    x = mnist5k().images[skip : skip + n].astype(np.float32).reshape(n, 14, 2, 14, 2).mean(axis=(2, 4))
    x = x.reshape(n, -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pca_is_scikit_learns_up_to_sign_on_real_digits(dtype):
    fit, points = _digit_vectors(800).astype(dtype), _digit_vectors(300, skip=800).astype(dtype)

    xy, explained = pca_2d(fit, points)

    reference = PCA(n_components=2, svd_solver="full").fit(fit)  # the exact SVD of the centred data
    expected = reference.transform(points)
    signs = np.sign(np.sum(xy * expected, axis=0))
    np.testing.assert_allclose(xy, expected * signs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-4)


def test_pca_signs_are_fixed_whatever_the_order_of_the_fitted_vectors():
    fit, points = _digit_vectors(500), _digit_vectors(50, skip=500)
    rng = np.random.default_rng(3)

    first, _ = pca_2d(fit, points)
    for _ in range(3):
        again, _ = pca_2d(fit[rng.permutation(len(fit))], points)
        np.testing.assert_allclose(again, first, atol=1e-9)
    # Mirrored data has the same components (their largest entries stay positive), so mirrored points.
    mirrored, _ = pca_2d(-fit, -points)
    np.testing.assert_allclose(mirrored, -first, atol=1e-9)


def test_pca_of_degenerate_galleries_fills_the_missing_components_with_0():
    xy, explained = pca_2d(np.ones((1, 4)), np.arange(8.0).reshape(2, 4))
    assert xy.shape == (2, 2) and explained.tolist() == [0.0, 0.0] and not xy[:, 1].any()
    xy, explained = pca_2d(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]]))
    assert xy.tolist() == [[0.0, 0.0], [2.0, 0.0]] and explained.tolist() == [1.0, 0.0]


def test_the_blues_scale_runs_from_white_to_dark_blue():
    assert (blues(0.0), blues(1.0)) == (BLUES[0], BLUES[-1])
    assert (blues(-1.0), blues(2.0)) == (BLUES[0], BLUES[-1])
    assert blues(0.5) == BLUES[4]
    assert blues(1 / 16) == "#ebf3fb"  # halfway between the first two stops


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (-1.05, 0.91, [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]),
        (-0.8, 0.85, [-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]),
        (-0.1, 0.7, [-0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
        (0.0, 100.0, [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
        (3.0, 3.0, [2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0]),  # one value: one either side
    ],
)
def test_ticks_are_round_numbers(lo, hi, ticks):
    assert nice_ticks(lo, hi) == pytest.approx(ticks)


def test_tick_labels_have_the_fewest_decimals_and_a_true_minus():
    ticks = [-0.5, -0.25, 0.0, 0.25]
    assert [tick_label(t, ticks) for t in ticks] == ["\u22120.50", "\u22120.25", "0.00", "0.25"]
    assert [tick_label(t, [0.0, 20.0]) for t in (0.0, 20.0)] == ["0", "20"]
    assert tick_label(-1e-13, [-1e-13, 0.5]) == "0.0"


def test_the_confusion_heatmap_shows_every_count_and_a_tooltip_per_cell():
    ev = evaluate(np.array([0, 0, 0, 1, 1, 3]), np.array([0, 0, 1, 1, 1, -1]))

    root = _parse(confusion_svg(ev.confusion))

    cells = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(cells) == 100
    tips = [tip.text for r in cells if (tip := r.find(f"{SVG}title")) is not None]
    assert "true 0, predicted 1: 1 of 3 (33.3%)" in tips
    assert "true 3, predicted 3: 0 of 0 (0.0%)" in tips  # the unanswered query has no column
    counts = [(t.text, t.get("fill")) for t in root.iter(f"{SVG}text") if t.get("fill")]
    assert counts == [("2", "white"), ("1", "#b00020"), ("2", "white")]  # rows 0, 1; red: a rare mistake
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "predicted" in texts and "true" in texts
    fills = {(r.get("x"), r.get("y")): r.get("fill") for r in cells}
    assert fills[("56", "40")] == blues(2 / 3) and fills[("98", "82")] == BLUES[-1]
    assert root.get("aria-label") == "confusion matrix heatmap"


def test_the_projection_colours_the_classes_and_marks_each_error():
    gallery = _digit_vectors(400)
    queries = _digit_vectors(200, skip=400)
    y_true = mnist5k().labels[400:600]
    y_pred = y_true.copy()
    y_pred[[3, 50, 120]] = (y_true[[3, 50, 120]] + 1) % 10
    y_pred[7] = -1

    svg = projection_svg(gallery, queries, y_true, y_pred)
    root = _parse(svg)

    tips = sorted(t.text or "" for p in root.iter(f"{SVG}path") if (t := p.find(f"{SVG}title")) is not None)
    expected = [
        f"test #{q}: true {y_true[q]}, predicted {y_pred[q] if y_pred[q] >= 0 else 'none'}" for q in (3, 7, 50, 120)
    ]
    assert tips == sorted(expected)
    groups = {g.get("fill"): len(g) for g in root.iter(f"{SVG}g")}
    assert set(groups) == set(TAB10) and sum(groups.values()) == 196
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert any(re.fullmatch(r"PC1 \(\d+% of variance\)", t or "") for t in labels)
    assert "misclassified" in labels and "(colour: true class)" in labels
    assert projection_svg(gallery, queries, y_true, y_pred) == svg  # deterministic


def test_the_projection_draws_at_most_its_point_budget_with_every_error():
    rng = np.random.default_rng(0)
    n = PROJECTION_POINTS + 500
    gallery = rng.normal(size=(PROJECTION_POINTS + 2500, 8))
    queries = rng.normal(size=(n, 8))
    y_true = rng.integers(0, 10, n)
    y_pred = np.where(rng.random(n) < 0.05, (y_true + 1) % 10, y_true)

    root = _parse(projection_svg(gallery, queries, y_true, y_pred))

    dots = sum(len(g) for g in root.iter(f"{SVG}g"))
    crosses = sum(1 for p in root.iter(f"{SVG}path") if p.find(f"{SVG}title") is not None)
    assert crosses == int(np.sum(y_true != y_pred)) and dots + crosses == PROJECTION_POINTS
