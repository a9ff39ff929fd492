"""The one validation layer applied to records from every source (files and tfds).

:func:`validate_records` checks each :class:`~flaxtune.data.readers.Record`:

* **text** must contain at least one non-whitespace character. Texts are never
  modified (no stripping); whitespace-only texts are rejected as ``empty text``.
* **label** (only when ``require_label=True``) must be present. Labels are
  normalised by ``str.strip()`` only -- surrounding whitespace is removed, case
  is kept (``" Positive "`` -> ``"Positive"``, which is a different class from
  ``"positive"``). After stripping, a label that is ``None``, empty, or one of
  the missing-value markers ``NA``, ``N/A``, ``nan``, ``null``, ``None``
  (compared case-insensitively) is rejected as ``missing label``.
  With ``require_label=False`` labels are not checked; present labels are still
  stripped and missing-value markers become ``None``.

Invalid records raise one :class:`~flaxtune.data.readers.DataError` listing up
to :data:`MAX_LISTED` offending records (source, line, field, problem) and the
total count, and suggesting ``data.skip_invalid=True``. With
``skip_invalid=True`` the invalid records are dropped and counted in the report
``{"skipped": n, "reasons": {"empty text": k, "missing label": m}}``; a record
with both problems is counted once, under ``"empty text"``. If every record is
invalid a ``DataError`` is raised even with ``skip_invalid=True``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from .readers import DataError, Record, where

__all__ = ["validate_records", "MISSING_LABEL_MARKERS", "MAX_LISTED"]

MISSING_LABEL_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none"})
MAX_LISTED = 5

EMPTY_TEXT = "empty text"
MISSING_LABEL = "missing label"


def _normalise_label(label: str | None) -> str | None:
    if label is None:
        return None
    label = str(label).strip()
    return None if label.lower() in MISSING_LABEL_MARKERS else label


def validate_records(
    records: Iterable[Record],
    *,
    skip_invalid: bool = False,
    require_label: bool = True,
    text_field: str | None = None,
    label_field: str | None = None,
) -> tuple[list[Record], dict]:
    """Check records; return ``(valid_records, report)``.

    ``text_field`` / ``label_field`` are only used to name the field in error
    messages; ``None`` (default) uses the field each record was read from
    (``Record.text_field`` / ``Record.label_field``, set by the readers).
    Returned records carry normalised (stripped) labels.
    """
    records = list(records)
    valid: list[Record] = []
    problems: list[tuple[Record, str, str, str]] = []  # (record, reason, field, detail)
    reasons = {EMPTY_TEXT: 0, MISSING_LABEL: 0}
    for rec in records:
        label = _normalise_label(rec.label)
        if not rec.text.strip():
            detail = "text is empty" if rec.text == "" else f"text is whitespace-only ({rec.text!r})"
            problems.append((rec, EMPTY_TEXT, text_field or rec.text_field, detail))
            reasons[EMPTY_TEXT] += 1
            continue
        if require_label and label is None:
            detail = "label is missing" if rec.label is None else f"label is missing ({rec.label!r})"
            problems.append((rec, MISSING_LABEL, label_field or rec.label_field, detail))
            reasons[MISSING_LABEL] += 1
            continue
        valid.append(rec if label == rec.label else dataclasses.replace(rec, label=label))

    report = {"skipped": len(problems), "reasons": reasons}
    if problems and (not skip_invalid or not valid):
        listed = "\n".join(
            f"  {where(rec.source, rec.line)}, field {field!r}: {detail}"
            for rec, _, field, detail in problems[:MAX_LISTED]
        )
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        counts = ", ".join(f"{k}: {v}" for k, v in reasons.items() if v)
        sources = sorted({rec.source for rec, *_ in problems})
        if not valid:
            fix = (
                f"All {len(records)} records are invalid, so nothing is left to use: check "
                "data.text_field / data.label_field and the file itself."
            )
        else:
            fix = (
                "Fix these records in the data, or set data.skip_invalid=True to drop invalid records "
                "(the number dropped is reported)."
            )
        raise DataError(
            f"{len(problems)} of {len(records)} records are invalid ({counts}) in {', '.join(sources)}:\n"
            f"{listed}{more}\n"
            f"Empty or whitespace-only texts and missing labels (empty, NA, nan, null, None) are not allowed. {fix}"
        )
    return valid, report
