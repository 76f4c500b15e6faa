import pytest
import yaml
from kfp import compiler, dsl

from mnist_ct.orchestration import cel


@dsl.container_component
def produce(n: dsl.OutputPath(int), x: dsl.OutputPath(float), s: dsl.OutputPath(str)):  # type: ignore[valid-type]
    return dsl.ContainerSpec(image="busybox", command=["true"], args=[n, x, s])


@dsl.container_component
def consume():
    return dsl.ContainerSpec(image="busybox", command=["true"])


def emitted_conditions(tmp_path) -> dict[str, str]:
    """The conditions kfp itself writes for If/Elif/Else over int, float, string and bool operands."""

    @dsl.pipeline(name="conditions")
    def p(limit: float = 0.5, name: str = "a", flag: bool = True):
        out = produce()
        with dsl.If(out.outputs["x"] > limit, name="float-gt-param"):
            consume()
        with dsl.If(out.outputs["n"] >= 3, name="int-ge-const"):
            consume()
        with dsl.If(out.outputs["n"] < 2.5, name="int-lt-float"):
            consume()
        with dsl.If(out.outputs["s"] == name, name="str-eq"):
            consume()
        with dsl.If(flag == True, name="bool-eq"):  # noqa: E712 - a pipeline channel, not a bool
            consume()
        with dsl.If(out.outputs["s"] == "yes", name="if"):
            consume()
        with dsl.Elif(out.outputs["s"] == "no", name="elif"):
            consume()

    path = tmp_path / "c.yaml"
    compiler.Compiler().compile(p, str(path))
    doc = next(yaml.safe_load_all(path.read_text()))
    found = {}

    def visit(dag):
        for task in dag["tasks"].values():
            if "triggerPolicy" in task:
                found[task["taskInfo"]["name"]] = task["triggerPolicy"]["condition"]
            comp = doc["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                visit(comp["dag"])

    visit(doc["root"]["dag"])
    return found


def test_conditions_that_kfp_emits_evaluate_as_python_would(tmp_path):
    c = emitted_conditions(tmp_path)
    values = {
        "pipelinechannel--produce-x": 0.7,
        "pipelinechannel--limit": 0.5,
        "pipelinechannel--produce-n": 3.0,  # KFP passes every number as a double
        "pipelinechannel--produce-s": "no",
        "pipelinechannel--name": "no",
        "pipelinechannel--flag": True,
    }
    assert cel.evaluate(c["float-gt-param"], values) is True
    assert cel.evaluate(c["int-ge-const"], values) is True  # int(3.0) >= 3
    assert cel.evaluate(c["int-lt-float"], values) is False  # double(int(3.0)) < 2.5
    assert cel.evaluate(c["str-eq"], values) is True
    assert cel.evaluate(c["bool-eq"], values) is True
    assert cel.evaluate(c["if"], values) is False
    assert "!(" in c["elif"] and cel.evaluate(c["elif"], values) is True  # not "yes", and "no"
    assert cel.evaluate(c["float-gt-param"], {**values, "pipelinechannel--produce-x": 0.5}) is False


def test_the_deploy_condition_compares_accuracy_with_baseline():
    text = (
        "inputs.parameter_values['pipelinechannel--analysis-accuracy'] > "
        "inputs.parameter_values['pipelinechannel--baseline']"
    )
    assert cel.parameters(cel.parse(text)) == {"pipelinechannel--analysis-accuracy", "pipelinechannel--baseline"}
    assert cel.evaluate(text, {"pipelinechannel--analysis-accuracy": 0.93, "pipelinechannel--baseline": 0.8})
    assert not cel.evaluate(text, {"pipelinechannel--analysis-accuracy": 0.93, "pipelinechannel--baseline": 1.01})
    assert not cel.evaluate(text, {"pipelinechannel--analysis-accuracy": 0.8, "pipelinechannel--baseline": 0.8})


def test_literals_casts_and_connectives():
    assert cel.evaluate("int(inputs.parameter_values['n']) == -2", {"n": -2.9})  # truncates toward zero
    assert cel.evaluate("double('1.5') > 1 && !(1e-3 >= 0.01) || false", {})
    assert cel.evaluate("'a\\'b' == \"a'b\"", {})
    assert cel.evaluate("string(true) == 'true'", {})


@pytest.mark.parametrize(
    "text",
    [
        "size(inputs.parameter_values['s']) > 1",  # a function KFP does not emit
        "inputs.parameters['x'] > 1",  # another field
        "inputs.parameter_values['x'] + 1 > 2",  # arithmetic
        "inputs.parameter_values['x'] > 1 > 0",  # chained comparison
        "inputs.parameter_values['x'] >",  # truncated
        "inputs.parameter_values['x'] in [1, 2]",
        "",
    ],
)
def test_expressions_outside_the_subset_are_refused(text):
    with pytest.raises(cel.CelError):
        cel.evaluate(text, {"x": 1.0, "s": "a"})


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("inputs.parameter_values['x'] > 'a'", {"x": 1.0}, "no overload double > string"),
        ("inputs.parameter_values['missing'] > 1", {}, "unknown parameter 'missing'"),
        ("inputs.parameter_values['x']", {"x": 1.0}, "needs a bool"),
        ("!inputs.parameter_values['x']", {"x": 1.0}, "needs a bool"),
        ("int('x') > 1", {}, "cannot convert"),
    ],
)
def test_type_errors_are_errors_not_false(text, values, message):
    with pytest.raises(cel.CelError, match=message):
        cel.evaluate(text, values)
