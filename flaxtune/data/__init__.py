"""Data loading for flaxtune: file readers, tfds source, one validation layer, label map."""

from .labels import build_label_map, encode_labels
from .readers import DataError, Record, detect_format, read_records
from .tfds_source import hide_accelerators_from_tf, read_tfds
from .validation import validate_records

__all__ = [
    "DataError",
    "Record",
    "read_records",
    "detect_format",
    "validate_records",
    "build_label_map",
    "encode_labels",
    "read_tfds",
    "hide_accelerators_from_tf",
]
