"""data.eval_fraction: an eval set held out of the one training file (IMDB has no other)."""

import json
from collections import Counter

import ml_collections
import pytest

from configs import default
from flaxtune import config as config_lib
from flaxtune.data import DataError
from flaxtune.data.sources import holdout_split, load_split, load_splits

from conftest import SHARED, need_shared

IMDB = SHARED / "data" / "imdb" / "train.jsonl"


def _imdb_config(**data):
    c = default.get_config()
    c.data.train_file = str(need_shared(IMDB))
    c.data.update(dict(eval_fraction=0.1, **data))
    return c


def test_imdb_holdout_is_per_label_disjoint_in_file_order_and_reproducible():
    c = _imdb_config()
    train, held = load_splits(c.data)
    assert (len(train), len(held)) == (22_500, 2_500)
    assert Counter(r.label for r in held) == {"negative": 1_250, "positive": 1_250}
    assert Counter(r.label for r in train) == {"negative": 11_250, "positive": 11_250}
    train_lines, held_lines = [r.line for r in train], [r.line for r in held]
    assert train_lines == sorted(train_lines) and held_lines == sorted(held_lines)
    assert not set(train_lines) & set(held_lines)
    assert sorted(train_lines + held_lines) == list(range(1, 25_001))  # one record a line
    # the same split every time, and from load_split one part at a time
    assert [r.line for r in load_split(c.data, "eval")] == held_lines
    assert [r.line for r in load_split(c.data, "train")] == train_lines
    other = [r.line for r in load_splits(_imdb_config(split_seed=1).data)[1]]
    assert len(other) == 2_500 and other != held_lines


def _records(tmp_path, labels):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": lab}) + "\n" for i, lab in enumerate(labels)))
    c = default.get_config()
    c.data.train_file = str(path)
    return path, load_split(c.data, "train")


def test_holdout_counts_per_label_and_its_errors(tmp_path):
    path, records = _records(tmp_path, ["a"] * 9 + ["b"] * 3)
    train, held = holdout_split(records, 0.34, seed=0)  # round(3.06) a + round(1.02) b
    assert Counter(r.label for r in held) == {"a": 3, "b": 1}
    assert len(train) == 8
    with pytest.raises(DataError, match=rf"^{path}: data.eval_fraction=0.01 holds out no record of 12; "
                                        r"raise it to at least 0.111$"):
        holdout_split(records, 0.01, seed=0)
    _, one_b = _records(tmp_path, ["a"] * 9 + ["b"])
    with pytest.raises(DataError, match=r"would hold out all 1 records of label 'b', leaving none to train on"):
        holdout_split(one_b, 0.6, seed=0)


@pytest.mark.parametrize("data, message", [
    (dict(eval_fraction=0.1, eval_file="x.tsv"), "both give an eval set: set --config.data.eval_file=''"),
    (dict(eval_fraction=1.0), r"eval_fraction must be a number >= 0 and < 1, got 1.0"),
    (dict(eval_fraction="0.1"), r"eval_fraction must be a number >= 0 and < 1, got '0.1'"),
    (dict(split_seed=-1), r"split_seed must be an integer >= 0, got -1"),
    (dict(eval_fraction=0.0), r"eval_file is empty: set --config.data.eval_file=PATH \(or "
                              r"--config.data.eval_fraction=0.1 to hold out 10% of train_file\)"),
    (dict(eval_fraction=0.1, source="tfds", tfds_name="imdb_reviews"),
     r"is for data.source=files; with tfds, slice a split instead, e.g. --config.data.train_split='train\[:90%\]'"),
])
def test_holdout_config_errors(data, message):
    d = _imdb_config().to_dict()  # a plain dict, as a Python caller may build one (any types)
    d["data"].update(data)
    c = ml_collections.ConfigDict(d)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate_config(c)


def test_holdout_config_is_valid_without_eval_file():
    config_lib.validate_config(_imdb_config())
