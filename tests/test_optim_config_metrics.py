"""Optimizer decay mask and schedule, config loading/overrides, metrics."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from flaxtune import config as config_lib
from flaxtune.metrics import classification_metrics
from flaxtune.model import GPT2Classifier, GPT2Dims
from flaxtune.optim import learning_rate_schedule, make_optimizer, weight_decay_mask

from conftest import REPO


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
