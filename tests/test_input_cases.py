"""Issue 3, "input data you can trust": one test (or more) per case, exact values / exact errors.

Case -> test(s) covering it (file::test):

1. CSV quoted comma/newline/doubled quotes -> test_data_readers::test_csv_quoted_commas_newlines_and_doubled_quotes
   (exactly 2 records with the exact texts); also test_data_readers::test_csv_crlf_line_numbers_and_blank_lines.
2. TSV text starting with a lone `"` -> test_data_readers::test_tsv_no_quoting (3 records, verbatim, one per
   non-header line); test_data_readers::test_tsv_count_equals_nonempty_lines_and_crlf.
3. UTF-8 BOM -> test_data_readers::test_utf8_bom_stripped; here test_bom_header_read_as_text_label[csv|tsv|jsonl].
4. cp1252 bytes -> test_data_readers::test_undecodable_bytes (file, line, byte offset, data.encoding=cp1252, then
   `café was great`); here test_undecodable_bytes_every_format[csv|tsv|jsonl].
5. JSONL -> test_data_readers::test_jsonl_basic_blank_lines_and_label_types (blank lines + trailing newline),
   ::test_jsonl_missing_label_key (line), ::test_jsonl_array_file; here test_jsonl_duplicate_label_key.
6. Empty / whitespace-only text -> here test_empty_text_rejected_with_lines[csv|tsv|jsonl],
   test_empty_text_skipped_and_counted_when_opted_in[...], test_skip_invalid_is_logged_by_load_split,
   test_tfds_empty_text_goes_through_the_same_validation, test_tokenizer_never_returns_zero_length;
   test_data_readers::test_validation_* (first five listed, all-invalid, report).
7. Missing / unparsable label -> here test_missing_label_rejected_with_line[csv|tsv|jsonl x empty|NA],
   test_validation_names_the_configured_fields; test_data_readers::test_validation_rejects_missing_labels.
8. String labels -> here test_string_label_map_independent_of_hash_seed (two subprocesses, different
   PYTHONHASHSEED), test_unseen_eval_label_names_value_and_line; "Positive " variants:
   test_data_readers::test_validation_passes_and_strips_labels (whitespace stripped, case kept),
   test_labels::test_label_spelling_variants_are_rejected_not_merged (case / numeric variants rejected),
   test_labels::test_encode_case_variant_hints_the_known_label; saved with the checkpoint:
   test_train_end_to_end::test_checkpoint_holds_what_predict_needs (meta["label_names"]).
9. ~1,500 tokens, max_length 1024 -> here test_long_text_truncated_to_1024_with_finite_logits;
   max_length > n_positions -> here test_max_length_above_n_positions_refused_before_training;
   test_optim_config_metrics::test_max_length_above_n_positions_is_refused.
10. Ids outside the embedding table -> here test_added_pad_token_id_outside_embedding_is_refused.
11. Literal <|endoftext|> -> here test_literal_endoftext_is_50256_and_pooling_uses_mask.
12. Emoji / multi-byte -> here test_emoji_ids_match_reference_and_round_trip.
13. tfds bytes -> here test_tfds_bytes_decode_to_same_ids_as_file; offline ->
    test_tfds_download_offline_fails_fast (subprocess, download=True),
    test_tfds_source::test_not_prepared_raises_quickly (download=False).
14. One class -> test_labels::test_single_class_raises, here test_one_class_training_file;
    eval labels outside the map -> test_labels::test_encode_unknown_label, here test_unseen_eval_label_names_value_and_line;
    imbalance in the eval report -> here test_metrics_show_class_imbalance;
    test_optim_config_metrics::test_metrics_exact_values.
15. Header lacking the column -> here test_header_missing_column_lists_columns[csv|tsv|jsonl];
    test_data_readers::test_csv_missing_column_lists_found_columns_and_keys, ::test_tsv_missing_label_column,
    ::test_jsonl_missing_key.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from flaxtune.data import DataError, Record, build_label_map, encode_labels, read_records, validate_records
from flaxtune.data.tokenize import TokenizationError, tokenize_texts

from conftest import REPO, TOKENIZER_DIR, need_shared

FORMATS = ["csv", "tsv", "jsonl"]


def write_rows(tmp_path: Path, fmt: str, rows, *, header=("text", "label"), name="data") -> Path:
    """Write `rows` (tuples of raw cell strings, None = JSON null) in `fmt`; one record per line."""
    p = tmp_path / f"{name}.{fmt}"
    if fmt == "jsonl":
        lines = [json.dumps(dict(zip(header, row)), ensure_ascii=False) for row in rows]
    else:
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(header)] + [sep.join("" if c is None else c for c in row) for row in rows]
    p.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return p


def first_data_line(fmt: str) -> int:
    return 1 if fmt == "jsonl" else 2  # JSONL has no header line


# --------------------------------------------------------------------------- 3, 4: encodings


@pytest.mark.parametrize("fmt", FORMATS)
def test_bom_header_read_as_text_label(tmp_path, fmt):
    p = write_rows(tmp_path, fmt, [("hi", "1"), ("yo", "0")])
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    recs = read_records(p)  # default fields: text, label -> the BOM is not part of the first column name
    assert [(r.text, r.label, r.line) for r in recs] == [
        ("hi", "1", first_data_line(fmt)), ("yo", "0", first_data_line(fmt) + 1)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_undecodable_bytes_every_format(tmp_path, fmt):
    p = write_rows(tmp_path, fmt, [("fine", "1"), ("caf\u00e9 was great", "0")])
    raw = p.read_bytes().replace("é".encode("utf-8"), b"\xe9")  # what a cp1252 export holds
    p.write_bytes(raw)
    with pytest.raises(DataError) as e:
        read_records(p)
    offset = raw.index(b"\xe9")
    line = first_data_line(fmt) + 1
    msg = str(e.value)
    assert msg.startswith(f"{p}, line {line}: cannot decode the file as utf-8: byte(s) 0xe9 at byte offset {offset}")
    assert "set data.encoding=cp1252" in msg
    assert [r.text for r in read_records(p, encoding="cp1252")] == ["fine", "café was great"]


# --------------------------------------------------------------------------- 5: JSONL


def test_jsonl_duplicate_label_key(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 0, "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_records(p)
    assert str(e.value).startswith(f"{p}, line 3, field 'label': the key 'label' appears more than once")
    # other repeated keys are not our business
    p.write_text('{"text": "a", "label": 0, "x": 1, "x": 2}\n', encoding="utf-8")
    assert read_records(p) == [Record("a", "0", str(p), 1)]


# --------------------------------------------------------------------------- 6: empty texts


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_text_rejected_with_lines(tmp_path, fmt):
    p = write_rows(tmp_path, fmt, [("good", "1"), ("", "0"), ("   ", "1"), ("fine", "0")])
    with pytest.raises(DataError) as e:
        validate_records(read_records(p))
    msg = str(e.value)
    first = first_data_line(fmt)
    assert msg.startswith(f"2 of 4 records are invalid (empty text: 2) in {p}:\n")
    assert f"  {p}, line {first + 1}, field 'text': text is empty\n" in msg
    assert f"  {p}, line {first + 2}, field 'text': text is whitespace-only ('   ')\n" in msg
    assert "data.skip_invalid=True" in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_text_skipped_and_counted_when_opted_in(tmp_path, fmt):
    p = write_rows(tmp_path, fmt, [("good", "1"), ("", "0"), ("   ", "1"), ("fine", "NA"), ("ok", "0")])
    valid, report = validate_records(read_records(p), skip_invalid=True)
    first = first_data_line(fmt)
    assert [(r.text, r.label, r.line) for r in valid] == [("good", "1", first), ("ok", "0", first + 4)]
    assert report == {"skipped": 3, "reasons": {"empty text": 2, "missing label": 1}}


def _data_config(path, **kw):
    c = ml_collections.ConfigDict(dict(source="files", train_file=str(path), eval_file=str(path),
                                       text_field="text", label_field="label", encoding="utf-8",
                                       file_format="", skip_invalid=False))
    c.update(kw)
    return c


def test_skip_invalid_is_logged_by_load_split(tmp_path, caplog):
    from flaxtune.data.sources import load_split

    p = write_rows(tmp_path, "tsv", [("good", "1"), (" ", "0"), ("x", ""), ("ok", "0")],
                   header=("sentence", "label"))
    with pytest.raises(DataError) as e:
        load_split(_data_config(p, text_field="sentence"), "train")
    assert f"{p}, line 3, field 'sentence': text is whitespace-only (' ')" in str(e.value)
    assert f"{p}, line 4, field 'label': label is missing ('')" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="flaxtune.data.sources"):
        recs = load_split(_data_config(p, text_field="sentence", skip_invalid=True), "train")
    assert [r.text for r in recs] == ["good", "ok"]
    assert (f"train data ({p}): skipped 2 invalid records (empty text: 1, missing label: 1) because "
            "data.skip_invalid=True; 2 records kept") in caplog.text


def test_validation_names_the_configured_fields(tmp_path):
    # records carry the column they were read from, so any caller's error names 'review'/'stars'
    p = write_rows(tmp_path, "csv", [("ok", "1"), ("", "0"), ("x", "NA")], header=("review", "stars"))
    with pytest.raises(DataError) as e:
        validate_records(read_records(p, text_field="review", label_field="stars"))
    assert f"{p}, line 3, field 'review': text is empty" in str(e.value)
    assert f"{p}, line 4, field 'stars': label is missing ('NA')" in str(e.value)


def test_tokenizer_never_returns_zero_length(gpt2_tokenizer):
    with pytest.raises(TokenizationError, match=r"^dev.tsv:7: text '' gives no tokens$"):
        tokenize_texts(gpt2_tokenizer, ["ok", ""], 16, vocab_size=50257, sources=["dev.tsv:6", "dev.tsv:7"])
    assert issubclass(TokenizationError, DataError)


# --------------------------------------------------------------------------- 7: labels


@pytest.mark.parametrize("bad", ["", "NA"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_label_rejected_with_line(tmp_path, fmt, bad):
    p = write_rows(tmp_path, fmt, [("good", "1"), ("no label here", bad), ("fine", "0")])
    recs = read_records(p)
    assert recs[1].label == bad  # the reader keeps the raw cell ...
    with pytest.raises(DataError) as e:  # ... and validation refuses it; never defaulted to 0
        validate_records(recs)
    assert f"  {p}, line {first_data_line(fmt) + 1}, field 'label': label is missing ({bad!r})\n" in str(e.value)
    assert str(e.value).startswith(f"1 of 3 records are invalid (missing label: 1) in {p}:")


def test_jsonl_null_label_is_missing_too(tmp_path):
    p = write_rows(tmp_path, "jsonl", [("good", "1"), ("x", None), ("y", "0")])
    with pytest.raises(DataError) as e:
        validate_records(read_records(p))
    assert f"  {p}, line 2, field 'label': label is missing\n" in str(e.value)


# --------------------------------------------------------------------------- 8: string labels


def test_string_label_map_independent_of_hash_seed(tmp_path):
    p = write_rows(tmp_path, "jsonl", [("a", "positive"), ("b", " negative "), ("c", "positive")])
    code = textwrap.dedent(f"""
        import json
        from flaxtune.data import build_label_map, read_records, validate_records
        recs, _ = validate_records(read_records({str(p)!r}))
        print(json.dumps(build_label_map(recs)))
    """)
    outs = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert outs == [["negative", "positive"], ["negative", "positive"]]


def test_unseen_eval_label_names_value_and_line(tmp_path):
    train = write_rows(tmp_path, "jsonl", [("a", "positive"), ("b", "negative")], name="train")
    dev = write_rows(tmp_path, "jsonl", [("c", "negative"), ("d", "neutral"), ("e", "positive")], name="dev")
    names = build_label_map(validate_records(read_records(train))[0])
    assert names == ["negative", "positive"]
    with pytest.raises(DataError) as e:
        encode_labels(validate_records(read_records(dev))[0], names)
    assert str(e.value).startswith(
        f"{dev}, line 2, field 'label': unknown label 'neutral'; known labels are ['negative', 'positive'].")


# --------------------------------------------------------------------------- 9: long texts, max_length


def test_truncation_is_counted_without_the_tokenizers_indexing_warning(capfd):
    """flaxtune truncates and counts long texts itself; transformers' "will result in indexing
    errors" warning for a text over model_max_length (1,024) would only alarm the user."""
    from flaxtune.data.tokenize import load_tokenizer

    tokenizer = load_tokenizer(str(need_shared(TOKENIZER_DIR)))  # fresh: transformers warns once per instance
    data = tokenize_texts(tokenizer, ["word " * 1200, "short"], 64, vocab_size=50257)
    assert data.num_truncated == 1 and data.lengths.tolist() == [64, 1]
    assert "indexing errors" not in capfd.readouterr().err


