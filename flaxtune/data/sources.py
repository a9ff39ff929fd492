"""Config -> validated records for a split, from files or tensorflow-datasets."""

from __future__ import annotations

import logging

from flaxtune.data.readers import Record, read_records
from flaxtune.data.validation import validate_records

log = logging.getLogger(__name__)


def load_split(data_config, which: str) -> list[Record]:
    """`which` is "train" or "eval"; every source goes through the same validation."""
    d = data_config
    if d.source == "files":
        path = d.train_file if which == "train" else d.eval_file
        records = read_records(path, text_field=d.text_field, label_field=d.label_field,
                               encoding=d.encoding, file_format=d.file_format or None)
    else:
        from flaxtune.data.tfds_source import read_tfds

        split = d.train_split if which == "train" else d.eval_split
        records = read_tfds(d.tfds_name, split=split, data_dir=d.tfds_data_dir or None,
                            text_field=d.text_field, label_field=d.label_field,
                            download=d.tfds_download)
    records, report = validate_records(records, skip_invalid=d.skip_invalid,
                                       text_field=d.text_field, label_field=d.label_field)
    if report.get("skipped"):
        reasons = ", ".join(f"{k}: {v}" for k, v in report["reasons"].items() if v)
        where = records[0].source if records else which
        log.warning("%s data (%s): skipped %d invalid records (%s) because data.skip_invalid=True; "
                    "%d records kept", which, where, report["skipped"], reasons, len(records))
    return records
