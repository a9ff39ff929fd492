"""Tests for flaxtune.data.labels."""

from __future__ import annotations

import numpy as np
import pytest

from flaxtune.data import DataError, Record, build_label_map, encode_labels


def test_numeric_labels_sort_numerically():
    assert build_label_map(["10", "2", "1", "2", "10"]) == ["1", "2", "10"]
    assert build_label_map(["1", "-1", "0"]) == ["-1", "0", "1"]


def test_string_labels_sort_as_strings():
    assert build_label_map(["positive", "negative", "positive"]) == ["negative", "positive"]
    # mixed ints and strings -> plain string order
    assert build_label_map(["10", "2", "x"]) == ["10", "2", "x"]
    # case-sensitive
    assert build_label_map(["b", "B", "a"]) == ["B", "a", "b"]


def test_deterministic_regardless_of_order():
    a = ["c", "a", "b", "a"]
    assert build_label_map(a) == build_label_map(reversed(a)) == ["a", "b", "c"]
    assert build_label_map(iter(["1", "0"])) == ["0", "1"]


def test_single_class_raises():
    with pytest.raises(DataError) as e:
        build_label_map(["positive"] * 3)
    assert "'positive'" in str(e.value) and "at least 2" in str(e.value)
    with pytest.raises(DataError, match="no labels"):
        build_label_map([])


def test_none_label_raises():
    with pytest.raises(DataError, match="validate_records"):
        build_label_map(["a", None, "b"])


def test_encode_labels():
    recs = [Record("t", lab, "f.tsv", i + 2) for i, lab in enumerate(["1", "10", "2", "1"])]
    names = build_label_map(r.label for r in recs)
    ids = encode_labels(recs, names)
    assert ids.dtype == np.int32
    assert ids.tolist() == [0, 2, 1, 0]
    assert encode_labels([], names).shape == (0,)


def test_encode_unknown_label():
    recs = [Record("t", "positive", "dev.jsonl", 1), Record("t", "neutral", "dev.jsonl", 7)]
    with pytest.raises(DataError) as e:
        encode_labels(recs, ["negative", "positive"])
    msg = str(e.value)
    assert "'neutral'" in msg and "dev.jsonl, line 7" in msg and "['negative', 'positive']" in msg
