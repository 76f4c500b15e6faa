"""`mnist-ct release` never prints a credential, even when the server echoes it back in an error."""

from __future__ import annotations

import pytest
from conftest import release

TOKEN = "tok-51c2-never-print-me"


@pytest.mark.parametrize("source", ["environment", "token file"])
def test_a_token_echoed_back_in_an_error_is_not_printed(api, pinned_lock_file, tmp_path, monkeypatch, capsys, source):
    if source == "environment":
        monkeypatch.setenv("MNIST_CT_KFP_TOKEN", TOKEN)
    else:
        (tmp_path / "token").write_text(TOKEN + "\n")
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
    # A proxy or server that repeats the credentials it was sent in its error body.
    api.failures[("GET", "/pipelines")] = (401, f"invalid credentials: Authorization: Bearer {TOKEN}")
    assert release(api, pinned_lock_file) == 4
    out, err = capsys.readouterr()
    assert {r.authorization for r in api.state.requests if r.path != "/apis/v2beta1/healthz"} == {f"Bearer {TOKEN}"}
    assert TOKEN not in out + err
    assert err.startswith("mnist-ct release: error: KFP refused listing pipelines: HTTP 401")
    assert "Authorization: Bearer <redacted>" in err


def test_a_token_file_is_used_and_never_printed_on_a_full_release(api, pinned_lock_file, tmp_path, monkeypatch, capsys):
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
    assert release(api, pinned_lock_file, "--run") == 0
    assert {r.authorization for r in api.state.requests if r.path != "/apis/v2beta1/healthz"} == {f"Bearer {TOKEN}"}
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
