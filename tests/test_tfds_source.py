"""Tests for flaxtune.data.tfds_source (no network: mock data or an empty data_dir)."""

from __future__ import annotations

import time

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from flaxtune.data import DataError, build_label_map, read_tfds, validate_records  # noqa: E402
from flaxtune.data.tfds_source import hide_accelerators_from_tf  # noqa: E402


def test_hide_accelerators():
    import tensorflow as tf

    hide_accelerators_from_tf()
    hide_accelerators_from_tf()  # idempotent
    assert tf.config.get_visible_devices("GPU") == []


def test_mock_glue_sst2_records(tmp_path):
    with tfds.testing.mock_data(num_examples=7):
        recs = read_tfds("glue/sst2", split="train", data_dir=str(tmp_path))
    assert len(recs) == 7
    assert all(isinstance(r.text, str) for r in recs)
    assert {r.label for r in recs} <= {"negative", "positive"}
    assert [r.line for r in recs] == list(range(1, 8))
    assert all(r.source == "tfds:glue/sst2[train]" for r in recs)


def test_mock_texts_match_raw_bytes(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        recs = read_tfds("glue/sst2", split="train", data_dir=str(tmp_path))
        raw = list(tfds.as_numpy(tfds.load("glue/sst2", split="train", data_dir=str(tmp_path))))
    assert all(isinstance(ex["sentence"], bytes) for ex in raw)
    assert [r.text for r in recs] == [ex["sentence"].decode("utf-8") for ex in raw]
    assert [r.label for r in recs] == [["negative", "positive"][ex["label"]] for ex in raw]


def test_mock_labels_cover_both_classes(tmp_path):
    with tfds.testing.mock_data(num_examples=60):
        recs = read_tfds("glue/sst2", split="validation", data_dir=str(tmp_path))
    # random mock labels: with 60 draws both classes appear
    assert build_label_map(r.label for r in recs) == ["negative", "positive"]
    valid, report = validate_records(recs, skip_invalid=True)
    assert len(valid) + report["skipped"] == 60


def test_missing_feature(tmp_path):
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError) as e:
            read_tfds("glue/sst2", split="train", data_dir=str(tmp_path), text_field="text")
    msg = str(e.value)
    assert "tfds:glue/sst2[train]" in msg and "'text'" in msg and "'sentence'" in msg and "data.text_field" in msg


def test_not_prepared_raises_quickly(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        read_tfds("glue/sst2", split="train", data_dir=str(tmp_path))
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert "glue/sst2" in msg and str(tmp_path) in msg and "data.tfds_download=True" in msg


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="no_such_dataset_xyz"):
        read_tfds("no_such_dataset_xyz", split="train", data_dir=str(tmp_path))
