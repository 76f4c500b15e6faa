"""The handler in-process: decoding and preprocessing, request formats, per-item errors in a batch.

The end-to-end behaviour through a real TorchServe is in test_serving.py; here the handler's
functions run directly on real images and on the real archive's model and index.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixture_run import cli_roots
from PIL import Image

from mnist_ct.artifacts import digits, knn
from mnist_ct.artifacts.testing import KNN_VOTE_CASES
from mnist_ct.deploy import handler
from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.handler import DigitService, RequestError, request_images


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit(runs) -> np.ndarray:
    return runs["good"].test.images[0]


# The conversion itself (alpha ink, 16-bit, inversion, resizing, 400/413) is mnist_ct.artifacts.digits, tested in
# libs/artifacts/tests/test_digits.py; here: the handler has no decoding of its own, and uses it per request.


def test_the_handler_decodes_with_the_one_shared_conversion():
    assert handler.decode_image is digits.decode_image and RequestError is digits.DigitImageError
    assert not hasattr(handler, "to_mnist")


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


SERVE_FROM_THE_ARCHIVE = """
import json, sys
sys.modules["mnist_ct"] = None  # no mnist_ct package importable, as in TorchServe's worker
sys.path.insert(0, sys.argv[1])  # TorchServe puts the unpacked archive on the worker's sys.path
import handler

class Context:
    system_properties = {"model_dir": sys.argv[1]}
    statuses = {}
    def set_response_status(self, code, phrase="", idx=0):
        self.statuses[idx] = code

context = Context()
handler.handle(None, context)
rows = [{"body": bytearray(open(path, "rb").read())} for path in sys.argv[2:]]
answers = handler.handle([*rows, {"body": bytearray(b"garbage")}], context)
print(json.dumps({
    "modules": [handler.knn_vote.__module__, handler.decode_image.__module__],
    "files": [handler.knn_vote.__code__.co_filename, handler.decode_image.__code__.co_filename],
    "answers": answers,
    "statuses": context.statuses,
}))
"""


def test_inside_the_archive_the_handler_serves_with_the_copies_beside_it_and_needs_no_mnist_ct(
    runs, unpacked, service, tmp_path
):
    # The real deployed archive, unpacked as TorchServe unpacks it, in a fresh interpreter that cannot import
    # mnist_ct: the handler loads, decodes with mnist_ct_digits.py and votes with mnist_ct_knn.py.
    test = runs["good"].test
    pngs = []
    for i, image in enumerate(test.images[:8]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(255 - image).resize((56, 56)).save(path)  # dark on light, twice the size: converted
        pngs.append(path)
    done = subprocess.run(
        [sys.executable, "-c", SERVE_FROM_THE_ARCHIVE, str(unpacked), *map(str, pngs)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["modules"] == ["mnist_ct_knn", "mnist_ct_digits"]
    assert [Path(f) for f in out["files"]] == [unpacked / "mnist_ct_knn.py", unpacked / "mnist_ct_digits.py"]
    in_process = service.handle([{"body": bytearray(p.read_bytes())} for p in pngs], RecordingContext())
    assert out["answers"][:8] == in_process  # the archive's copies answer exactly as the shared package
    assert out["answers"][8]["code"] == 400 and out["statuses"] == {"8": 400}
