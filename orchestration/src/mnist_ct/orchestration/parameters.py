"""Pipeline parameter values: typed by the compiled pipeline's definitions, and written back as KFP writes them.

One implementation for `run-local` (every parameter, defaults filled in) and `release --run` (only the
given ones: KFP fills in the defaults): an unknown name, or a value that is not of its declared type, is
an error naming the parameter before anything is created or sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from mnist_ct.orchestration.errors import OrchestrationError

TYPES = ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT")


def text_value(value: object) -> str:
    """A parameter value as KFP's launcher writes it into a command line (Go's FormatFloat 'f', -1)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _integer(value: object) -> int:
    if isinstance(value, str):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def _double(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError("not true/false")
    return text == "true"


def typed_value(value: object, parameter_type: str, what: str) -> object:
    """A value (from YAML, a file or the command line) converted to the declared parameter type."""
    if parameter_type not in TYPES:
        raise OrchestrationError(f"{what}: unsupported parameter type {parameter_type}")
    try:
        if parameter_type == "STRING":
            if not isinstance(value, str):
                raise ValueError("not a string")
            return value
        if parameter_type == "NUMBER_INTEGER":
            return _integer(value)
        if parameter_type == "NUMBER_DOUBLE":
            return _double(value)
        if parameter_type == "BOOLEAN":
            return _boolean(value)
        parsed = json.loads(value) if isinstance(value, str) else value
        if not isinstance(parsed, list if parameter_type == "LIST" else dict):
            raise ValueError(f"not a {parameter_type.lower()}")
        return parsed
    except (ValueError, TypeError, OverflowError) as e:
        raise OrchestrationError(f"{what}: {value!r} is not a valid {parameter_type} ({e})") from None


def typed_arguments(
    declared: Mapping[str, Mapping[str, Any]], given: Mapping[str, object], *, defaults: bool
) -> dict[str, object]:
    """The given values typed by `declared` (a pipeline's `inputDefinitions.parameters`).

    An unknown name is an error listing the known ones. With `defaults`, every declared parameter gets a
    value: the given one, else its default; one without either is an error.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise OrchestrationError(
            f"unknown pipeline parameter(s) {', '.join(unknown)}; the pipeline takes {', '.join(sorted(declared))}"
        )
    values: dict[str, object] = {}
    for name, definition in declared.items():
        kind = definition.get("parameterType", "")
        if name in given:
            values[name] = typed_value(given[name], kind, f"pipeline parameter {name}")
        elif not defaults:
            continue
        elif "defaultValue" in definition:
            values[name] = typed_value(definition["defaultValue"], kind, f"default of pipeline parameter {name}")
        elif not definition.get("isOptional"):
            raise OrchestrationError(f"pipeline parameter {name} has no default: give it a value")
    return values
