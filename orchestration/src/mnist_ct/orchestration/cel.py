"""The subset of CEL that the KFP compiler emits in `triggerPolicy.condition`, parsed and evaluated.

kfp 2.x turns `dsl.If(a > b)` (and `dsl.Elif`/`dsl.Else`, which negate earlier branches) into
strings such as

    inputs.parameter_values['pipelinechannel--analysis-accuracy'] > inputs.parameter_values['pipelinechannel--baseline']
    !(int(inputs.parameter_values['pipelinechannel--n']) == 3) && inputs.parameter_values['x'] != 'a'

Supported: `inputs.parameter_values['name']`, string/number/bool literals, `int(...)`, `double(...)`,
`string(...)`, the comparisons `== != < <= > >=`, `!`, `&&`, `||` and parentheses. Anything else
(another field, a function, arithmetic, a comparison of a string with a number) is a `CelError`,
never a silent `False`: a condition we cannot evaluate must stop the run, not skip a step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
CASTS = ("int", "double", "string")

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|\[|\]|\.|-)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


class CelError(ValueError):
    """The expression is outside the supported subset, or cannot be evaluated (one line)."""


@dataclass(frozen=True)
class Literal:
    value: bool | int | float | str


@dataclass(frozen=True)
class Parameter:
    name: str


@dataclass(frozen=True)
class Cast:
    to: str
    operand: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str  # a comparison, "&&" or "||"
    left: Node
    right: Node


Node = Literal | Parameter | Cast | Not | Binary


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise CelError(f"unsupported CEL at position {pos}: {text[pos : pos + 20]!r} in {text!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token = self.peek()
        if token is None or (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            found = "end of expression" if token is None else repr(token[1])
            raise CelError(f"expected {value or kind} but found {found} in {self.text!r}")
        self.pos += 1
        return token[1]

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] in values

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek() is not None:
            raise CelError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.at("||"):
            self.take("||")
            node = Binary("||", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.unary()
        while self.at("&&"):
            self.take("&&")
            node = Binary("&&", node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("!"):
            self.take("!")
            return Not(self.unary())
        return self.comparison()

    def comparison(self) -> Node:
        node = self.primary()
        if self.at(*COMPARISONS):
            op = self.take()
            node = Binary(op, node, self.primary())
            if self.at(*COMPARISONS):
                raise CelError(f"chained comparison is not supported in {self.text!r}")
        return node

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise CelError(f"unexpected end of {self.text!r}")
        kind, value = token
        if value == "(" and kind == "op":
            self.take("(")
            node = self.disjunction()
            self.take(")")
            return node
        if value == "-" and kind == "op":
            self.take("-")
            return Literal(-self.number(self.take(kind="number")))
        if kind == "number":
            return Literal(self.number(self.take()))
        if kind == "string":
            return Literal(_unquote(self.take()))
        if kind == "ident":
            self.take()
            if value in ("true", "false"):
                return Literal(value == "true")
            if value in CASTS:
                self.take("(")
                operand = self.disjunction()
                self.take(")")
                return Cast(value, operand)
            if value == "inputs":
                self.take(".")
                field = self.take(kind="ident")
                if field != "parameter_values":
                    raise CelError(f"unsupported reference inputs.{field} in {self.text!r}")
                self.take("[")
                name = _unquote(self.take(kind="string"))
                self.take("]")
                return Parameter(name)
            raise CelError(f"unsupported identifier {value!r} in {self.text!r}")
        raise CelError(f"unexpected {value!r} in {self.text!r}")

    @staticmethod
    def number(text: str) -> int | float:
        return float(text) if any(c in text for c in ".eE") else int(text)


def parse(text: str) -> Node:
    """Parse a condition; `CelError` if it is outside the supported subset."""
    return _Parser(text).parse()


def parameters(node: Node) -> set[str]:
    """The `inputs.parameter_values[...]` names an expression reads."""
    if isinstance(node, Parameter):
        return {node.name}
    if isinstance(node, Cast | Not):
        return parameters(node.operand)
    if isinstance(node, Binary):
        return parameters(node.left) | parameters(node.right)
    return set()


def _type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _cast(to: str, value: object, text: str) -> object:
    kind = _type(value)
    try:
        if to == "string":
            if kind == "bool":
                return "true" if value else "false"
            if kind in ("int", "double", "string"):
                return str(value)
        elif to == "double" and kind in ("int", "double", "string"):
            assert isinstance(value, (int, float, str))
            return float(value)
        elif to == "int" and kind in ("int", "string"):
            assert isinstance(value, (int, str))
            return int(value)
        elif to == "int" and kind == "double":
            assert isinstance(value, float)
            if not math.isfinite(value):
                raise ValueError("not finite")
            return int(value)  # CEL truncates toward zero, as int() does
    except ValueError:
        raise CelError(f"cannot convert {value!r} to {to} in {text!r}") from None
    raise CelError(f"no overload {to}({kind}) in {text!r}")


def _compare(op: str, left: object, right: object, text: str) -> bool:
    lt, rt = _type(left), _type(right)
    numeric = {"int", "double"}
    if not (lt == rt or (lt in numeric and rt in numeric)) or lt not in ("bool", "int", "double", "string"):
        raise CelError(f"no overload {lt} {op} {rt} in {text!r}")
    a, b = left, right
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,  # type: ignore[operator]
        "<=": a <= b,  # type: ignore[operator]
        ">": a > b,  # type: ignore[operator]
        ">=": a >= b,  # type: ignore[operator]
    }[op]


def _eval(node: Node, values: Mapping[str, object], text: str) -> object:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Parameter):
        if node.name not in values:
            raise CelError(f"unknown parameter {node.name!r} in {text!r}")
        return values[node.name]
    if isinstance(node, Cast):
        return _cast(node.to, _eval(node.operand, values, text), text)
    if isinstance(node, Not):
        return not _boolean(_eval(node.operand, values, text), "!", text)
    if node.op in ("&&", "||"):
        left = _boolean(_eval(node.left, values, text), node.op, text)
        if node.op == "&&" and not left:
            return False
        if node.op == "||" and left:
            return True
        return _boolean(_eval(node.right, values, text), node.op, text)
    return _compare(node.op, _eval(node.left, values, text), _eval(node.right, values, text), text)


def _boolean(value: object, op: str, text: str) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"{op} needs a bool, got {_type(value)} in {text!r}")
    return value


def evaluate(text: str, parameter_values: Mapping[str, object]) -> bool:
    """Evaluate a condition against the task's resolved input parameters."""
    return _boolean(_eval(parse(text), parameter_values, text), "condition", text)
