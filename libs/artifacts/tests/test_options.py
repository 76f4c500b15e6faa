"""Option types every step shares: checked when parsed, so bad values never reach the work."""

from __future__ import annotations

import argparse

import pytest

from mnist_ct.artifacts import (
    MAX_SEED,
    UsageError,
    add_threads_argument,
    bounded_float,
    bounded_int,
    check_low_high,
    seed_value,
    thread_count,
)


def parse(kind, text: str):
    parser = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    parser.add_argument("--x", type=kind)
    return parser.parse_args(["--x", text]).x


@pytest.mark.parametrize("text", ["-1", str(MAX_SEED + 1), "1.5", "abc", ""])
def test_bad_input_seeds_outside_0_to_2_32_are_refused(text):
    with pytest.raises(argparse.ArgumentError):
        parse(seed_value, text)


def test_seeds_at_the_limits_are_accepted():
    assert parse(seed_value, "0") == 0 and parse(seed_value, str(MAX_SEED)) == MAX_SEED


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "1", "-0.5"])
def test_bad_input_floats_outside_an_open_interval_or_not_finite_are_refused(text):
    with pytest.raises(argparse.ArgumentError):
        parse(bounded_float(0, 1, low_open=True, high_open=True), text)


def test_floats_inside_the_bounds_are_accepted():
    assert parse(bounded_float(0, 1), "0") == 0.0 and parse(bounded_float(0, 1), "1") == 1.0
    assert parse(bounded_float(0, 1, low_open=True), "1e-9") == 1e-9


def test_the_message_names_the_range(capsys):
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--epochs", type=bounded_int(1, 10000))
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--epochs", "10001"])
    assert e.value.code == 2
    assert "argument --epochs: must be from 1 to 10000, got 10001" in capsys.readouterr().err


def test_threads_mean_every_core_at_0_and_are_bounded():
    parser = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    add_threads_argument(parser, "torch")
    assert parser.parse_args([]).threads == 0
    assert thread_count(parser.parse_args([]).threads) >= 1
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--threads", "-1"])
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--threads", "100000"])


def test_bad_input_a_low_above_its_high_is_refused():
    check_low_high("--mean-bounds", 0.1, 0.1)
    with pytest.raises(UsageError, match="--mean-bounds: LOW 0.5 is above HIGH 0.1"):
        check_low_high("--mean-bounds", 0.5, 0.1)
