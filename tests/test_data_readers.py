"""Tests for flaxtune.data.readers and flaxtune.data.validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flaxtune.data import DataError, Record, build_label_map, read_records, validate_records

SHARED = Path(__file__).parents[1] / ".." / "shared"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_bytes(content.encode("utf-8"))
    return p


# --------------------------------------------------------------------------- CSV


def test_csv_quoted_commas_newlines_and_doubled_quotes(tmp_path):
    p = write(tmp_path, "d.csv", 'text,label\n"Loved it, truly.\nWould watch again",1\n"He said ""wow""",0\n')
    recs = read_records(p)
    assert recs == [
        Record(text="Loved it, truly.\nWould watch again", label="1", source=str(p), line=2),
        Record(text='He said "wow"', label="0", source=str(p), line=4),
    ]


def test_csv_crlf_line_numbers_and_blank_lines(tmp_path):
    p = write(tmp_path, "d.csv", 'label,text\r\n1,"a\r\nb"\r\n\r\n0,plain\r\n')
    recs = read_records(p)
    assert [(r.text, r.label, r.line) for r in recs] == [("a\r\nb", "1", 2), ("plain", "0", 5)]


def test_csv_wrong_field_count(tmp_path):
    p = write(tmp_path, "bad.csv", "text,label\ngood,1\nunquoted, comma,0\n")
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "bad.csv" in msg and "line 3" in msg and "3" in msg and "expected 2" in msg


def test_csv_missing_column_lists_found_columns_and_keys(tmp_path):
    p = write(tmp_path, "cols.csv", "review,sentiment\ngreat,1\n")
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "cols.csv" in msg and "line 1" in msg
    assert "'review'" in msg and "'sentiment'" in msg
    assert "data.text_field" in msg and "data.label_field" in msg
    recs = read_records(p, text_field="review", label_field="sentiment")
    assert recs == [Record("great", "1", str(p), 2)]


