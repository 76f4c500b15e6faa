import gzip
import hashlib

import numpy as np
import pytest
from idx_files import idx_bytes

from mnist_ct.artifacts import ArtifactError
from mnist_ct.preprocess.download import RetryPolicy, check_mirror, fetch
from mnist_ct.preprocess.sources import RemoteFile

FAST = RetryPolicy(attempts=3, backoff_s=0.0, timeout_s=5.0)
NAME = "train-labels-idx1-ubyte.gz"
BODY = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 10, 5000, dtype=np.uint8)), mtime=0)
# The checksums are those of the file this test serves: the downloader takes them as data.
GOOD = RemoteFile(NAME, hashlib.sha256(BODY).hexdigest(), len(BODY))


def cache_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_verifies_and_caches(tmp_path, server):
    server.routes[f"/m/{NAME}"] = BODY
    path = fetch(GOOD, [server.url + "/m/"], tmp_path / "raw", FAST)
    assert path == tmp_path / "raw" / NAME and path.read_bytes() == BODY
    assert cache_files(tmp_path / "raw") == [NAME]  # no temporary file left beside it


def test_cached_file_is_reused_without_a_request(tmp_path, server):
    server.routes[f"/{NAME}"] = BODY
    fetch(GOOD, [server.url], tmp_path, FAST)
    fetch(GOOD, [server.url], tmp_path, FAST)
    assert server.hits[f"/{NAME}"] == 1


def test_corrupt_cached_file_is_downloaded_again(tmp_path, server):
    server.routes[f"/{NAME}"] = BODY
    (tmp_path / NAME).write_bytes(b"stale")
    assert fetch(GOOD, [server.url], tmp_path, FAST).read_bytes() == BODY


def test_checksum_mismatch_caches_nothing_and_names_mirror_and_checksum(tmp_path, server):
    server.routes[f"/{NAME}"] = BODY
    wrong = RemoteFile(NAME, "0" * 64)
    with pytest.raises(ArtifactError) as e:
        fetch(wrong, [server.url], tmp_path / "raw", FAST)
    message = str(e.value)
    assert f"{server.url}/{NAME}: sha256 {GOOD.sha256} does not match the expected {'0' * 64}" in message
    assert f"expected sha256 {'0' * 64}" in message and "\n" not in message
    assert cache_files(tmp_path / "raw") == []
    assert server.hits[f"/{NAME}"] == 1  # a mismatch is not retried on the same mirror


def test_wrong_size_is_a_mismatch(tmp_path, server):
    server.routes[f"/{NAME}"] = BODY + b"x"
    with pytest.raises(ArtifactError, match=rf"served {len(BODY) + 1} bytes, expected {len(BODY)}"):
        fetch(GOOD, [server.url], tmp_path, FAST)
    assert cache_files(tmp_path) == []


def test_first_mirror_down_then_second_works(tmp_path, server, dead_url):
    server.routes[f"/{NAME}"] = BODY
    path = fetch(GOOD, [dead_url, server.url], tmp_path, FAST)
    assert path.read_bytes() == BODY


def test_missing_file_on_first_mirror_goes_to_the_next_without_retrying(tmp_path, server):
    server.routes[f"/b/{NAME}"] = BODY
    fetch(GOOD, [server.url + "/a", server.url + "/b"], tmp_path, FAST)
    assert server.hits[f"/a/{NAME}"] == 1 and server.hits[f"/b/{NAME}"] == 1


def test_interrupted_transfer_is_retried(tmp_path, server):
    # The first response announces the full length but hangs up halfway; the second is whole.
    server.routes[f"/{NAME}"] = lambda hit: (BODY, len(BODY) // 2) if hit == 1 else BODY
    path = fetch(GOOD, [server.url], tmp_path, FAST)
    assert path.read_bytes() == BODY and server.hits[f"/{NAME}"] == 2


def test_transfer_interrupted_every_time_fails_and_caches_nothing(tmp_path, server):
    server.routes[f"/{NAME}"] = (BODY, 100)
    with pytest.raises(ArtifactError) as e:
        fetch(GOOD, [server.url], tmp_path / "raw", FAST)
    assert f"transfer interrupted after 100 of {len(BODY)} bytes (gave up after 3 attempts)" in str(e.value)
    assert server.hits[f"/{NAME}"] == 3
    assert cache_files(tmp_path / "raw") == []


def test_server_errors_are_retried(tmp_path, server):
    server.routes[f"/{NAME}"] = lambda hit: 503 if hit < 3 else BODY
    assert fetch(GOOD, [server.url], tmp_path, FAST).read_bytes() == BODY
    assert server.hits[f"/{NAME}"] == 3


def test_every_mirror_failing_lists_each(tmp_path, server, dead_url):
    with pytest.raises(ArtifactError) as e:
        fetch(GOOD, [dead_url, server.url], tmp_path, FAST)
    message = str(e.value)
    assert f"{dead_url}/{NAME}: cannot connect" in message
    assert f"{server.url}/{NAME}: HTTP 404" in message
    assert f"expected sha256 {GOOD.sha256}" in message


def test_a_file_url_mirror_is_copied_and_verified(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / NAME).write_bytes(BODY)
    path = fetch(GOOD, [f"file://{tmp_path / 'mirror'}/"], tmp_path / "raw", FAST)
    assert path.read_bytes() == BODY and cache_files(tmp_path / "raw") == [NAME]


def test_a_file_url_mirror_without_the_file_is_not_retried(tmp_path):
    (tmp_path / "mirror").mkdir()
    with pytest.raises(ArtifactError) as e:
        fetch(GOOD, [f"file://{tmp_path / 'mirror'}"], tmp_path / "raw", FAST)
    assert f"file://{tmp_path / 'mirror'}/{NAME}: not found (No such file or directory)" in str(e.value)
    assert "gave up after" not in str(e.value) and cache_files(tmp_path / "raw") == []


@pytest.mark.parametrize(
    "url", ["http://example.org/mnist/", "https://example.org:8443/a/b", "file:///srv/mnist/", "file://localhost/x"]
)
def test_good_mirror_urls_are_accepted(url):
    assert check_mirror(url) == url
