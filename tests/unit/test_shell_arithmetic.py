"""The emulated sh's arithmetic expansion `$((...))`: the evaluator alone, then in scripts run
by a container (output and exit status as busybox ash gives them)."""

from __future__ import annotations

import asyncio

import pytest
from log_texts import texts

from controlplane.agent.arithmetic import ShellArithmeticError, evaluate
from controlplane.agent.runtime import ContainerConfig, Runtime

WAIT = 30.0


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3),
        ("-7 / 2", -3),  # truncates toward zero, as C
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("2 - 3 - 4", -5),  # left to right
        ("x * 2 + $y", 13),
        ("${x} > 4 && y <= 3", 1),
        ("x == 5 || z", 1),
        ("unset + 1", 1),  # unset is 0
        ("empty + 1", 1),
        ("1 < 2", 1),
        ("2 >= 3", 0),
        ("4 != 4", 0),
        ("!0 + -(-3) + ~0", 3),
        ("0x10 + 010", 24),
        ("1 << 4 | 1", 17),
        ("6 & 3 ^ 1", 3),
        ("x > 3 ? 10 : 20", 10),
        ("9223372036854775807 + 1", -9223372036854775808),  # 64-bit wrap
        ("", 0),
        ("$?", 4),
    ],
)
def test_expressions(expression: str, value: int) -> None:
    env = {"x": "5", "y": " 3 ", "empty": ""}
    assert evaluate(expression, env, status=4) == value


def test_assignments_set_variables() -> None:
    env = {"i": "1"}
    assert evaluate("i += 2", env) == 3
    assert evaluate("j = i * 2", env) == 6
    assert env == {"i": "3", "j": "6"}


@pytest.mark.parametrize(
    ("expression", "value", "i"),
    [
        ("1 ? 2 : 1 / 0", 2, "1"),
        ("0 ? (i = 9) : i + 1", 2, "1"),
        ("1 ? i : word", 1, "1"),  # not even looked up
        ("0 ? (1 ? 1 / 0 : 2) : 3", 3, "1"),
        ("1 ? (0 ? 1 / 0 : (i = 4)) : 5", 4, "4"),
        ("1 || (i += 9)", 1, "10"),  # busybox's && and || evaluate both sides
        ("0 && (i = 9)", 0, "9"),
    ],
)
def test_the_branch_not_taken_is_not_evaluated(expression: str, value: int, i: str) -> None:
    env = {"i": "1", "word": "not a number"}
    assert evaluate(expression, env) == value
    assert env["i"] == i


def test_and_or_still_divide_on_both_sides() -> None:
    with pytest.raises(ShellArithmeticError, match=r"^divide by zero$"):
        evaluate("0 && 1 / 0", {})


def test_the_branch_not_taken_must_still_parse() -> None:
    with pytest.raises(ShellArithmeticError, match=r"^arithmetic syntax error$"):
        evaluate("0 ? (1 + : 2", {})


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("1 / 0", "divide by zero"),
        ("5 % (2 - 2)", "divide by zero"),
        ("1 +", "arithmetic syntax error"),
        ("(1", "arithmetic syntax error"),
        ("2 3", "arithmetic syntax error"),
        ("08", "arithmetic syntax error"),  # not octal
        ("1 @ 2", "arithmetic syntax error"),
        ("word", "arithmetic syntax error"),  # its value is no integer
    ],
)
def test_bad_expressions_say_why(expression: str, words: str) -> None:
    with pytest.raises(ShellArithmeticError, match=f"^{words}$"):
        evaluate(expression, {"word": "hello"})


async def run(script: str) -> tuple[int, list[str]]:
    runtime = Runtime()
    container = runtime.create(ContainerConfig("busybox", args=["sh", "-c", script]))
    await runtime.start(container.id)
    code = await asyncio.wait_for(runtime.wait(container.id), WAIT)
    return code, texts(container.logs)


@pytest.mark.parametrize(
    ("script", "code", "output"),
    [
        ("echo $((1 + 2))", 0, ["3"]),
        ('n=4; echo "n*n=$((n * n))" $(( (n + 2) % 4 ))', 0, ["n*n=16 2"]),
        ("i=1; i=$((i + 1)); : $((i += 10)); echo $i", 0, ["12"]),
        ("exit $((3 > 2))", 1, []),
        ("false; echo $(($? * 5))", 0, ["5"]),
        ("echo $((1 / 0)); echo after", 2, ["sh: divide by zero"]),
        ("echo $((1 +))", 2, ["sh: arithmetic syntax error"]),
        ("echo $((1 + 2)", 2, ["sh: syntax error: missing '))'"]),
    ],
)
def test_scripts_with_arithmetic(script: str, code: int, output: list[str]) -> None:
    assert asyncio.run(run(script)) == (code, output)
