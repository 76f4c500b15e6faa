"""What the images leave out (tools/wheelhouse.py UNUSED and PRUNE), on small fixture wheels: which
distributions are dropped and when a rule is refused, which installed paths prune.txt names, and that the
resolution cache is never written through. The real images: tools/tests/test_images.py (the fixture step's
numpy test suites are pruned in its image) and docs/delivery.md "What the images leave out"."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from tools import wheelhouse
from tools.monorepo import dist_name
from tools.wheelhouse import WheelhouseError


def wheel(folder: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = (), files: tuple[str, ...] = ()):
    """A minimal wheel: METADATA with Requires-Dist lines, and the given files."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{stem}-{version}.dist-info/METADATA", meta)
        for f in files or (f"{stem}/__init__.py",):
            z.writestr(f, "")
    return path


def test_requires_reads_requires_dist_without_the_extras(tmp_path):
    requires = ("uvicorn[standard]<1,>=0.30", "Grpcio_Tools (>=1.7)", 'pandas>=2; python_version >= "3.9"',
                'ray[serve]; extra == "ray"')  # fmt: skip
    w = wheel(tmp_path, "kserve", requires=requires)
    assert wheelhouse.requires(w) == {"uvicorn", "grpcio-tools", "pandas"}


def test_a_rule_leaves_out_its_distributions_only_where_its_requirer_is(tmp_path):
    rules = {"big": {"helper": "why", "helpers-dep": "why"}}
    a = tmp_path / "a"
    with_big = {"big": wheel(a, "big", requires=("helper",)), "helper": wheel(a, "helper", requires=("helpers-dep",)),
                "helpers-dep": wheel(a, "helpers-dep"), "other": wheel(a, "other")}  # fmt: skip
    assert wheelhouse.left_out(with_big, rules) == {"helper", "helpers-dep"}
    without = {"helper": wheel(tmp_path / "b", "helper"), "other": wheel(tmp_path / "b", "other")}
    assert wheelhouse.left_out(without, rules) == set()


def test_a_rule_is_refused_when_a_kept_wheel_needs_what_it_leaves_out_or_it_is_stale(tmp_path):
    rules = {"big": {"helper": "why"}}
    needed = {"big": wheel(tmp_path / "a", "big", requires=("helper",)), "helper": wheel(tmp_path / "a", "helper"),
              "user": wheel(tmp_path / "a", "user", requires=("helper>=1",))}  # fmt: skip
    with pytest.raises(WheelhouseError, match=r"user requires helper, which UNUSED\['big'\] leaves out"):
        wheelhouse.left_out(needed, rules)
    stale = {"big": wheel(tmp_path / "b", "big")}
    with pytest.raises(WheelhouseError, match="leaves out helper, which the resolution does not have"):
        wheelhouse.left_out(stale, rules)


def test_prune_paths_match_per_component_collapse_nested_paths_and_keep_what_is_kept(tmp_path):
    files = ("lib/__init__.py", "lib/tests/t.py", "lib/sub/tests/data/x.bin", "lib/sub/tests/t.py", "lib/sub/m.py",
             "lib/bin/tool_test", "lib/bin/needed", "lib/testing/__init__.py", "lib/a/b/tests/t.py")  # fmt: skip
    wheels = {"lib": wheel(tmp_path, "lib", files=files)}
    rules = {"lib": [("lib/tests", ""), ("lib/*/tests", ""), ("lib/bin/*", ""), ("lib/sub", "")], "absent": [("x", "")]}
    assert wheelhouse.prune_paths(wheels, {"lib": rules["lib"][:3]}, keep={"lib/bin/needed"}) == [
        "lib/bin/tool_test", "lib/sub/tests", "lib/tests",
    ]  # fmt: skip
    assert wheelhouse.prune_paths(wheels, {"lib": [("lib/**/tests", "")]}, keep=set()) == [
        "lib/a/b/tests", "lib/sub/tests", "lib/tests",
    ]  # fmt: skip
    # lib/sub takes lib/sub/tests with it; a rule for a distribution not in the image does nothing.
    assert "lib/sub/tests" not in wheelhouse.prune_paths(wheels, rules, keep=set())
    with pytest.raises(WheelhouseError, match=r"PRUNE\['lib'\]: lib/nothing matches nothing"):
        wheelhouse.prune_paths(wheels, {"lib": [("lib/nothing", "")]}, keep=set())


def test_slim_deps_drops_wheels_and_requirements_and_never_writes_into_the_cache(tmp_path, monkeypatch):
    cache, deps = tmp_path / "cache", tmp_path / "deps"
    big = wheel(cache, "big", requires=("helper",), files=("big/__init__.py", "big/tests/t.py"))
    helper = wheel(cache, "helper")
    lines = [f"big==1.0 --hash=sha256:{'a' * 64}", f"helper==1.0 --hash=sha256:{'b' * 64}"]
    (cache / "requirements.txt").write_text("".join(f"{line}\n" for line in lines))
    wheelhouse._link_tree(cache, deps)
    monkeypatch.setattr(wheelhouse, "UNUSED", {"big": {"helper": "why"}})
    monkeypatch.setattr(wheelhouse, "PRUNE", {"big": [("big/tests", "why")]})
    assert wheelhouse.slim_deps(deps) == (["helper==1.0"], ["big/tests"])
    assert sorted(f.name for f in deps.iterdir()) == sorted([big.name, "prune.txt", "requirements.txt"])
    assert (deps / "requirements.txt").read_text() == lines[0] + "\n"
    assert (deps / "prune.txt").read_text() == "big/tests\n"
    assert helper.is_file() and (cache / "requirements.txt").read_text().count("\n") == 2  # the cache is intact
    assert os.stat(deps / big.name).st_ino == os.stat(big).st_ino  # still a link, not a copy


def test_the_rules_name_pinned_distributions_and_say_why():
    pinned = {
        dist_name(line)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for requirer, rules in wheelhouse.UNUSED.items():
        assert requirer in pinned and all(name in pinned and why for name, why in rules.items()), requirer
    for name, patterns in wheelhouse.PRUNE.items():
        assert name in pinned and all(p.startswith(name.replace("-", "_") + "/") and why for p, why in patterns)
    assert all(re.fullmatch(r"[\w./-]+", p) for p in wheelhouse.KEEP)


def test_the_template_installs_exactly_the_requirements_and_prunes_in_the_same_layer():
    text = (REPO / "tools" / "step.Dockerfile").read_text()
    [deps_run] = [block for block in text.split("\nRUN ") if "source=deps," in block]
    assert "--no-deps" in deps_run and "-r /wheels/requirements.txt" in deps_run
    assert "--arg-file=/wheels/prune.txt" in deps_run and "rm -r --" in deps_run and "rm -rf" not in deps_run


def test_the_image_installs_with_pip_run_from_its_wheel_and_has_no_pip():
    text = (REPO / "tools" / "step.Dockerfile").read_text()
    assert "python3 -m venv --without-pip /opt/venv" in text
    assert text.count('python "$pip_wheel/pip" install') == 2 and "source=deps/pip,target=/pip" in text
