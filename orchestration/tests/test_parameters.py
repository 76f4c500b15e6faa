"""Pipeline parameter values: one typing and one unknown-name check for run-local and release."""

import pytest

from mnist_ct.orchestration.errors import OrchestrationError
from mnist_ct.orchestration.parameters import text_value, typed_arguments, typed_value

DECLARED: dict[str, dict[str, object]] = {
    "epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": 12.0},
    "baseline": {"parameterType": "NUMBER_DOUBLE", "defaultValue": 0.8},
    "dataset": {"parameterType": "STRING", "defaultValue": "mnist-5k"},
    "required": {"parameterType": "STRING"},
}


def test_values_are_written_as_kfp_writes_them():
    assert [text_value(v) for v in (0.8, 1.0, 1e-05, 3, True, "x", [1, 2])] == [
        "0.8", "1", "0.00001", "3", "true", "x", "[1,2]",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("3", "NUMBER_INTEGER", 3),
        ("2.0", "NUMBER_INTEGER", 2),
        (15.0, "NUMBER_INTEGER", 15),
        ("0.5", "NUMBER_DOUBLE", 0.5),
        (1, "NUMBER_DOUBLE", 1.0),
        ("True", "BOOLEAN", True),
        (False, "BOOLEAN", False),
        ("[1, 2]", "LIST", [1, 2]),
        ('{"a": 1}', "STRUCT", {"a": 1}),
        ("x", "STRING", "x"),
    ],
)
def test_a_value_is_converted_to_its_declared_type(value, kind, expected):
    assert typed_value(value, kind, "p") == expected


@pytest.mark.parametrize(
    ("value", "kind", "why"),
    [
        ("two", "NUMBER_INTEGER", "invalid literal"),
        ("1.5", "NUMBER_INTEGER", "not an integer"),
        ("1e400", "NUMBER_INTEGER", "not an integer"),
        (True, "NUMBER_INTEGER", "not an integer"),
        ("nan", "NUMBER_DOUBLE", "not a finite number"),
        ("-inf", "NUMBER_DOUBLE", "not a finite number"),
        ("high", "NUMBER_DOUBLE", "could not convert"),
        (True, "NUMBER_DOUBLE", "not a number"),
        ("yes", "BOOLEAN", "not true/false"),
        ("{}", "LIST", "not a list"),
        ("[", "STRUCT", "Expecting value"),
        (3, "STRING", "not a string"),
    ],
)
def test_bad_input_parameter_value_of_the_wrong_type_is_refused_naming_it(value, kind, why):
    with pytest.raises(OrchestrationError) as e:
        typed_value(value, kind, "pipeline parameter p")
    assert str(e.value).startswith(f"pipeline parameter p: {value!r} is not a valid {kind} (")
    assert why in str(e.value)


def test_an_unsupported_type_is_an_error():
    with pytest.raises(OrchestrationError, match="p: unsupported parameter type TASK_FINAL_STATUS"):
        typed_value("x", "TASK_FINAL_STATUS", "p")


def test_run_local_gets_every_parameter_with_defaults_and_release_only_the_given_ones():
    given = {"epochs": "2", "required": "r"}
    assert typed_arguments(DECLARED, given, defaults=True) == {
        "epochs": 2, "baseline": 0.8, "dataset": "mnist-5k", "required": "r",
    }  # fmt: skip
    assert typed_arguments(DECLARED, given, defaults=False) == {"epochs": 2, "required": "r"}


def test_bad_input_parameter_unknown_is_one_line_listing_the_known_ones():
    with pytest.raises(OrchestrationError) as e:
        typed_arguments(DECLARED, {"learning_rate": "0.1", "epoch": "3"}, defaults=False)
    assert str(e.value) == (
        "unknown pipeline parameter(s) epoch, learning_rate; the pipeline takes baseline, dataset, epochs, required"
    )


def test_a_parameter_without_default_must_be_given():
    with pytest.raises(OrchestrationError, match="pipeline parameter required has no default: give it a value"):
        typed_arguments(DECLARED, {}, defaults=True)
