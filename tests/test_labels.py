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
    # case-sensitive order (upper case first)
    assert build_label_map(["b", "C", "a"]) == ["C", "a", "b"]


@pytest.mark.parametrize("variants", [["positive", "Positive"], ["1", "1.0"], ["1", "01"], ["NEG", "neg"]])
def test_label_spelling_variants_are_rejected_not_merged(variants):
    recs = [Record("t", lab, "train.csv", i + 2) for i, lab in enumerate(["negative", *variants])]
    with pytest.raises(DataError) as e:
        build_label_map(recs)
    msg = str(e.value)
    a, b = sorted(variants)
    assert f"{a!r} (first at train.csv, line {variants.index(a) + 3})" in msg
    assert f"{b!r} (first at train.csv, line {variants.index(b) + 3})" in msg
    assert "make the spelling consistent" in msg
    with pytest.raises(DataError, match="spelled differently"):
        build_label_map(variants + ["other"])  # plain strings: same check, no locations


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
    assert "dev.jsonl, line 7, field 'label': unknown label 'neutral'" in msg and "['negative', 'positive']" in msg


def test_encode_case_variant_hints_the_known_label():
    with pytest.raises(DataError) as e:
        encode_labels([Record("t", "Positive", "dev.tsv", 3)], ["negative", "positive"])
    assert "dev.tsv, line 3, field 'label': unknown label 'Positive'" in str(e.value)
    assert "Did you mean 'positive'?" in str(e.value)