def test_long_text_truncated_to_1024_with_finite_logits(gpt2_tokenizer):
    import jax
    import jax.numpy as jnp

    from flaxtune.model import GPT2Classifier, GPT2Dims

    text = " ".join(f"word{i}" for i in range(750))
    ref = gpt2_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert 1400 < len(ref) < 1700
    data = tokenize_texts(gpt2_tokenizer, [text, "short one"], 1024, vocab_size=50257)
    assert data.lengths.tolist() == [1024, 2] and data.num_truncated == 1
    assert data.ids[0].tolist() == ref[:1024]
    model = GPT2Classifier(GPT2Dims(vocab_size=50257, n_positions=1024, n_embd=16, n_layer=1, n_head=2), 2)
    ids = jnp.asarray(data.ids[0])[None]
    mask = jnp.ones_like(ids)
    params = model.init(jax.random.key(0), ids[:, :4], mask[:, :4])["params"]
    logits = model.apply({"params": params}, ids, mask)
    assert logits.shape == (1, 2) and bool(jnp.all(jnp.isfinite(logits)))


def test_max_length_above_n_positions_refused_before_training(tmp_path):
    from flaxtune import config as config_lib
    from flaxtune.train import train_and_evaluate

    train = write_rows(tmp_path, "tsv", [("good", "1"), ("bad", "0")] * 8, header=("sentence", "label"))
    c = config_lib.load_config_file(str(REPO / "configs" / "sst2_local.py"))
    c.data.train_file = c.data.eval_file = str(train)
    c.tokenizer = str(need_shared(TOKENIZER_DIR))
    c.scratch_model.update(n_layer=1, n_embd=16, n_head=2, n_positions=128)
    c.max_length = 2048
    c.train.num_train_steps = 1
    workdir = tmp_path / "run"
    with pytest.raises(config_lib.ConfigError) as e:
        train_and_evaluate(c, workdir)
    assert str(e.value) == ("config.max_length=2048 exceeds the model's n_positions=128; "
                            "set --config.max_length=128 or less")
    assert not (workdir / "checkpoints").exists()
    with pytest.raises(config_lib.ConfigError, match="n_positions=128"):
        config_lib.validate_config(c)  # already when the config is validated


