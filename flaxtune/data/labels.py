"""Label map: class names <-> class ids.

:func:`build_label_map` returns a sorted, deterministic list of label names;
the index in the list is the class id. If every label parses as an integer the
labels are sorted numerically (``"2"`` before ``"10"``, ``"-1"`` before ``"1"``),
otherwise as plain strings (case-sensitive, so ``"B"`` < ``"a"``). Labels are
used exactly as given (validation has already stripped surrounding whitespace).

Nothing is merged or split silently: labels that differ only in letter case
(``"positive"`` / ``"Positive"``) or that are the same number written
differently (``"1"`` / ``"1.0"`` / ``"01"``) are an error listing the variants
(and, when :class:`Record` objects are given, where each first appears).
"""

from __future__ import annotations

import math
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


def _variant_key(label: str):
    """Labels with equal keys are spellings of the same class: same number, or same text ignoring case."""
    try:
        value = float(label)
    except ValueError:
        return ("text", label.casefold())
    return ("number", value) if math.isfinite(value) else ("text", label.casefold())


def _check_variants(first_seen: dict) -> None:
    groups: dict = {}
    for label in first_seen:
        groups.setdefault(_variant_key(label), []).append(label)
    clashes = [sorted(g) for g in groups.values() if len(g) > 1]
    if not clashes:
        return

    def show(label):
        loc = first_seen[label]
        return f"{label!r} (first at {loc})" if loc else repr(label)

    listed = "; ".join(" vs ".join(show(lab) for lab in group) for group in clashes[:_MAX_SHOWN])
    raise DataError(
        f"Labels that look like the same class are spelled differently: {listed}. Labels are compared "
        "exactly (case-sensitive; only surrounding whitespace is stripped), so these would become separate "
        "classes; make the spelling consistent in the data."
    )


def build_label_map(labels: Iterable[str | Record]) -> list[str]:
    """Distinct labels in a deterministic order; index = class id.

    ``labels`` are label strings or :class:`Record` objects (then errors name
    the file and line). Raises :class:`DataError` if a label is ``None``,
    fewer than 2 distinct labels are found, or two labels differ only in case
    or numeric spelling.
    """
    distinct = set()
    first_seen: dict = {}
    for item in labels:
        label, loc = (item.label, where(item.source, item.line)) if isinstance(item, Record) else (item, None)
        if label is None:
            at = f" at {loc}" if loc else ""
            raise DataError(
                f"build_label_map got a missing label (None){at}; validate the records with "
                "validate_records(..., require_label=True) first, or set data.skip_invalid=True."
            )
        if label not in first_seen:
            first_seen[label] = loc
        distinct.add(label)
    if len(distinct) < 2:
        found = f"only one class, {next(iter(distinct))!r}" if distinct else "no labels at all"
        raise DataError(
            f"Classification needs at least 2 distinct labels, but the data has {found}. "
            "Check data.label_field points at the label column and that the file holds examples of every class."
        )
    _check_variants(first_seen)
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
            near = [n for n in label_names if rec.label is not None and _variant_key(n) == _variant_key(rec.label)]
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise DataError(
                f"{where(rec.source, rec.line)}, field {rec.label_field!r}: unknown label {rec.label!r}; known "
                f"labels are {_show(list(label_names))}{others}.{hint} Labels in evaluation data must be among "
                "the training labels (case-sensitive, surrounding whitespace stripped)."
            )
        ids[i] = idx
    return ids
