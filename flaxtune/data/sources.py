"""Config -> validated records for a split, from files or tensorflow-datasets."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from flaxtune.data.readers import DataError, Record, read_records
from flaxtune.data.validation import validate_records

log = logging.getLogger(__name__)


def holdout_split(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, eval): `round(fraction * n)` records of each label held out for eval, chosen by
    a permutation seeded with `seed`; both parts keep the file's order. Raises DataError if
    no record, or every record of a label, would be held out."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_label[r.label].append(i)
    rng = np.random.default_rng(seed)
    held = set()
    where = records[0].source if records else "the training data"
    for label in sorted(by_label, key=str):
        idx = np.asarray(by_label[label])
        k = int(round(fraction * len(idx)))
        if k == len(idx):
            raise DataError(f"{where}: data.eval_fraction={fraction} would hold out all {len(idx)} records "
                            f"of label {label!r}, leaving none to train on; lower data.eval_fraction")
        held.update(int(i) for i in rng.permutation(idx)[:k])
    if not held:
        raise DataError(f"{where}: data.eval_fraction={fraction} holds out no record of {len(records)}; "
                        f"raise it to at least {1 / max(len(v) for v in by_label.values()):.3g}")
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]


def eval_holdout(d) -> dict | None:
    """{"fraction", "split_seed"} when the eval set is held out of train_file
    (data.eval_fraction, no eval_file), else None; checkpoints record it as is."""
    if d.source == "files" and d.get("eval_fraction", 0.0) and not d.eval_file:
        return {"fraction": d.eval_fraction, "split_seed": d.get("split_seed", 0)}
    return None


def load_splits(data_config) -> tuple[list[Record], list[Record]]:
    """(train, eval) records: from their files or tfds splits, or, with data.eval_fraction,
    both from train_file (read and validated once)."""
    d = data_config
    holdout = eval_holdout(d)
    if holdout:
        records = _read_and_validate(d, d.train_file, "train")
        train, held = holdout_split(records, holdout["fraction"], holdout["split_seed"])
        log.info("%s: %d records for training, %d held out for eval (data.eval_fraction=%g, "
                 "data.split_seed=%d)", d.train_file, len(train), len(held), holdout["fraction"],
                 holdout["split_seed"])
        return train, held
    return load_split(d, "train"), load_split(d, "eval")


def load_split(data_config, which: str) -> list[Record]:
    """`which` is "train" or "eval"; every source goes through the same validation. With
    data.eval_fraction (and no eval_file) both are parts of train_file."""
    d = data_config
    if eval_holdout(d):
        return load_splits(d)[0 if which == "train" else 1]
    if d.source == "files":
        return _read_and_validate(d, d.train_file if which == "train" else d.eval_file, which)
    return _validated(d, _read_tfds(d, which), which)


def _read_and_validate(d, path, which: str) -> list[Record]:
    records = read_records(path, text_field=d.text_field, label_field=d.label_field,
                           encoding=d.encoding, file_format=d.file_format or None)
    return _validated(d, records, which)


def _read_tfds(d, which: str) -> list[Record]:
    from flaxtune.data.tfds_source import read_tfds

    split = d.train_split if which == "train" else d.eval_split
    return read_tfds(d.tfds_name, split=split, data_dir=d.tfds_data_dir or None,
                     text_field=d.text_field, label_field=d.label_field, download=d.tfds_download)


def _validated(d, records: list[Record], which: str) -> list[Record]:
    records, report = validate_records(records, skip_invalid=d.skip_invalid,
                                       text_field=d.text_field, label_field=d.label_field)
    if report.get("skipped"):
        reasons = ", ".join(f"{k}: {v}" for k, v in report["reasons"].items() if v)
        where = records[0].source if records else which
        log.warning("%s data (%s): skipped %d invalid records (%s) because data.skip_invalid=True; "
                    "%d records kept", which, where, report["skipped"], reasons, len(records))
    return records
