"""File readers for labelled text data: TSV, CSV and JSONL.

Readers only *parse*: they turn a file into a list of :class:`Record` with the
text kept verbatim and the label kept as the raw string found in the file.
Checking the content (empty texts, missing labels) is done by one shared layer,
:func:`flaxtune.data.validation.validate_records`, for every source.

Formats
-------
``tsv``
    Tab separated, header line required, **no quoting at all**: a ``"`` is an
    ordinary character. Each non-empty line is one record, split on ``\\t``.
    Lines that are empty (or contain only spaces and no tab) are skipped. A row
    with a different number of fields than the header is an error.
``csv``
    Comma separated, parsed with the :mod:`csv` module (RFC 4180 style
    quoting): quoted fields may contain commas, newlines and doubled quotes.
    Header line required. ``Record.line`` is the physical line where the record
    starts.
``jsonl``
    One JSON object per line; blank lines are skipped. The text must be a JSON
    string; the label may be a string or an integer (stored as ``str(value)``,
    an integral float such as ``1.0`` is stored as ``"1"``); ``null`` labels are
    stored as ``None`` (validation then reports them as missing); booleans and
    other types are errors. A text or label key repeated within one object is an error (JSON
    parsers would silently keep the last value). A file holding one JSON array
    is rejected with a hint on how to convert it.

The file is read as bytes and decoded as a whole with ``encoding``; with
``"utf-8"`` (the default) a leading byte order mark is stripped. Undecodable
bytes raise :class:`DataError` naming the line and byte offset.

Every problem raises :class:`DataError` (a ``ValueError``) whose message names
the file, the line (or record index) and the field, says what is wrong and how
to fix it (usually which ``data.*`` config key to set).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path

__all__ = ["DataError", "Record", "read_records", "detect_format", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS = ("tsv", "csv", "jsonl")

_EXTENSIONS = {
    ".tsv": "tsv",
    ".tab": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}

_FORMAT_ALIASES = {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}


class DataError(ValueError):
    """Problem with the input data.

    The message names the file (or tfds source), the line (or record index) and
    the field, says what is wrong and how to fix it.
    """


@dataclasses.dataclass(frozen=True)
class Record:
    """One example: raw text and raw label as found in the source."""

    text: str
    label: str | None  # raw label string ("1", "positive"); None only when labels are not required
    source: str  # file path, or "tfds:glue/sst2[train]"
    line: int  # 1-based physical line where the record starts (tfds: 1-based record index)
    # Column / key / feature names the text and label came from, so that validation errors name
    # the real field (e.g. 'sentence') whoever calls validate_records. Not part of equality.
    text_field: str = dataclasses.field(default="text", compare=False, repr=False)
    label_field: str = dataclasses.field(default="label", compare=False, repr=False)


def where(source: str, line: int) -> str:
    """Human readable location: ``"data/x.tsv, line 5"`` or ``"tfds:glue/sst2[train], record 5"``."""
    unit = "record" if source.startswith("tfds:") else "line"
    return f"{source}, {unit} {line}"


def detect_format(path: str | os.PathLike, file_format: str | None = None) -> str:
    """Return ``"tsv"``, ``"csv"`` or ``"jsonl"`` for ``path`` (or the explicit ``file_format``)."""
    if file_format:  # None or "" -> from the extension
        fmt = _FORMAT_ALIASES.get(str(file_format).strip().lower())
        if fmt is None:
            raise DataError(
                f"{path}: unknown data format {file_format!r}; "
                f"set data.file_format to one of {', '.join(SUPPORTED_FORMATS)}."
            )
        return fmt
    suffix = Path(path).suffix.lower()
    fmt = _EXTENSIONS.get(suffix)
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the data format from the extension {suffix or '(none)'!r} "
            f"(known: {', '.join(sorted(_EXTENSIONS))}); set data.file_format to one of "
            f"{', '.join(SUPPORTED_FORMATS)} (file_format=... in read_records)."
        )
    return fmt


def read_records(
    path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
    file_format: str | None = None,
    require_label: bool = True,
) -> list[Record]:
    """Parse ``path`` into raw :class:`Record` objects (no validation of content).

    ``file_format`` ``None`` (or ``""``) picks the format from the extension (``.tsv`` ->
    tsv, ``.csv`` -> csv, ``.jsonl``/``.json`` -> jsonl). With
    ``require_label=False`` a missing label column/key is allowed and the
    records get ``label=None``.
    """
    fmt = detect_format(path, file_format)
    source = str(path)
    text = _read_text(path, encoding)
    if fmt == "tsv":
        return _parse_tsv(text, source, text_field, label_field, require_label)
    if fmt == "csv":
        return _parse_csv(text, source, text_field, label_field, require_label)
    return _parse_jsonl(text, source, text_field, label_field, require_label)


# --------------------------------------------------------------------------- decoding


def _read_text(path, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise DataError(
            f"{path}: unknown text encoding {encoding!r}; set data.encoding to a Python codec name "
            "such as utf-8, cp1252 or latin-1."
        ) from None
    decode_as = "utf-8-sig" if codec.name == "utf-8" else encoding
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (relative paths are from {os.getcwd()}); check the path.") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file (TSV, CSV or JSONL); check the path.") from None
    try:
        return data.decode(decode_as)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        bad = data[e.start : e.end]
        raise DataError(
            f"{path}, line {line}: cannot decode the file as {encoding}: byte(s) 0x{bad.hex()} at byte "
            f"offset {e.start} (column {e.start - line_start + 1} of the line) ({e.reason}). "
            f"The file is probably in another encoding; set data.encoding=cp1252 (or latin-1), "
            f"or re-save the file as UTF-8."
        ) from None


# --------------------------------------------------------------------------- header handling


def _column_index(
    header: list[str], source: str, line: int, text_field: str, label_field: str, require_label: bool, fmt: str
) -> tuple[int, int | None]:
    names = [h.strip() for h in header]
    problems = []
    if text_field not in names:
        problems.append(f"text column {text_field!r} (data.text_field)")
    if require_label and label_field not in names:
        problems.append(f"label column {label_field!r} (data.label_field)")
    if problems:
        hint = ""
        if len(names) == 1:
            if fmt == "csv" and ("\t" in header[0] or ";" in header[0]):
                hint = " The header looks tab- or semicolon-separated; set data.file_format=tsv or convert the file."
            elif fmt == "tsv" and "," in header[0]:
                hint = " The header looks comma-separated; set data.file_format=csv."
        raise DataError(
            f"{where(source, line)}: header is missing the {' and the '.join(problems)}; "
            f"columns found: {names}. A header line is required; set data.text_field / "
            f"data.label_field to the column names holding the text and the label.{hint}"
        )
    for name in (text_field, label_field):
        if names.count(name) > 1:
            raise DataError(
                f"{where(source, line)}: column {name!r} appears {names.count(name)} times in the header "
                f"{names}; rename the duplicate columns."
            )
    text_idx = names.index(text_field)
    label_idx = names.index(label_field) if label_field in names else None
    return text_idx, label_idx


def _wrong_count(source, line, found, expected, header, fmt) -> DataError:
    sep = "tab" if fmt == "tsv" else "comma"
    extra = (
        " TSV is read without quoting, so a tab inside a text splits it; remove tabs from texts "
        "or use CSV/JSONL."
        if fmt == "tsv"
        else " Quote fields that contain commas (\"like, this\")."
    )
    return DataError(
        f"{where(source, line)}: row has {found} {sep}-separated field(s), expected {expected} "
        f"(header columns {[h.strip() for h in header]}).{extra}"
    )


# --------------------------------------------------------------------------- TSV


def _parse_tsv(text, source, text_field, label_field, require_label) -> list[Record]:
    lines = text.split("\n")
    header = None
    records: list[Record] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\t" not in line and not line.strip(" "):
            continue  # blank line
        fields = line.split("\t")
        if header is None:
            header = fields
            text_idx, label_idx = _column_index(header, source, lineno, text_field, label_field, require_label, "tsv")
            continue
        if len(fields) != len(header):
            raise _wrong_count(source, lineno, len(fields), len(header), header, "tsv")
        label = fields[label_idx] if label_idx is not None else None
        records.append(Record(fields[text_idx], label, source, lineno, text_field, label_field))
    if header is None:
        raise DataError(f"{source}: file is empty; a header line ({text_field}<TAB>{label_field}) and data rows are required.")
    return records


# --------------------------------------------------------------------------- CSV


def _parse_csv(text, source, text_field, label_field, require_label) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = None
    records: list[Record] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(
                f"{where(source, start)}: CSV parse error: {e}. Check the quoting of this record "
                f"(fields with quotes must be wrapped in quotes and inner quotes doubled: \"He said \"\"wow\"\"\"); "
                f"for very long fields convert the file to JSONL."
            ) from None
        if not row or (len(row) == 1 and not row[0].strip(" ")):
            continue  # blank line
        if header is None:
            header = row
            text_idx, label_idx = _column_index(header, source, start, text_field, label_field, require_label, "csv")
            continue
        if len(row) != len(header):
            raise _wrong_count(source, start, len(row), len(header), header, "csv")
        label = row[label_idx] if label_idx is not None else None
        records.append(Record(row[text_idx], label, source, start, text_field, label_field))
    if header is None:
        raise DataError(f"{source}: file is empty; a header line ({text_field},{label_field}) and data rows are required.")
    return records


# --------------------------------------------------------------------------- JSONL


def _json_label(value, source, lineno, label_field):
    if value is None:
        return None  # reported as missing by validation
    if isinstance(value, bool):
        raise DataError(
            f"{where(source, lineno)}, field {label_field!r}: label is a boolean ({json.dumps(value)}); "
            f"labels must be strings or integers, e.g. \"positive\" or 1."
        )
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    raise DataError(
        f"{where(source, lineno)}, field {label_field!r}: label has unsupported value {json.dumps(value)[:80]} "
        f"({type(value).__name__}); labels must be strings or integers, e.g. \"positive\" or 1. "
        f"If the label is in another key, set data.label_field."
    )


class _DuplicateKey(Exception):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(watched):
    """``object_pairs_hook`` refusing a repeated text/label key (json keeps the last one silently)."""

    def hook(pairs):
        obj = {}
        for key, value in pairs:
            if key in obj and key in watched:
                raise _DuplicateKey(key)
            obj[key] = value
        return obj

    return hook


def _parse_jsonl(text, source, text_field, label_field, require_label) -> list[Record]:
    records: list[Record] = []
    first = True
    hook = _no_duplicate_keys({text_field, label_field})
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if first and line.startswith("["):
            raise DataError(
                f"{where(source, lineno)}: the file is a JSON array, but JSONL needs one JSON object per line "
                f"({{\"{text_field}\": ..., \"{label_field}\": ...}}). Convert it with: "
                f"jq -c '.[]' {Path(source).name} > {Path(source).stem}.jsonl"
            )
        first = False
        try:
            obj = json.loads(line, object_pairs_hook=hook)
        except _DuplicateKey as e:
            raise DataError(
                f"{where(source, lineno)}, field {e.key!r}: the key {e.key!r} appears more than once in this "
                "object; JSON parsers silently keep only the last value, so remove the duplicate."
            ) from None
        except json.JSONDecodeError as e:
            hint = (
                " The file looks like pretty-printed JSON; JSONL needs each object on a single line "
                "(convert with jq -c)."
                if line in ("{", "}", "},", "]")
                else " Each line must be one complete JSON object."
            )
            raise DataError(f"{where(source, lineno)}: invalid JSON: {e.msg} (column {e.colno}).{hint}") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{where(source, lineno)}: expected a JSON object, got {type(obj).__name__}; "
                f"JSONL needs one object per line like {{\"{text_field}\": ..., \"{label_field}\": ...}}."
            )
        missing = []
        if text_field not in obj:
            missing.append(f"text field {text_field!r} (data.text_field)")
        if require_label and label_field not in obj:
            missing.append(f"label field {label_field!r} (data.label_field)")
        if missing:
            raise DataError(
                f"{where(source, lineno)}: object is missing the {' and the '.join(missing)}; keys found: "
                f"{sorted(obj)}. Set data.text_field / data.label_field to the keys holding the text and label."
            )
        value = obj[text_field]
        if not isinstance(value, str):
            raise DataError(
                f"{where(source, lineno)}, field {text_field!r}: text must be a JSON string, got "
                f"{type(value).__name__} ({json.dumps(value)[:80]}); fix the record or set data.text_field."
            )
        label = _json_label(obj[label_field], source, lineno, label_field) if label_field in obj else None
        records.append(Record(value, label, source, lineno, text_field, label_field))
    if first:
        raise DataError(
            f"{source}: file is empty; JSONL needs one JSON object per line like "
            f"{{\"{text_field}\": ..., \"{label_field}\": ...}}."
        )
    return records
