"""Tokenization and batching: exact ids, truncation, shapes, order, every example once."""

import gc
import threading
import time

import numpy as np
import pytest

from flaxtune.data.pipeline import (batch_plan, bucket_lengths, epoch_order, eval_batches, prefetch,
                                    steps_per_epoch, train_batches)
from flaxtune.data.tokenize import Tokenized, TokenizationError, tokenize_texts


def test_real_tokenizer_ids_and_eos_pad(gpt2_tokenizer):
    t = tokenize_texts(gpt2_tokenizer, ["Hello world", "hello 👋 world 🌍"], 64, vocab_size=50257)
    assert t.ids[0].tolist() == [15496, 995]
    assert gpt2_tokenizer.decode(t.ids[1]) == "hello 👋 world 🌍"
    assert gpt2_tokenizer.pad_token_id == gpt2_tokenizer.eos_token_id == 50256


def test_truncation_to_max_length_exactly(gpt2_tokenizer):
    long = " ".join(["word"] * 1500)
    t = tokenize_texts(gpt2_tokenizer, [long, "short"], 1024, vocab_size=50257)
    assert len(t.ids[0]) == 1024 and t.num_truncated == 1
    assert len(t.ids[1]) == 1


def test_token_ids_outside_embedding_table_are_an_error(gpt2_tokenizer):
    with pytest.raises(TokenizationError, match=r"train.tsv:7: token id 15496 is outside .*vocab_size=1000"):
        tokenize_texts(gpt2_tokenizer, ["Hello"], 8, vocab_size=1000, sources=["train.tsv:7"])


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = [np.arange(1, rng.integers(1, 40) + 1, dtype=np.int32) + 1000 * i for i in range(n)]
    return Tokenized(ids=ids, labels=np.arange(n, dtype=np.int32) % 2)


def test_bucket_lengths():
    assert bucket_lengths(64) == [8, 16, 24, 32, 48, 64]
    assert bucket_lengths(100) == [8, 16, 24, 32, 48, 64, 96, 100]
    assert bucket_lengths(16) == [8, 16]
    assert bucket_lengths(1024)[-3:] == [512, 768, 1024]


