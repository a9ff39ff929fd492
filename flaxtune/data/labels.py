"""Label map: class names <-> class ids.

:func:`build_label_map` returns a sorted, deterministic list of label names;
the index in the list is the class id. If every label parses as an integer the
labels are sorted numerically (``"2"`` before ``"10"``, ``"-1"`` before ``"1"``),
otherwise as plain strings (case-sensitive, so ``"B"`` < ``"a"``). Labels are
used exactly as given (validation has already stripped them).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .readers import DataError, Record, where

__all__ = ["build_label_map", "encode_labels"]

_MAX_SHOWN = 20


def _as_int(label: str) -> int | None:
    try:
        return int(label)
    except (TypeError, ValueError):
        return None


def _show(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_SHOWN])
    if len(names) > _MAX_SHOWN:
        shown += f", ... ({len(names)} in all)"
    return f"[{shown}]"


def build_label_map(labels: Iterable[str]) -> list[str]:
    """Distinct labels in a deterministic order; index = class id.

    Raises :class:`DataError` if a label is ``None`` or fewer than 2 distinct
    labels are found.
    """
    distinct = set()
    for label in labels:
        if label is None:
            raise DataError(
                "build_label_map got a missing label (None); validate the records with "
                "validate_records(..., require_label=True) first, or set data.skip_invalid=True."
            )
        distinct.add(label)
    if len(distinct) < 2:
        found = f"only one class, {next(iter(distinct))!r}" if distinct else "no labels at all"
        raise DataError(
            f"Classification needs at least 2 distinct labels, but the data has {found}. "
            "Check data.label_field points at the label column and that the file holds examples of every class."
        )
    ints = {label: _as_int(label) for label in distinct}
    if all(v is not None for v in ints.values()):
        return sorted(distinct, key=lambda s: (ints[s], s))
    return sorted(distinct)


def encode_labels(records: Iterable[Record], label_names: Sequence[str]) -> np.ndarray:
    """Class ids (``int32``) of ``records`` under ``label_names``.

    Raises :class:`DataError` naming the first unknown label value, its source
    and line, and listing the known labels.
    """
    index = {name: i for i, name in enumerate(label_names)}
    records = list(records)
    ids = np.empty(len(records), dtype=np.int32)
    for i, rec in enumerate(records):
        idx = index.get(rec.label)
        if idx is None:
            unknown = sorted({r.label for r in records if r.label not in index}, key=str)
            others = f" ({len(unknown)} unknown label values in all: {_show(unknown)})" if len(unknown) > 1 else ""
            raise DataError(
                f"{where(rec.source, rec.line)}, field 'label': unknown label {rec.label!r}; known labels are "
                f"{_show(list(label_names))}{others}. Labels in evaluation data must be among the training "
                "labels (case-sensitive, surrounding whitespace stripped)."
            )
        ids[i] = idx
    return ids
