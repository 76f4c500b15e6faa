"""The handler in-process: decoding and preprocessing, request formats, per-item errors in a batch.

The end-to-end behaviour through a real TorchServe is in test_serving.py; here the handler's
functions run directly on real images and on the real archive's model and index.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixture_run import cli_roots
from PIL import Image

from mnist_ct.artifacts import knn
from mnist_ct.artifacts.testing import KNN_VOTE_CASES
from mnist_ct.deploy import handler
from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.handler import DigitService, RequestError, decode_image, request_images


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit(runs) -> np.ndarray:
    return runs["good"].test.images[0]


def test_a_28x28_png_comes_back_pixel_for_pixel(digit):
    assert np.array_equal(decode_image(encode(Image.fromarray(digit))), digit)


def test_dark_on_light_is_inverted_to_white_on_black(digit):
    assert np.array_equal(decode_image(encode(Image.fromarray(255 - digit))), digit)


def test_any_size_and_colour_is_resized_to_28x28_grayscale(digit):
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    out = decode_image(encode(big, "JPEG", quality=95))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - digit.astype(int)).mean() < 12


def test_transparent_canvas_uses_alpha_as_ink(digit):
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # black strokes on a transparent background
    rgba[..., 3] = digit
    assert np.array_equal(decode_image(encode(Image.fromarray(rgba, "RGBA"))), digit)


def test_16_bit_png_is_scaled_not_clipped(digit):
    image = Image.fromarray(digit.astype(np.uint16) * 257)
    out = decode_image(encode(image))
    assert np.abs(out.astype(int) - digit.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"definitely not an image", 400, "not a PNG or JPEG"),
        (encode(Image.new("L", (28, 28)), "GIF"), 400, "not a PNG or JPEG"),
        (encode(Image.new("L", (28, 28)), "BMP"), 400, "not a PNG or JPEG"),
    ],
)
def test_non_images_get_400(data, status, words):
    with pytest.raises(RequestError) as e:
        decode_image(data)
    assert e.value.status == status and words in e.value.message


def test_truncated_png_gets_400(digit):
    with pytest.raises(RequestError) as e:
        decode_image(encode(Image.fromarray(digit).resize((200, 200)))[:300])
    assert e.value.status == 400


def test_image_with_too_many_pixels_gets_413_before_decoding():
    huge = encode(Image.new("L", (3000, 3000)))  # small file, 9 Mpixel
    with pytest.raises(RequestError) as e:
        decode_image(huge, max_pixels=1_000_000)
    assert e.value.status == 413 and "3000x3000" in e.value.message


def test_request_formats_all_yield_the_image_bytes(digit):
    png = encode(Image.fromarray(digit))
    b64 = base64.b64encode(png).decode()
    assert request_images({"body": bytearray(png)}) == ([png], False)
    assert request_images({"file": bytearray(png)}) == ([png], False)
    assert request_images({"body": {"data": b64}}) == ([png], False)
    assert request_images({"body": {"data": {"b64": b64}}}) == ([png], False)
    assert request_images({"body": {"data": "data:image/png;base64," + b64}}) == ([png], False)
    assert request_images({"body": {"instances": [{"data": b64}, b64]}}) == ([png, png], True)
    assert request_images({"data": b64}) == ([png], False)  # an instance from TorchServe's KServe envelope


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({}, "empty request"),
        ({"body": bytearray()}, "empty request body"),
        ({"body": "hello"}, "text, not an image"),
        ({"body": {"data": "***"}}, "not valid base64"),
        ({"body": {"text": "x"}}, '{"data"'),
        ({"body": {"instances": []}}, "non-empty list"),
        ({"a": b"1", "b": b"2"}, "one file field"),
    ],
)
def test_malformed_requests_get_400_naming_the_problem(row, words):
    with pytest.raises(RequestError) as e:
        request_images(row)
    assert e.value.status == 400 and words in e.value.message


class RecordingContext:
    """Stands in for TorchServe's Context: records the per-request statuses the handler sets."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}

    def set_response_status(self, code: int, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = code


@pytest.fixture(scope="module")
def unpacked(runs, tmp_path_factory) -> Path:
    """A real deployed archive, unpacked as TorchServe unpacks it."""
    root = tmp_path_factory.mktemp("handler")
    assert main(cli_roots(runs["good"], root / "deploy")) == 0
    with zipfile.ZipFile(root / "deploy/model-store/mnist.mar") as z:
        z.extractall(root / "unpacked")
    return root / "unpacked"


@pytest.fixture(scope="module")
def service(unpacked) -> DigitService:
    """The handler's service loaded from the unpacked archive."""
    return DigitService.from_model_dir(unpacked)


def test_a_batch_with_one_bad_item_answers_the_others(runs, service):
    test = runs["good"].test
    good = [{"body": bytearray(encode(Image.fromarray(im)))} for im in test.images[:5]]
    batch = [*good[:2], {"body": bytearray(b"garbage")}, *good[2:]]
    context = RecordingContext()
    answers = service.handle(batch, context)
    assert context.statuses == {2: 400}
    assert answers[2]["code"] == 400 and "not a PNG or JPEG" in answers[2]["message"]
    labels = [a["label"] for i, a in enumerate(answers) if i != 2]
    expected = [service.classify(test.images[i : i + 1])[0]["label"] for i in range(5)]
    assert labels == expected
    assert all(0.0 < a["score"] <= 1.0001 for i, a in enumerate(answers) if i != 2)


def test_service_accuracy_on_decoded_pngs_equals_the_runs_accuracy(runs, service):
    test = runs["good"].test
    batch = [{"body": bytearray(encode(Image.fromarray(im)))} for im in test.images]
    answers = service.handle(batch, RecordingContext())
    accuracy = np.mean([a["label"] == y for a, y in zip(answers, test.labels, strict=True)])
    assert accuracy == pytest.approx(runs["good"].accuracy, abs=1e-3)


def test_module_entry_point_loads_once_from_model_dir(service, monkeypatch):
    class Context:
        system_properties = {"model_dir": None}

    monkeypatch.setattr(handler, "_service", service)
    assert handler.handle(None, Context()) is None
    answers = handler.handle([{"body": bytearray(b"x")}], RecordingContext())
    assert answers is not None and answers[0]["code"] == 400


# The one vote table (mnist_ct.artifacts.testing.KNN_VOTE_CASES, also run against knn_vote itself, which analysis
# calls): here each case goes through the handler's own path, from FAISS's search result (ids into the gallery,
# -1 for none) to the answer it sends.


def search_result(neighbour_labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gallery and what FAISS returns for one query whose neighbours carry `neighbour_labels`."""
    gallery = np.array([max(label, 0) for label in neighbour_labels], dtype=np.int64)
    ids = np.array([[i if label >= 0 else -1 for i, label in enumerate(neighbour_labels)]], dtype=np.int64)
    return gallery, np.array([scores], dtype=np.float32), ids


@pytest.mark.parametrize(("labels", "scores", "vote", "label", "score"), KNN_VOTE_CASES)
def test_the_handler_answers_the_vote_table_as_analysis_votes(labels, scores, vote, label, score):
    gallery, d, ids = search_result(labels, scores)
    assert handler.answers(gallery, d, ids, vote) == [{"label": label, "score": pytest.approx(score, abs=1e-6)}]
    predicted, best = knn.knn_vote(np.array([labels]), d, vote)  # what analysis computes from the same search
    assert (int(predicted[0]), float(best[0])) == (label, pytest.approx(score, abs=1e-6))


def test_the_handler_and_the_shared_vote_agree_on_random_batches():
    rng = np.random.default_rng(0)
    gallery = rng.integers(0, 10, 50)
    ids = rng.integers(-1, 50, (300, 7))
    scores = -np.sort(-rng.random((300, 7)).astype(np.float32), axis=1)
    for vote in knn.VOTES:
        labels, best = knn.knn_vote(np.where(ids >= 0, gallery[np.clip(ids, 0, None)], -1), scores, vote)
        served = handler.answers(gallery, scores, ids, vote)
        assert [a["label"] for a in served] == labels.tolist()
        assert [a["score"] for a in served] == pytest.approx(best.tolist(), abs=1e-6)


def test_the_handler_has_no_vote_of_its_own():
    assert handler.knn_vote is knn.knn_vote  # outside TorchServe: the one in mnist_ct.artifacts
    assert not hasattr(handler, "vote")


def test_inside_the_archive_the_handler_votes_with_the_copy_beside_it_and_needs_no_mnist_ct(unpacked):
    # As TorchServe loads it: the unpacked archive on sys.path, and here no mnist_ct package importable.
    code = (
        "import sys; sys.modules['mnist_ct'] = None; sys.path.insert(0, sys.argv[1]); import handler; "
        "print(handler.knn_vote.__module__, handler.knn_vote.__code__.co_filename)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(unpacked)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    module, filename = done.stdout.split()
    assert module == "mnist_ct_knn" and Path(filename) == unpacked / "mnist_ct_knn.py"