# --------------------------------------------------------------------------- 10: ids vs embedding table


def test_added_pad_token_id_outside_embedding_is_refused():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(need_shared(TOKENIZER_DIR)))
    tok.add_special_tokens({"pad_token": "[PAD]"})
    assert tok.convert_tokens_to_ids("[PAD]") == 50257 and len(tok) == 50258
    with pytest.raises(TokenizationError) as e:
        tokenize_texts(tok, ["fine", "a [PAD] b"], 64, vocab_size=50257, sources=["x.tsv:2", "x.tsv:3"])
    assert str(e.value).startswith(
        "x.tsv:3: token id 50257 is outside the model's embedding table (vocab_size=50257, ids 0..50256): "
        "it is the token '[PAD]'; the tokenizer (50258 tokens) does not match the model")
    assert isinstance(e.value, DataError)


# --------------------------------------------------------------------------- 11: <|endoftext|> in text


def test_literal_endoftext_is_50256_and_pooling_uses_mask(gpt2_tokenizer):
    import jax
    import jax.numpy as jnp
    from transformers import AutoTokenizer

    from flaxtune.data.pipeline import eval_batches
    from flaxtune.model import GPT2Classifier, GPT2Dims, last_token_index

    ref = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    texts = ["good<|endoftext|> bad", "ends with<|endoftext|>", "plain"]
    data = tokenize_texts(gpt2_tokenizer, texts, 32, vocab_size=50257)
    assert data.ids[0].tolist() == [11274, 50256, 2089]
    assert [d.tolist() for d in data.ids] == [ref(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert data.ids[1].tolist()[-1] == 50256 == gpt2_tokenizer.pad_token_id  # eos doubles as pad
    batch = next(eval_batches(data, global_batch=4, num_devices=1, buckets=[16, 32], by_length=False))
    mask = batch["attention_mask"][0]
    assert mask.sum(axis=1).tolist() == [3, len(data.ids[1]), 1, 1]  # row 4 is weight-0 padding
    assert last_token_index(jnp.asarray(mask)).tolist() == [2, len(data.ids[1]) - 1, 0, 0]
    # logits of the padded batch == logits of each text alone: pooling is at the last real token
    model = GPT2Classifier(GPT2Dims(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2), 2)
    ids = jnp.asarray(batch["input_ids"][0])
    params = model.init(jax.random.key(0), ids, jnp.asarray(mask))["params"]
    batched = model.apply({"params": params}, ids, jnp.asarray(mask))
    for i, row in enumerate(data.ids):
        alone = model.apply({"params": params}, jnp.asarray(row)[None], jnp.ones((1, len(row)), jnp.int32))
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 12: emoji


def test_emoji_ids_match_reference_and_round_trip(gpt2_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(need_shared(TOKENIZER_DIR)))
    text = "hello 👋 world 🌍"
    p = write_rows(tmp_path, "tsv", [(text, "1")])
    (rec,) = read_records(p)
    assert rec.text == text
    data = tokenize_texts(gpt2_tokenizer, [rec.text], 64, vocab_size=50257)
    expected = ref(text, add_special_tokens=False)["input_ids"]
    assert data.ids[0].tolist() == expected
    assert len(expected) > len(text.split())  # multi-byte characters take several byte-level tokens
    assert gpt2_tokenizer.decode(data.ids[0].tolist()) == text


# --------------------------------------------------------------------------- 13: tfds


TFDS_TEXTS = ["hello 👋 world 🌍", "café was great", 'He said "wow"', "plain text"]


def _tfds_as_dataset(texts, labels):
    def as_dataset(self, *args, **kwargs):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices({
            "sentence": tf.constant([t.encode("utf-8") for t in texts]),  # tfds gives bytes
            "label": tf.constant(labels, tf.int64),
            "idx": tf.range(len(texts), dtype=tf.int32),
        })

    return as_dataset


def test_tfds_bytes_decode_to_same_ids_as_file(tmp_path, gpt2_tokenizer):
    tfds = pytest.importorskip("tensorflow_datasets")
    from flaxtune.data import read_tfds

    with tfds.testing.mock_data(as_dataset_fn=_tfds_as_dataset(TFDS_TEXTS, [1, 0, 0, 1])):
        from_tfds = read_tfds("glue/sst2", split="train", data_dir=str(tmp_path))
    assert [(r.text, r.label, r.line) for r in from_tfds] == [
        (t, lab, i + 1) for i, (t, lab) in enumerate(zip(TFDS_TEXTS, ["positive", "negative", "negative", "positive"]))]
    p = write_rows(tmp_path, "tsv", [(t, "1") for t in TFDS_TEXTS], header=("sentence", "label"))
    from_file = read_records(p, text_field="sentence")
    a = tokenize_texts(gpt2_tokenizer, [r.text for r in from_tfds], 64, vocab_size=50257)
    b = tokenize_texts(gpt2_tokenizer, [r.text for r in from_file], 64, vocab_size=50257)
    assert [x.tolist() for x in a.ids] == [x.tolist() for x in b.ids]


def test_tfds_empty_text_goes_through_the_same_validation(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from flaxtune.data import read_tfds

    with tfds.testing.mock_data(as_dataset_fn=_tfds_as_dataset(["fine", "  ", "ok"], [1, 0, -1])):
        recs = read_tfds("glue/sst2", split="train", data_dir=str(tmp_path))
    with pytest.raises(DataError) as e:
        validate_records(recs)
    msg = str(e.value)
    assert "  tfds:glue/sst2[train], record 2, field 'sentence': text is whitespace-only ('  ')\n" in msg
    assert "  tfds:glue/sst2[train], record 3, field 'label': label is missing\n" in msg  # GLUE's -1


def test_tfds_download_offline_fails_fast(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from flaxtune.data.tfds_source import network_available

    if network_available():
        pytest.skip("this machine has network access; the offline path cannot be exercised")
    code = textwrap.dedent(f"""
        from flaxtune.data import DataError, read_tfds
        try:
            read_tfds("glue/sst2", split="train", data_dir={str(tmp_path)!r}, download=True)
        except DataError as e:
            print("DATAERROR", e)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("DATAERROR"))
    assert f"tfds:glue/sst2[train]: dataset 'glue/sst2' is not prepared in data_dir={tmp_path}" in line
    assert "cannot be downloaded: no network" in line and "data.tfds_data_dir=DIR" in line


# --------------------------------------------------------------------------- 14: classes


def test_one_class_training_file(tmp_path):
    p = write_rows(tmp_path, "csv", [("a", "positive"), ("b", "positive")])
    with pytest.raises(DataError) as e:
        build_label_map(validate_records(read_records(p))[0])
    assert str(e.value).startswith(
        "Classification needs at least 2 distinct labels, but the data has only one class, 'positive'.")


def test_metrics_show_class_imbalance():
    from flaxtune.metrics import classification_metrics

    # 8 of class 0, 2 of class 1; the model predicts 0 for everything but one example of class 1
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    preds = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    m = classification_metrics(np.eye(2)[preds] * 4.0, labels, 2)
    assert m["accuracy"] == 0.9
    assert m["confusion_matrix"] == [[8, 0], [1, 1]]
    assert m["per_class"]["support"] == [8, 2]
    assert m["per_class"]["precision"] == pytest.approx([8 / 9, 1.0])
    assert m["per_class"]["recall"] == pytest.approx([1.0, 0.5])
    assert m["per_class"]["f1"] == pytest.approx([16 / 17, 2 / 3])
    assert m["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="label ids must be in 0..1"):
        classification_metrics(np.zeros((2, 2)), np.array([0, -1]), 2)


# --------------------------------------------------------------------------- 15: header


@pytest.mark.parametrize("fmt", FORMATS)
def test_header_missing_column_lists_columns(tmp_path, fmt):
    p = write_rows(tmp_path, fmt, [("great", "1")], header=("review", "label"))
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    if fmt == "jsonl":
        assert msg.startswith(f"{p}, line 1: object is missing the text field 'text' (data.text_field); "
                              "keys found: ['label', 'review'].")
    else:
        assert msg.startswith(f"{p}, line 1: header is missing the text column 'text' (data.text_field); "
                              "columns found: ['review', 'label'].")