def test_csv_unterminated_quote(tmp_path):
    p = write(tmp_path, "q.csv", 'text,label\nok,1\n"never closed,0\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    assert "q.csv" in str(e.value) and "line 3" in str(e.value)


# --------------------------------------------------------------------------- TSV


def test_tsv_no_quoting(tmp_path):
    p = write(tmp_path, "d.tsv", 'sentence\tlabel\n"Second\t1\nThird "sentence"\t0\nFourth\t1\n')
    recs = read_records(p, text_field="sentence")
    assert [(r.text, r.label, r.line) for r in recs] == [
        ('"Second', "1", 2),
        ('Third "sentence"', "0", 3),
        ("Fourth", "1", 4),
    ]
    assert all(r.source == str(p) for r in recs)


def test_tsv_count_equals_nonempty_lines_and_crlf(tmp_path):
    p = write(tmp_path, "d.tsv", "text\tlabel\r\na\t1\r\n\r\n b \t0\r\n\nc\t1")
    recs = read_records(p)
    assert [(r.text, r.label, r.line) for r in recs] == [("a", "1", 2), (" b ", "0", 4), ("c", "1", 6)]


def test_tsv_wrong_field_count(tmp_path):
    p = write(tmp_path, "bad.tsv", "text\tlabel\nok\t1\ntab\tinside\t0\n")
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "bad.tsv" in msg and "line 3" in msg and "3 tab-separated field(s), expected 2" in msg


def test_tsv_missing_label_column(tmp_path):
    p = write(tmp_path, "h.tsv", "sentence\tlabel\nx\t1\n")
    with pytest.raises(DataError) as e:
        read_records(p)  # default text_field="text"
    msg = str(e.value)
    assert "h.tsv" in msg and "'text'" in msg and "['sentence', 'label']" in msg and "data.text_field" in msg


def test_tsv_label_column_optional_when_not_required(tmp_path):
    p = write(tmp_path, "nolabel.tsv", "text\nhello\nworld\n")
    with pytest.raises(DataError, match="data.label_field"):
        read_records(p)
    recs = read_records(p, require_label=False)
    assert [(r.text, r.label) for r in recs] == [("hello", None), ("world", None)]


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_records(write(tmp_path, "e.tsv", ""))


# --------------------------------------------------------------------------- encodings


def test_utf8_bom_stripped(tmp_path):
    p = write(tmp_path, "bom.csv", b"\xef\xbb\xbftext,label\nhi,1\n")
    assert read_records(p) == [Record("hi", "1", str(p), 2)]


def test_undecodable_bytes(tmp_path):
    p = write(tmp_path, "latin.tsv", b"text\tlabel\nfine\t1\ncaf\xe9 was great\t1\n")
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "latin.tsv" in msg and "line 3" in msg and "byte offset 21" in msg
    assert "data.encoding=cp1252" in msg
    recs = read_records(p, encoding="cp1252")
    assert [r.text for r in recs] == ["fine", "café was great"]


def test_unknown_encoding(tmp_path):
    p = write(tmp_path, "x.tsv", "text\tlabel\na\t1\n")
    with pytest.raises(DataError, match="data.encoding"):
        read_records(p, encoding="no-such-codec")


# --------------------------------------------------------------------------- format detection


def test_format_from_extension_and_override(tmp_path):
    p = write(tmp_path, "data.txt", "text\tlabel\na\t1\n")
    with pytest.raises(DataError) as e:
        read_records(p)
    assert "data.txt" in str(e.value) and "data.file_format" in str(e.value)
    assert read_records(p, file_format="tsv") == [Record("a", "1", str(p), 2)]
    with pytest.raises(DataError, match="data.file_format"):
        read_records(p, file_format="xml")
    t = write(tmp_path, "data.tsv", "text\tlabel\na\t1\n")
    assert read_records(t, file_format="") == read_records(t, file_format=None) == [Record("a", "1", str(t), 2)]
    j = write(tmp_path, "data.json", '{"text": "a", "label": 1}\n')
    assert read_records(j) == [Record("a", "1", str(j), 1)]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_records(tmp_path / "nope.tsv")


# --------------------------------------------------------------------------- JSONL


def test_jsonl_basic_blank_lines_and_label_types(tmp_path):
    lines = [
        json.dumps({"text": "a", "label": 1}),
        "",
        "   ",
        json.dumps({"text": " b\n", "label": "positive", "extra": 3}),
        json.dumps({"text": "c", "label": None}),
    ]
    p = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    recs = read_records(p)
    assert [(r.text, r.label, r.line) for r in recs] == [("a", "1", 1), (" b\n", "positive", 4), ("c", None, 5)]


def test_jsonl_missing_key(tmp_path):
    p = write(tmp_path, "k.jsonl", '{"text": "a", "label": 0}\n{"review": "b", "label": 1}\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "k.jsonl" in msg and "line 2" in msg and "'text'" in msg and "['label', 'review']" in msg
    assert "data.text_field" in msg


def test_jsonl_missing_label_key(tmp_path):
    p = write(tmp_path, "k.jsonl", '{"text": "a"}\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    assert "line 1" in str(e.value) and "'label'" in str(e.value) and "['text']" in str(e.value)
    assert read_records(p, require_label=False) == [Record("a", None, str(p), 1)]


def test_jsonl_invalid_json(tmp_path):
    p = write(tmp_path, "bad.jsonl", '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    assert "bad.jsonl" in str(e.value) and "line 3" in str(e.value) and "invalid JSON" in str(e.value)


def test_jsonl_array_file(tmp_path):
    p = write(tmp_path, "arr.jsonl", '[{"text": "a", "label": 0},\n {"text": "b", "label": 1}]\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "arr.jsonl" in msg and "one JSON object per line" in msg and "jq -c '.[]'" in msg


def test_jsonl_bool_label_and_nonstring_text(tmp_path):
    p = write(tmp_path, "b.jsonl", '{"text": "a", "label": true}\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    assert "b.jsonl" in str(e.value) and "line 1" in str(e.value) and "'label'" in str(e.value)
    assert "boolean" in str(e.value)
    p = write(tmp_path, "t.jsonl", '{"text": "ok", "label": 0}\n{"text": 5, "label": 0}\n')
    with pytest.raises(DataError) as e:
        read_records(p)
    assert "t.jsonl" in str(e.value) and "line 2" in str(e.value) and "'text'" in str(e.value)


def test_jsonl_not_an_object(tmp_path):
    p = write(tmp_path, "n.jsonl", '{"text": "a", "label": 0}\n"just a string"\n')
    with pytest.raises(DataError, match="line 2"):
        read_records(p)


# --------------------------------------------------------------------------- validation


def _recs(*pairs, source="f.tsv"):
    return [Record(text=t, label=l, source=source, line=i + 2) for i, (t, l) in enumerate(pairs)]


def test_validation_passes_and_strips_labels():
    recs = _recs(("a", " 1 "), ("  padded text  ", "Positive"))
    valid, report = validate_records(recs)
    assert [(r.text, r.label) for r in valid] == [("a", "1"), ("  padded text  ", "Positive")]
    assert report == {"skipped": 0, "reasons": {"empty text": 0, "missing label": 0}}


@pytest.mark.parametrize("bad_label", ["", "  ", "NA", "nan", "NaN", "null", "None", None])
def test_validation_rejects_missing_labels(bad_label):
    recs = _recs(("good", "1"), ("text", bad_label), ("good", "0"))
    with pytest.raises(DataError) as e:
        validate_records(recs, label_field="sentiment")
    msg = str(e.value)
    assert "f.tsv, line 3, field 'sentiment'" in msg
    assert "1 of 3 records" in msg and "data.skip_invalid=True" in msg


def test_validation_rejects_empty_text_and_lists_first_five():
    recs = _recs(*([("ok", "1")] + [(" \t ", "1")] * 4 + [("", "0")] * 3 + [("x", "NA")]))
    with pytest.raises(DataError) as e:
        validate_records(recs, text_field="sentence")
    msg = str(e.value)
    assert "8 of 9 records are invalid" in msg and "empty text: 7" in msg and "missing label: 1" in msg
    for line in (3, 4, 5, 6, 7):
        assert f"f.tsv, line {line}, field 'sentence'" in msg
    assert "line 8," not in msg and "... and 3 more" in msg
    assert "data.skip_invalid=True" in msg


def test_validation_skip_invalid_report():
    recs = _recs(("ok", "1"), ("", "1"), ("   ", "0"), ("x", "null"), ("y", "0"), ("", ""))
    valid, report = validate_records(recs, skip_invalid=True)
    assert [(r.text, r.label, r.line) for r in valid] == [("ok", "1", 2), ("y", "0", 6)]
    assert report == {"skipped": 4, "reasons": {"empty text": 3, "missing label": 1}}


def test_validation_all_invalid_raises_even_when_skipping():
    with pytest.raises(DataError, match="All 2 records are invalid"):
        validate_records(_recs(("", "1"), ("x", "")), skip_invalid=True)


def test_validation_labels_not_required():
    recs = _recs(("a", None), ("b", "NA"), ("c", " 1 "))
    valid, report = validate_records(recs, require_label=False)
    assert [r.label for r in valid] == [None, None, "1"]
    assert report["skipped"] == 0
    with pytest.raises(DataError):
        validate_records(_recs(("  ", None)), require_label=False)


def test_validation_file_end_to_end(tmp_path):
    p = write(tmp_path, "mixed.tsv", "text\tlabel\ngood\t1\n   \t0\nfine\tNA\nbad\t0\n")
    with pytest.raises(DataError) as e:
        validate_records(read_records(p))
    msg = str(e.value)
    assert f"{p}, line 3, field 'text'" in msg and f"{p}, line 4, field 'label'" in msg


# --------------------------------------------------------------------------- real data


def _shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    return p


def test_real_sst2_train():
    p = _shared("data/sst2/train.tsv")
    recs, report = validate_records(read_records(p, text_field="sentence"))
    assert len(recs) == 67_349 and report["skipped"] == 0
    assert build_label_map(r.label for r in recs) == ["0", "1"]
    assert recs[0] == Record("hide new secretions from the parental units", "0", str(p), 2)
    assert recs[-1].line == 67_350


def test_real_sst2_dev():
    p = _shared("data/sst2/dev.tsv")
    recs, _ = validate_records(read_records(p, text_field="sentence"))
    assert len(recs) == 872
    assert build_label_map(r.label for r in recs) == ["0", "1"]


def test_real_imdb_train():
    p = _shared("data/imdb/train.jsonl")
    recs, report = validate_records(read_records(p))
    assert len(recs) == 25_000 and report["skipped"] == 0
    assert build_label_map(r.label for r in recs) == ["negative", "positive"]
    labels = [r.label for r in recs]
    assert labels.count("negative") == 12_500 and labels.count("positive") == 12_500
    assert recs[0].text.startswith("CAT SOUP has two")
    assert recs[-1].line == 25_000
