"""The two data-parallel strategies: same arithmetic, state layout, donation, eval outputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from flaxtune.model import GPT2Classifier, GPT2Dims
from flaxtune.optim import make_train_optimizer
from flaxtune.parallel import PmapStrategy, ShardMapStrategy, make_strategy
from flaxtune.predict import _logits_step
from flaxtune.train import TrainState, train_step

from conftest import trained_params
from test_optim_config_metrics import _train_config

DIMS = GPT2Dims(vocab_size=60, n_positions=16, n_embd=16, n_layer=2, n_head=2)  # dropout 0.1 on


def _batches(num_devices, steps=4):
    rng = np.random.default_rng(7)
    out = []
    for _ in range(steps):
        ids = rng.integers(0, 60, (num_devices, 2, 8)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[:, 1, 5:] = 0
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": rng.integers(0, 3, (num_devices, 2)).astype(np.int32)})
    return out


def _train(strategy, params, tx, model):
    state = strategy.replicate(TrainState(step=np.int32(0), params=params, opt_state=tx.init(params)))
    step = strategy.compile_train_step(functools.partial(train_step, model=model, tx=tx,
                                                         strategy=strategy, seed=5))
    losses = []
    for batch in _batches(strategy.num_devices):
        before = jax.tree.leaves(state)[0]
        state, metrics = step(state, strategy.put_batch(batch))
        assert before.is_deleted()  # the state was donated
        assert metrics["loss"].shape == (strategy.num_devices,)  # metrics keep a device axis
        losses.append(float(metrics["loss"][0]))
    return losses, state


@pytest.mark.parametrize("row_sparse", [True, False])
def test_shard_map_and_pmap_train_identically(row_sparse):
    """4 devices, dropout on (keys folded with the device index), row-sparse and dense AdamW:
    per-step losses and final parameters agree, and the shard_map state has no device axis."""
    model = GPT2Classifier(DIMS, 3)
    ids = jnp.ones((1, 8), jnp.int32)
    params = model.init(jax.random.key(0), ids, ids)["params"]
    tx, _ = make_train_optimizer(_train_config(row_sparse_embedding=row_sparse), total_steps=8)
    devices = jax.local_devices()[:4]
    results = {}
    for strategy in (PmapStrategy(devices), ShardMapStrategy(devices)):
        losses, state = _train(strategy, params, tx, model)
        emb = state.params["transformer"]["wte"]["embedding"]
        expected = (60, 16) if strategy.name == "shard_map" else (4, 60, 16)
        assert emb.shape == expected
        results[strategy.name] = (losses, traverse_util.flatten_dict(trained_params(strategy, state, tx), sep="/"))
    (lp, pp), (ls, ps) = results["pmap"], results["shard_map"]
    assert len(set(lp)) == len(lp)  # the loss changes from step to step
    np.testing.assert_allclose(ls, lp, rtol=1e-5)
    assert pp.keys() == ps.keys()
    for k in pp:
        s, p = np.array(ps[k]), np.array(pp[k])
        assert s.shape == np.asarray(params_flat(params)[k]).shape
        if k.endswith("attn/c_attn/bias"):
            # The key bias's true gradient is 0 (softmax is shift-invariant); it gets float noise
            # that Adam scales up (see test_row_sparse_train_step_equals_dense_optax_step).
            n, bound = DIMS.n_embd, 0.01 * 0.05
            assert np.abs(s[n:2 * n]).max() < bound and np.abs(p[n:2 * n]).max() < bound
            s, p = np.delete(s, np.s_[n:2 * n]), np.delete(p, np.s_[n:2 * n])
        np.testing.assert_allclose(s, p, rtol=1e-4, atol=1e-6, err_msg=k)


def params_flat(params):
    return traverse_util.flatten_dict(params, sep="/")


def test_eval_step_outputs_keep_the_device_axis():
    model = GPT2Classifier(DIMS, 3)
    ids = jnp.ones((1, 8), jnp.int32)
    params = model.init(jax.random.key(0), ids, ids)["params"]
    batch = _batches(4, steps=1)[0]
    del batch["labels"]
    out = {}
    for name in ("pmap", "shard_map"):
        strategy = make_strategy(name, jax.local_devices()[:4])
        step = strategy.compile_eval_step(functools.partial(_logits_step, model=model))
        logits = step(strategy.replicate(params), strategy.put_batch(batch))
        assert logits.shape == (4, 2, 3)
        out[name] = strategy.gather_rows(logits)
    alone = model.apply({"params": params}, batch["input_ids"].reshape(8, 8),
                        batch["attention_mask"].reshape(8, 8))
    np.testing.assert_allclose(out["shard_map"], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["pmap"], alone, rtol=1e-5, atol=1e-6)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown strategy 'tpu'; choose one of shard_map, pmap"):
        make_strategy("tpu")
