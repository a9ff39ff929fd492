"""benchmarks/bench.py's round summary: the MFU denominator and what is reported about it."""

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench  # noqa: E402


def _variant(useful_flops_per_s):
    return {"useful_flops_per_s": useful_flops_per_s, "executed_flops_per_s": 2 * useful_flops_per_s,
            "examples_per_s": 10.0, "examples_per_s_wall": 9.0}


@pytest.fixture
def rounds():
    return [
        # a slow reading at the start: the round divides by the end's
        {"peak": {"jax_flops_per_s": 100e9}, "c": _variant(60e9), "peak_end": {"jax_flops_per_s": 200e9}},
        # the end measurement failed: one reading, said so
        {"peak": {"jax_flops_per_s": 150e9}, "c": _variant(60e9), "peak_end": {"error": "RuntimeError: end"}},
        # no peak at all: no MFU, and the checks fail
        {"peak": {"error": "RuntimeError: start"}, "c": _variant(60e9), "peak_end": {"error": "RuntimeError: end"}},
    ]


def test_each_round_divides_by_the_higher_of_its_two_peaks(rounds):
    summary = bench.summarise(rounds, ["c"])
    assert [r["round_peak_flops_per_s"] for r in rounds] == [200e9, 150e9, None]
    assert [r["c"].get("mfu_useful") for r in rounds] == [0.3, 0.4, None]
    assert rounds[0]["c"]["mfu_executed"] == 0.6
    peak = summary["variants"]["peak"]
    assert peak["round_peaks"] == [200e9, 150e9, None]
    assert peak["round_peak_flops_per_s"] == 175e9  # median of the rounds that have one
    assert peak["jax_flops_per_s"] == 150e9  # median of every measurement: 100, 200, 150
    assert summary["variants"]["c"]["mfu_useful"] == pytest.approx(0.35)


def test_spread_and_missing_peaks_are_reported(rounds):
    assert bench.peak_spreads(rounds) == [
        "round 1: matmul peak 100 GFLOP/s at the start, 200 at the end; that round's MFU uses the higher one",
        "round 2: only the start matmul peak was measured; that round's MFU rests on one reading",
    ]
    close = [{"peak": {"jax_flops_per_s": 100e9}, "peak_end": {"jax_flops_per_s": 86e9}}]
    assert bench.peak_spreads(close) == []  # 14% apart: within PEAK_SPREAD_NOTE


def test_a_round_without_any_peak_fails_the_checks(rounds):
    bench.summarise(rounds, ["c"])
    args = types.SimpleNamespace(examples=None)
    problems = [p for p in bench.checks(rounds, ["c"], args) if "peak" in p]
    assert problems == ["round 3: no matmul peak was measured, so that round has no MFU "
                        "(RuntimeError: start; RuntimeError: end)"]
