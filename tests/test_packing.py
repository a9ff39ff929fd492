"""Sequence packing: exact row layout, logits equal to each text alone, a train step equal
to the padded one, and every example exactly once per epoch."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from flaxtune.data.pipeline import (batch_plan, bucket_lengths, fill_packed_rows, pack_examples, packed_batch,
                                    padding_of_rows, train_batches)
from flaxtune.data.tokenize import Tokenized
from flaxtune.model import GPT2Classifier, GPT2Dims
from flaxtune.optim import make_train_optimizer
from flaxtune.parallel import PmapStrategy
from flaxtune.train import TrainState, train_step

from conftest import SST2_DIR, need_shared, trained_params

DIMS = GPT2Dims(vocab_size=97, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def test_first_fit_decreasing_rows():
    assert pack_examples([5, 3, 7, 2, 6], 10) == [[2, 1], [4, 3], [0]]
    assert pack_examples([10, 10], 10) == [[0], [1]]


def test_packed_batch_layout_exact():
    seqs = [np.array([11, 12, 13]), np.array([21]), np.array([31, 32]),
            np.array([41, 42, 43, 44]), np.array([51]), np.array([61, 62, 63])]
    b = packed_batch(seqs, np.array([0, 1, 0, 1, 1, 0]), num_devices=2, row_length=4)
    # the whole batch packed: lengths [3, 1, 2, 4, 1, 3] -> rows [[3], [0, 1], [5, 4], [2]],
    # row r to device r % 2
    assert b["input_ids"].tolist() == [[[41, 42, 43, 44], [61, 62, 63, 51]],
                                       [[11, 12, 13, 21], [31, 32, 0, 0]]]
    assert b["segment_ids"].tolist() == [[[1, 1, 1, 1], [1, 1, 1, 2]], [[1, 1, 1, 2], [1, 1, 0, 0]]]
    assert b["position_ids"].tolist() == [[[0, 1, 2, 3], [0, 1, 2, 0]], [[0, 1, 2, 0], [0, 1, 0, 0]]]
    assert b["attention_mask"].tolist() == [[[1, 1, 1, 1], [1, 1, 1, 1]], [[1, 1, 1, 1], [1, 1, 0, 0]]]
    # per device, a slot for each of the batch's 6 examples: its own (examples 3, 4, 5 and
    # 0, 1, 2) first, then unused slots of weight 0
    assert b["pool_index"].tolist() == [[3, 7, 6, 0, 0, 0], [2, 3, 5, 0, 0, 0]]
    assert b["labels"].tolist() == [[1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert b["weights"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    # an odd row count gets an all-padding row
    b = packed_batch(seqs[:3], np.array([0, 1, 0]), num_devices=2, row_length=4)
    assert b["input_ids"].tolist() == [[[11, 12, 13, 21]], [[31, 32, 0, 0]]]
    b = packed_batch(seqs[:2], np.array([0, 1]), num_devices=2, row_length=4)
    assert b["input_ids"].tolist() == [[[11, 12, 13, 21]], [[0, 0, 0, 0]]]
    assert b["weights"].tolist() == [[1, 1], [0, 0]]


def _seqs(n, seed, max_len=12):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, DIMS.vocab_size, rng.integers(1, max_len + 1)).astype(np.int32)
            for _ in range(n)]


def test_packed_logits_equal_each_text_alone():
    model = GPT2Classifier(DIMS, 3)
    params = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))["params"]
    seqs = _seqs(9, seed=1)
    b = packed_batch(seqs, np.zeros(9), num_devices=1, row_length=16)
    assert b["input_ids"].shape[1] < 9  # several texts per row
    packed = model.apply({"params": params}, b["input_ids"][0], b["attention_mask"][0],
                         segment_ids=b["segment_ids"][0], position_ids=b["position_ids"][0],
                         pool_index=b["pool_index"][0])
    alone = np.concatenate([model.apply({"params": params}, s[None], np.ones((1, len(s)), np.int32))
                            for s in seqs])
    np.testing.assert_allclose(np.asarray(packed), alone, atol=1e-5, rtol=1e-5)


def test_packed_train_step_equals_padded_step():
    """Same examples, dropout off, 2 devices: packed and padded batches give the same loss,
    gradient norm and parameters after two steps."""
    model = GPT2Classifier(DIMS, 2)
    params = model.init(jax.random.key(2), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))["params"]
    t = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.01, adam_b1=0.9,
                                       adam_b2=0.999, adam_eps=1e-8, grad_clip_norm=1.0, grad_accum_steps=1,
                                       row_sparse_embedding=True))
    tx, _ = make_train_optimizer(t, total_steps=4)
    strategy = PmapStrategy(jax.local_devices()[:2])
    out = {}
    for mode in ("padded", "packed"):
        state = strategy.replicate(TrainState(step=np.int32(0), params=params, opt_state=tx.init(params)))
        step = strategy.compile_train_step(functools.partial(train_step, model=model, tx=tx,
                                                             strategy=strategy, seed=0))
        losses = []
        for k in range(2):
            seqs, labels = _seqs(8, seed=10 + k), np.arange(8) % 2
            if mode == "packed":
                batch = packed_batch(seqs, labels, num_devices=2, row_length=16)
            else:
                ids = np.zeros((8, 12), np.int32)
                mask = np.zeros((8, 12), np.int32)
                for i, s in enumerate(seqs):
                    ids[i, :len(s)], mask[i, :len(s)] = s, 1
                batch = {"input_ids": ids.reshape(2, 4, 12), "attention_mask": mask.reshape(2, 4, 12),
                         "labels": labels.reshape(2, 4).astype(np.int32)}
            state, m = step(state, batch)
            losses.append((float(m["loss"][0]), float(m["grad_norm"][0])))
        out[mode] = (losses, traverse_util.flatten_dict(trained_params(strategy, state, tx), sep="/"))
    assert np.isfinite(out["packed"][0]).all()
    np.testing.assert_allclose(out["packed"][0], out["padded"][0], rtol=1e-5)
    for k, v in out["padded"][1].items():
        got, v = np.array(out["packed"][1][k]), np.array(v)
        if k.endswith("attn/c_attn/bias"):  # the key bias: true gradient 0, Adam-scaled float noise
            n = DIMS.n_embd                 # (see test_row_sparse_train_step_equals_dense_optax_step)
            assert np.abs(got[n:2 * n]).max() < 1e-4
            got, v = np.delete(got, np.s_[n:2 * n]), np.delete(v, np.s_[n:2 * n])
        np.testing.assert_allclose(got, v, rtol=1e-4, atol=1e-6, err_msg=k)


def test_packed_epoch_has_every_example_once_and_few_pads():
    rng = np.random.default_rng(3)
    ids = [np.arange(rng.integers(1, 30)) + 1000 * i for i in range(203)]
    data = Tokenized(ids=[x.astype(np.int32) for x in ids], labels=np.arange(203, dtype=np.int32) % 2)
    kw = dict(global_batch=16, num_devices=4, seed=0, epoch=0, buckets=bucket_lengths(32))
    batches = list(train_batches(data, pack=True, **kw))
    assert len(batches) == 203 // 16
    seen = []
    for b in batches:
        d, r, t = b["input_ids"].shape
        assert (d, t) == (4, 32) and r <= 4 and b["pool_index"].shape == (4, 16)
        assert b["weights"].sum() == 16
        # the batch's rows as one device would pack them, plus at most 3 spare rows
        lengths = [int(b["position_ids"][dev].reshape(-1)[end]) + 1 for dev in range(4)
                   for end in b["pool_index"][dev][b["weights"][dev] == 1]]
        used = int((b["attention_mask"].sum(-1) > 0).sum())
        assert len(pack_examples(lengths, 32)) == used > d * r - 4
        for dev in range(4):
            flat = b["input_ids"][dev].reshape(-1)
            seg, pos = b["segment_ids"][dev].reshape(-1), b["position_ids"][dev].reshape(-1)
            for j, end in enumerate(b["pool_index"][dev][b["weights"][dev] == 1]):
                n = pos[end] + 1
                example = flat[end - n + 1:end + 1]
                assert (seg[end - n + 1:end + 1] == seg[end]).all() and seg[end] > 0
                assert b["labels"][dev, j] == (example[0] // 1000) % 2
                seen.append(int(example[0] // 1000))
    # the same examples as the unpacked (random) batches of that epoch, each once
    plain = [int(x // 1000) for b in train_batches(data, group_by_length=False, **kw)
             for row, m in zip(b["input_ids"].reshape(-1, b["input_ids"].shape[-1]),
                               b["attention_mask"].reshape(-1, b["input_ids"].shape[-1])) for x in row[:1]]
    assert sorted(seen) == sorted(plain) and len(set(seen)) == len(seen) == 12 * 16


def test_padding_of_rows_exact():
    assert padding_of_rows([5, 3, 7, 2, 6], 10) == 3 * 10 - 23
    assert padding_of_rows([4, 4, 4, 4], 8) == 0


def test_fill_packed_rows_exchanges_examples_until_rows_are_full():
    # Batch 0 (4+4+4+3 = 15 tokens) needs 2 rows of 8 with 1 pad; giving its 3 for a 4, or a 4
    # for the 5, of batch 1 fills both batches' rows exactly.
    lengths = np.array([4, 4, 4, 3, 4, 4, 4, 5])
    plan = [np.arange(4), np.arange(4, 8)]
    for seed in range(5):
        filled = fill_packed_rows(plan, lengths, row_length=8, seed=seed)
        assert [len(b) for b in filled] == [4, 4]
        assert sorted(np.concatenate(filled).tolist()) == list(range(8))
        assert [padding_of_rows(lengths[b], 8) for b in filled] == [0, 0]
        assert len(set(filled[0].tolist()) - set(plan[0].tolist())) == 1  # one exchange
    # examples never leave their window: with windows of one batch nothing can move
    assert [b.tolist() for b in fill_packed_rows(plan, lengths, row_length=8, seed=0, window=1)] == \
        [b.tolist() for b in plan]


@pytest.fixture(scope="module")
def sst2_train_lengths(gpt2_tokenizer):
    """GPT-2 token counts of every SST-2 training text (at most 64; none is longer)."""
    lines = need_shared(SST2_DIR / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return np.array([len(x) for x in gpt2_tokenizer([line.split("\t")[0] for line in lines])["input_ids"]])


def _padding_fraction(plan, lengths, row_length):
    return sum(padding_of_rows(lengths[b], row_length) for b in plan) / sum(
        len(pack_examples(lengths[b], row_length)) * row_length for b in plan)


def test_filled_batches_on_sst2_keep_examples_and_lose_the_padding(sst2_train_lengths):
    lengths = np.minimum(sst2_train_lengths[:2048], 64)
    plan = batch_plan(lengths, global_batch=32, seed=0, epoch=0, buckets=[64], group_by_length=False)
    filled = fill_packed_rows(plan, lengths, row_length=64, seed=0)
    assert len(filled) == len(plan) == 64 and all(len(b) == 32 for b in filled)
    for w in range(0, 64, 32):  # the same examples in each window of 32 batches, each once
        assert sorted(np.concatenate(filled[w:w + 32]).tolist()) == sorted(np.concatenate(plan[w:w + 32]).tolist())
    assert _padding_fraction(plan, lengths, 64) > 0.05 and _padding_fraction(filled, lengths, 64) < 0.01
    moved = sum(len(set(a.tolist()) - set(b.tolist())) for a, b in zip(plan, filled))
    assert moved < 0.2 * 2048  # most examples stay in their random batch


def test_filled_batches_do_not_drift_with_their_place_in_the_window(sst2_train_lengths):
    """Filling batch after batch must not hand the long texts to a window's first batches and
    the short ones to its last (rows of 128, SST-2 texts: ~2.9 rows' worth per batch)."""
    lengths = sst2_train_lengths
    plan = batch_plan(lengths, global_batch=32, seed=0, epoch=0, buckets=[128], group_by_length=False)
    filled = fill_packed_rows(plan, lengths, row_length=128, seed=0)
    mean_length = np.array([lengths[b].mean() for b in filled[:len(filled) // 32 * 32]]).reshape(-1, 32)
    first, last = mean_length[:, :16].mean(), mean_length[:, 16:].mean()
    assert abs(first - last) < 0.3, (first, last)  # overall mean 11.4 tokens
    assert _padding_fraction(plan, lengths, 128) > 0.1 and _padding_fraction(filled, lengths, 128) < 0.02


def test_packed_batches_do_not_depend_on_the_device_count_and_resume_mid_epoch():
    rng = np.random.default_rng(4)
    ids = [np.arange(rng.integers(1, 30)) + 1000 * i for i in range(203)]
    data = Tokenized(ids=[x.astype(np.int32) for x in ids], labels=np.arange(203, dtype=np.int32) % 2)
    kw = dict(global_batch=16, seed=1, epoch=2, buckets=bucket_lengths(32), pack=True)

    def examples(batches):
        out = []
        for b in batches:
            flat, pos = b["input_ids"].reshape(len(b["pool_index"]), -1), b["position_ids"]
            pos = pos.reshape(len(b["pool_index"]), -1)
            out.append(sorted(int(flat[d, end - pos[d, end]] // 1000) for d in range(len(flat))
                              for end in b["pool_index"][d][b["weights"][d] == 1]))
        return out

    one = examples(train_batches(data, num_devices=1, **kw))
    assert examples(train_batches(data, num_devices=4, **kw)) == one
    assert examples(train_batches(data, num_devices=4, skip_batches=5, **kw)) == one[5:]
    plain = examples(train_batches(data, num_devices=1, fill_rows=False, **kw))
    assert one != plain and sorted(sum(one, [])) == sorted(sum(plain, []))
