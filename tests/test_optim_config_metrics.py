"""Optimizer decay mask and schedule, config loading/overrides, metrics."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from flaxtune import config as config_lib
from flaxtune.data.pipeline import PAD_ID
from flaxtune.metrics import classification_metrics
from flaxtune.model import GPT2Classifier, GPT2Dims
from flaxtune.optim import (RowSparseAdamW, learning_rate_schedule, make_optimizer, make_train_optimizer,
                            sum_rows, training_token_ids, weight_decay_mask)
from flaxtune.parallel import PmapStrategy
from flaxtune.train import TrainState, materialize, train_step

from conftest import REPO, trained_params


@pytest.fixture(scope="module")
def small_params():
    model = GPT2Classifier(GPT2Dims(vocab_size=100, n_positions=16, n_embd=8, n_layer=2, n_head=2), 3)
    ids = jnp.ones((1, 4), jnp.int32)
    return model.init(jax.random.key(0), ids, ids)["params"]


def test_decay_mask_spares_biases_and_layernorm_scales(small_params):
    flat = traverse_util.flatten_dict(weight_decay_mask(small_params), sep="/")
    spared = sorted(k for k, v in flat.items() if not v)
    decayed = sorted(k for k, v in flat.items() if v)
    assert decayed == sorted([
        "transformer/wte/embedding", "transformer/wpe/embedding", "score/kernel",
        *[f"transformer/h/{i}/{m}/kernel" for i in range(2)
          for m in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")]])
    assert len(spared) == 18
    assert "transformer/ln_f/scale" in spared and "transformer/h/1/ln_2/scale" in spared
    assert all(k.endswith("/bias") or k.endswith("/scale") for k in spared)


def test_adamw_decays_only_masked_leaves(small_params):
    t = ml_collections.ConfigDict(dict(learning_rate=0.1, warmup_ratio=0.0, weight_decay=0.5, adam_b1=0.9,
                                       adam_b2=0.999, adam_eps=1e-8, grad_clip_norm=1.0, grad_accum_steps=1))
    tx, _ = make_optimizer(t, total_steps=10)
    params = jax.tree.map(lambda x: x + 1.0, small_params)  # no zeros, so decay always shows
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    flat_u = traverse_util.flatten_dict(updates, sep="/")
    flat_m = traverse_util.flatten_dict(weight_decay_mask(params), sep="/")
    for k, u in flat_u.items():
        assert bool(jnp.any(u != 0)) == flat_m[k], k


def test_gradient_accumulation_updates_every_k():
    t = ml_collections.ConfigDict(dict(learning_rate=0.1, warmup_ratio=0.0, weight_decay=0.0, adam_b1=0.9,
                                       adam_b2=0.999, adam_eps=1e-8, grad_clip_norm=0.0, grad_accum_steps=2))
    tx, _ = make_optimizer(t, total_steps=8)
    p = {"w": jnp.ones(3)}
    s = tx.init(p)
    u1, s = tx.update({"w": jnp.ones(3)}, s, p)
    u2, s = tx.update({"w": jnp.ones(3)}, s, p)
    assert float(jnp.abs(u1["w"]).sum()) == 0.0
    assert float(jnp.abs(u2["w"]).sum()) > 0.0


def test_schedule_warms_up_then_decays_to_zero():
    s = learning_rate_schedule(1.0, total_updates=100, warmup_ratio=0.1)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(55)) == pytest.approx(0.5)
    assert float(s(100)) == pytest.approx(0.0)


def test_overrides_are_typed_and_checked():
    c = config_lib.load_config_file(str(REPO / "configs" / "sst2_local.py"))
    rest, ov = config_lib.split_override_args(
        ["train", "--config.train.learning_rate=3e-5", "--config.max_length", "32",
         "--config.data.skip_invalid=true", "--config.tokenizer=../tok", "--workdir", "w"])
    assert rest == ["train", "--workdir", "w"]
    config_lib.apply_overrides(c, ov)
    assert c.train.learning_rate == 3e-5 and c.max_length == 32 and c.data.skip_invalid is True
    assert c.tokenizer == "../tok"
    with pytest.raises(config_lib.ConfigError, match="unknown field 'learning_rat'.*learning_rate"):
        config_lib.apply_overrides(c, {"train.learning_rat": "1"})
    with pytest.raises(config_lib.ConfigError, match="expected an integer, got 'big'"):
        config_lib.apply_overrides(c, {"train.batch_size": "big"})


def test_global_batch_must_divide_by_devices():
    c = config_lib.load_config_file(str(REPO / "configs" / "sst2_local.py"))
    c.train.batch_size = 12
    with pytest.raises(config_lib.ConfigError,
                       match=r"batch_size=12 is the global batch and must divide by the 8 devices.*=8 or 16"):
        config_lib.check_batch_divisible(c, 8)
    config_lib.check_batch_divisible(c, 4)


def test_max_length_above_n_positions_is_refused():
    c = config_lib.load_config_file(str(REPO / "configs" / "sst2_local.py"))
    c.max_length = 2048
    with pytest.raises(config_lib.ConfigError, match="max_length=2048 exceeds the model's n_positions=1024"):
        config_lib.check_max_length(c, 1024)


def test_unknown_strategy_is_refused_at_validation(tmp_path):
    c = config_lib.load_config_file(str(REPO / "configs" / "sst2_local.py"))
    for field in ("train_file", "eval_file"):
        (tmp_path / f"{field}.tsv").write_text("sentence\tlabel\nok\t1\n")
        c.data[field] = str(tmp_path / f"{field}.tsv")
    assert c.train.strategy == "shard_map"
    config_lib.validate_config(c)
    config_lib.apply_overrides(c, {"train.strategy": "tpu"})
    with pytest.raises(config_lib.ConfigError,
                       match="config.train.strategy must be one of shard_map, pmap, got 'tpu'"):
        config_lib.validate_config(c)


def test_metrics_exact_values():
    # labels:  0 0 0 1 1 2 ; preds: 0 0 1 1 0 2
    labels = np.array([0, 0, 0, 1, 1, 2])
    logits = np.eye(3)[[0, 0, 1, 1, 0, 2]] * 5.0
    m = classification_metrics(logits, labels, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: p=2/3 r=2/3 f1=2/3; class 1: p=1/2 r=1/2; class 2: 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["num_examples"] == 6
    expected_loss = np.mean(optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(logits), jnp.asarray(labels)))
    assert m["loss"] == pytest.approx(float(expected_loss), rel=1e-6)


def _train_config(**kw):
    base = dict(learning_rate=0.05, warmup_ratio=0.25, weight_decay=0.1, adam_b1=0.9, adam_b2=0.99,
                adam_eps=1e-8, grad_clip_norm=0.5, grad_accum_steps=1, row_sparse_embedding=True)
    return ml_collections.ConfigDict({**base, **kw})


def test_sum_rows_adds_repeated_ids_and_pads_with_out_of_range():
    ids = jnp.array([7, 2, 7, 5, 2, 7], jnp.int32)
    rows = jnp.arange(12, dtype=jnp.float32).reshape(6, 2)
    unique, summed = sum_rows(ids, rows, vocab_size=10)
    assert unique.tolist() == [2, 5, 7, 10, 10, 10]
    assert summed.tolist() == [[2 + 8, 3 + 9], [6, 7], [0 + 4 + 10, 1 + 5 + 11], [0, 0], [0, 0], [0, 0]]


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_row_sparse_train_step_equals_dense_optax_step(clip):
    """Through the real pmapped train_step on 4 devices: RowSparseAdamW (rows gathered
    across devices, repeated tokens, padding, compact rows for the batches' token ids only,
    read out mid-run and at the end) gives the params and grad norms of
    optax.chain(clip_by_global_norm, adamw) on the dense gradient."""
    dims = GPT2Dims(vocab_size=50, n_positions=16, n_embd=8, n_layer=2, n_head=2)
    model = GPT2Classifier(dims, 3)
    params = model.init(jax.random.key(1), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))["params"]
    strategy = PmapStrategy(jax.local_devices()[:4])
    rng = np.random.default_rng(0)
    batches = []
    for lo in (0, 10, 0, 20, 5, 10):  # rows touched, left for a few steps, touched again
        ids = rng.integers(lo, lo + 12, (4, 2, 6)).astype(np.int32)  # many repeats
        mask = np.ones_like(ids)
        mask[:, 1, 4:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask,
                        "labels": rng.integers(0, 3, (4, 2)).astype(np.int32)})
    table_ids = training_token_ids([b["input_ids"] for b in batches], pad_id=PAD_ID)
    assert 20 < len(table_ids) <= 32  # rows 32.. are never looked up
    t = _train_config(grad_clip_norm=clip)
    sparse_tx, _ = make_train_optimizer(t, total_steps=8, table_ids=table_ids)
    dense_tx, _ = make_optimizer(t, total_steps=8)
    assert isinstance(sparse_tx, RowSparseAdamW) and not isinstance(dense_tx, RowSparseAdamW)
    runs = {}
    for name, tx in (("sparse", sparse_tx), ("dense", dense_tx)):
        state = strategy.replicate(TrainState(step=np.int32(0), params=params, opt_state=tx.init(params)))
        step = strategy.compile_train_step(functools.partial(train_step, model=model, tx=tx,
                                                             strategy=strategy, seed=3))
        read_out = strategy.compile_state_update(functools.partial(materialize, tx=tx))
        norms = []
        for k, batch in enumerate(batches):
            state, metrics = step(state, batch)
            norms.append(float(metrics["grad_norm"][0]))
            if k == 2:  # as an eval or checkpoint mid-run does
                state = read_out(state)
        runs[name] = (trained_params(strategy, state, tx), norms)
    (sp, sn), (dp, dn) = runs["sparse"], runs["dense"]
    np.testing.assert_allclose(sn, dn, rtol=1e-5)
    if clip:
        assert max(dn) > clip  # clipping was active
    flat_s, flat_d = traverse_util.flatten_dict(sp, sep="/"), traverse_util.flatten_dict(dp, sep="/")
    assert flat_s.keys() == flat_d.keys()
    for k in flat_d:
        s, d = np.array(flat_s[k]), np.array(flat_d[k])
        if k.endswith("attn/c_attn/bias"):
            # The key bias shifts every score of a query equally, so softmax makes its true
            # gradient 0; what it gets is float noise that Adam scales up, differently for a
            # different summation order. Checked apart: it stays noise-sized in both runs,
            # under 1% of the distance one step at lr 0.05 with a real gradient moves a param.
            n, bound = dims.n_embd, 0.01 * t.learning_rate
            assert np.abs(s[n:2 * n]).max() < bound and np.abs(d[n:2 * n]).max() < bound
            s, d = np.delete(s, np.s_[n:2 * n]), np.delete(d, np.s_[n:2 * n])
        np.testing.assert_allclose(s, d, rtol=1e-5, atol=1e-6, err_msg=k)  # lr is 0.05
    # Rows never looked up still moved (AdamW decays them), exactly like the dense update.
    untouched = flat_d["transformer/wte/embedding"][32:]
    assert np.abs(untouched - np.asarray(params["transformer"]["wte"]["embedding"])[32:]).max() > 0


def test_row_sparse_state_holds_only_the_training_rows():
    """Compact rows for the training token ids; the params' table is stale until read out."""
    dims = GPT2Dims(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    model = GPT2Classifier(dims, 2)
    params = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))["params"]
    table_ids = training_token_ids([np.array([7, 3, 7]), np.array([41])], pad_id=PAD_ID)
    assert PAD_ID == 0 and table_ids.tolist() == [0, 3, 7, 41]  # the id batches are padded with
    tx, _ = make_train_optimizer(_train_config(weight_decay=0.5), total_steps=8, table_ids=table_ids)
    s = tx.init(params)["table"]
    assert s["rows"].shape == s["mu"].shape == (4, 8) and s["last"].shape == (4,)
    table = np.asarray(params["transformer"]["wte"]["embedding"])
    np.testing.assert_array_equal(s["rows"], table[[0, 3, 7, 41]])
    assert np.asarray(s["slot"])[[0, 3, 7, 41]].tolist() == [0, 1, 2, 3]
    assert (np.asarray(s["slot"])[[1, 2, 8, 49]] == 4).all()  # not a compact row
    # lookup: compact rows from the optimizer state, any other id from the table times `decay`
    state = tx.init(params)
    state["table"] = {**state["table"], "rows": state["table"]["rows"] + 1.0, "decay": jnp.float32(0.5)}
    got = np.asarray(tx.lookup(params, state, jnp.array([[3, 1], [41, 8]])))
    np.testing.assert_allclose(got, [[table[3] + 1, 0.5 * table[1]], [table[41] + 1, 0.5 * table[8]]], rtol=1e-6)
    with pytest.raises(ValueError, match="sorted, distinct"):
        make_train_optimizer(_train_config(), total_steps=8, table_ids=[3, 3, 7])
    with pytest.raises(ValueError, match="table_ids go up to 50, the token embedding has 50 rows"):
        make_train_optimizer(_train_config(), total_steps=8, table_ids=[3, 50])[0].init(params)
    assert tx.table_rows_digest(50)["count"] == 4


def test_row_sparse_is_off_with_gradient_accumulation():
    tx, _ = make_train_optimizer(_train_config(grad_accum_steps=2), total_steps=8)
    assert not isinstance(tx, RowSparseAdamW)
    tx, _ = make_train_optimizer(_train_config(row_sparse_embedding=False), total_steps=8)
    assert not isinstance(tx, RowSparseAdamW)