def _first_ids(batches):
    return [int(row[0]) // 1000 for b in batches for row in b["input_ids"].reshape(-1, b["input_ids"].shape[-1])]


def test_train_batches_shapes_order_and_determinism():
    data = _data(103)
    kw = dict(global_batch=16, num_devices=8, seed=3, buckets=[16, 32, 64], group_by_length=False)
    e0 = list(train_batches(data, epoch=0, **kw))
    assert len(e0) == 103 // 16 == steps_per_epoch(103, 16)
    for b in e0:
        assert b["input_ids"].shape[:2] == (8, 2) and b["input_ids"].shape[2] in (16, 32, 64)
        assert b["labels"].shape == (8, 2)
        lengths = b["attention_mask"].sum(-1)
        assert lengths.max() <= b["input_ids"].shape[2]
        # the mask marks exactly the real tokens, which are the example's ids
        flat_ids, flat_mask = b["input_ids"].reshape(16, -1), b["attention_mask"].reshape(16, -1)
        for row, m in zip(flat_ids, flat_mask):
            k = int(row[0]) // 1000
            np.testing.assert_array_equal(row[m == 1], data.ids[k])
    seen = _first_ids(e0)
    assert len(set(seen)) == len(seen) == 96
    assert seen != sorted(seen)  # shuffled
    assert _first_ids(train_batches(data, epoch=0, **kw)) == seen  # same seed+epoch, same order
    assert _first_ids(train_batches(data, epoch=1, **kw)) != seen
    # restart mid-epoch: skipping k batches continues the same stream
    assert _first_ids(train_batches(data, epoch=0, skip_batches=2, **kw)) == seen[32:]
    # the order does not depend on how many devices share the batch
    assert _first_ids(train_batches(data, epoch=0, **{**kw, "num_devices": 1})) == seen


def test_grouped_batches_pad_only_to_their_bucket():
    data = _data(203, seed=1)
    buckets = [8, 16, 24, 32, 48]
    kw = dict(global_batch=8, num_devices=4, seed=5, buckets=buckets)
    e0 = list(train_batches(data, epoch=0, **kw))
    counts = np.bincount(np.searchsorted(buckets, data.lengths), minlength=len(buckets))
    assert len(e0) == 203 // 8 == steps_per_epoch(203, 8)
    full = int((counts // 8).sum())  # single-bucket batches; then the merged leftovers
    for k, b in enumerate(e0):
        t = b["input_ids"].shape[-1]
        lengths = b["attention_mask"].reshape(8, -1).sum(-1)
        assert lengths.max() <= t and (t == buckets[0] or lengths.max() > buckets[buckets.index(t) - 1])
        if k < full:
            lower = buckets[buckets.index(t) - 1] if t != buckets[0] else 0
            assert (lengths > lower).all()  # every row from bucket t
    seen = _first_ids(e0)
    assert len(set(seen)) == len(seen) == 200  # only 203 % 8 examples wait for the next epoch
    assert _first_ids(train_batches(data, epoch=0, **kw)) == seen
    assert _first_ids(train_batches(data, epoch=0, skip_batches=3, **kw)) == seen[24:]
    # far less padding than random batches
    pad = lambda bs: 1 - sum(b["attention_mask"].sum() for b in bs) / sum(b["attention_mask"].size for b in bs)
    random_batches = list(train_batches(data, epoch=0, group_by_length=False,
                                        **{k: v for k, v in kw.items()}))
    assert pad(e0) < pad(random_batches) / 2


def test_eval_batches_count_every_example_once():
    data = _data(37)
    batches = list(eval_batches(data, global_batch=16, num_devices=8, buckets=[16, 32, 64]))
    assert len(batches) == 3
    index = np.concatenate([b["index"] for b in batches])
    weights = np.concatenate([b["weights"].reshape(-1) for b in batches])
    assert sorted(index[index >= 0].tolist()) == list(range(37))
    assert weights.sum() == 37 and (weights[index < 0] == 0).all()
    assert all(b["attention_mask"].reshape(16, -1).sum(-1).min() >= 1 for b in batches)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "flaxtune-prefetch"]


def test_prefetch_yields_the_same_batches_in_order_and_runs_ahead():
    data = _data(103)
    kw = dict(global_batch=16, num_devices=8, seed=3, epoch=0, buckets=[16, 32, 64], pack=True)
    produced = []

    def source():
        for b in train_batches(data, **kw):
            produced.append(b)
            yield b

    it = prefetch(source(), size=2, transform=lambda b: {**b, "seen": len(produced)})
    first = next(it)
    time.sleep(0.2)
    assert len(produced) == 4  # one consumed, two queued, one built and waiting for a place
    rest = list(it)
    assert [b["seen"] for b in [first] + rest] == [1, 2, 3, 4, 5, 6]
    for got, want in zip([first] + rest, train_batches(data, **kw)):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert list(it) == []  # stays exhausted
    assert not _prefetch_threads()


def test_prefetch_raises_the_producers_error_and_stops_when_closed():
    def broken():
        yield 1
        raise ValueError("bad record 7")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad record 7"):
        next(it)
    # a consumer that stops early (break, exception, preemption) leaves no thread behind
    with prefetch(iter(range(1000)), size=1) as it:
        assert next(it) == 0
    assert not _prefetch_threads()
    it = prefetch(iter(range(1000)), size=1)
    next(it)
    del it
    gc.collect()
    time.sleep(0.3)
    assert not _prefetch_threads()


def test_grouped_plan_deals_the_epoch_order_into_buckets_then_merges_leftovers():
    lengths = np.array([3, 20, 4, 25, 5, 30, 6, 2, 40, 7, 1, 9])  # 7 short (<= 8), 5 long
    order = epoch_order(12, seed=1, epoch=2)
    assert sorted(order.tolist()) == list(range(12))
    assert epoch_order(12, seed=1, epoch=3).tolist() != order.tolist()
    plan = batch_plan(lengths, global_batch=3, seed=1, epoch=2, buckets=[8, 64], group_by_length=True)
    pos = {i: k for k, i in enumerate(order.tolist())}
    short = [i for i in order.tolist() if lengths[i] <= 8]
    long_ = [i for i in order.tolist() if lengths[i] > 8]
    # full single-bucket batches in the order they fill up, then the leftovers (short bucket
    # first) re-batched: 12 // 3 = 4 batches, every example once
    full = sorted([short[0:3], short[3:6], long_[0:3]], key=lambda b: pos[b[-1]])
    assert [p.tolist() for p in plan] == full + [[short[6], long_[3], long_[4]]]
    random = batch_plan(lengths, global_batch=3, seed=1, epoch=2, buckets=[8, 64], group_by_length=False)
    assert [p.tolist() for p in random] == order.reshape(4, 3).tolist()
