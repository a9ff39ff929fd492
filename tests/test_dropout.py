"""flaxtune.dropout: jax.random's Threefry bit for bit, exact keep rate, no loop in the HLO."""

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtune.dropout import Dropout, dropout, keep_mask, random_bits, threefry2x32


def test_threefry_is_bit_identical_to_jax_random():
    rng = np.random.default_rng(0)
    for _ in range(3):
        k0, k1 = (np.uint32(v) for v in rng.integers(0, 2**32, 2))
        x0, x1 = (jnp.asarray(rng.integers(0, 2**32, 1000, dtype=np.uint32)) for _ in range(2))
        want = jex.random.threefry2x32_p.bind(k0, k1, x0, x1)
        got = jax.jit(threefry2x32)(k0, k1, x0, x1)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_random_bits_are_threefry_of_the_element_index():
    key = jax.random.key(7)
    k = np.asarray(jax.random.key_data(key))
    bits = np.asarray(random_bits(key, (3, 5)))
    want = jex.random.threefry2x32_p.bind(np.uint32(k[0]), np.uint32(k[1]),
                                           jnp.arange(15, dtype=jnp.uint32), jnp.zeros(15, jnp.uint32))[0]
    np.testing.assert_array_equal(bits.reshape(-1), np.asarray(want))


def test_dropout_keep_rate_scaling_and_determinism():
    x = jnp.full((1000, 1000), 2.0)
    key = jax.random.key(3)
    y = np.asarray(jax.jit(dropout, static_argnums=1)(x, 0.1, key))
    kept = y != 0
    # 1e6 draws: the kept share is 0.9 within 5 standard deviations (3e-4 each)
    assert abs(kept.mean() - 0.9) < 5 * np.sqrt(0.9 * 0.1 / kept.size)
    np.testing.assert_allclose(y[kept], 2.0 / 0.9, rtol=1e-7)
    # rows and columns are not correlated: every row keeps about 90%
    assert np.abs(kept.mean(axis=1) - 0.9).max() < 0.06
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.1, key)), y)
    other = np.asarray(dropout(x, 0.1, jax.random.fold_in(key, 1))) != 0
    assert 0.75 < (other == kept).mean() < 0.9  # independent masks agree on 0.9^2 + 0.1^2 = 82%
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.0, key)), np.asarray(x))
    assert not np.asarray(dropout(x, 1.0, key)).any()


def test_dropout_mask_is_the_bits_below_the_threshold():
    """The bit-packed mask is exactly `random_bits < threshold`, for sizes not a multiple of 8."""
    key = jax.random.key(11)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 7)), jnp.float32)
    threshold = np.uint32(round(0.7 * 2**32))
    want = np.asarray(random_bits(key, (3, 5, 7))) < threshold
    np.testing.assert_array_equal(np.asarray(jax.jit(keep_mask, static_argnums=1)(key, (3, 5, 7), threshold)), want)
    y = np.asarray(dropout(x, 0.3, key))
    np.testing.assert_array_equal(y != 0, want)
    np.testing.assert_allclose(y, np.where(want, np.asarray(x) / 0.7, 0), rtol=1e-6)


def test_mask_hash_runs_once_in_forward_and_backward():
    """A masked activation used by a matmul and a residual add, then the backward: the
    20-round hash (19 xors after XLA's simplification) appears once in the compiled HLO
    (an elementwise mask had it twice: 38 xors)."""
    key = jax.random.key(0)
    w = jnp.ones((256, 256))

    def loss(x):
        y = dropout(x, 0.1, key)
        return jnp.sum(jnp.tanh(y @ w) + y)

    text = jax.jit(jax.grad(loss)).lower(jnp.ones((6, 64, 256))).compile().as_text()
    assert text.count(" xor(") < 30


def test_no_loop_in_the_compiled_dropout():
    # jax.random.bernoulli lowers Threefry as a while loop on CPU (what this module avoids)
    x = jnp.ones((6, 64, 256))
    text = jax.jit(lambda x, k: dropout(x, 0.1, k)).lower(x, jax.random.key(0)).as_text()
    assert "while" not in text
    assert "while" in jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (6, 64, 256))).lower(
        jax.random.key(0)).as_text()


@pytest.mark.parametrize("deterministic", [True, False])
def test_dropout_module_uses_the_dropout_rng_collection(deterministic):
    x = jnp.ones((4, 8))
    m = Dropout(0.5)
    y1 = m.apply({}, x, deterministic, rngs={"dropout": jax.random.key(1)})
    y2 = m.apply({}, x, deterministic, rngs={"dropout": jax.random.key(2)})
    if deterministic:
        np.testing.assert_array_equal(np.asarray(y1), np.asarray(x))
    else:
        assert set(np.unique(np.asarray(y1)).tolist()) <= {0.0, 2.0}
        assert not np.array_equal(np.asarray(y1), np.asarray(y2))
