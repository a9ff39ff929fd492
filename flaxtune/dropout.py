"""Dropout with a loop-free Threefry mask, computed once per element.

`flax.linen.Dropout` draws its mask with `jax.random.bernoulli`. On CPU, JAX lowers
the Threefry hash behind it as a rolled 5-iteration while loop, and XLA:CPU copies the
loop-carried arrays on every iteration: in a 4 x 256 GPT-2 train step the 13 dropout
masks took ~6 ms in while loops plus ~11 ms in ~1,100 copies (kernel time, profiled),
about a fifth of the step. Here the same hash, Threefry-2x32 with 20 rounds (Salmon et
al., 2011; bit-for-bit jax.random's, tested), is written out as plain integer ops on
the element index, so XLA emits no loop. The mask is made once per element and
bit-packed (`keep_mask`); left elementwise, XLA fused the hash into every fusion that
used the mask and computed it 3-4 times per element. An element is kept when its 32
random bits are below `round((1 - rate) * 2**32)`, so the keep probability is exact to
2**-32 (jax's bernoulli: 2**-23).

Masks differ from flax's for the same key (a different way of mapping key and element
to bits), so runs are reproducible with flaxtune, not bit-identical to `nn.Dropout`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32, 20 rounds, unrolled: uint32 key words and counter arrays -> 2 uint32 arrays."""
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def random_bits(key, shape) -> jax.Array:
    """32 random bits per element of `shape` from a threefry PRNG key, loop-free."""
    n = int(np.prod(shape))
    if n >= 2**32:
        raise ValueError(f"random_bits: {n} elements is more than 2**32 counters")
    k = jax.random.key_data(key).reshape(-1)
    counters = jax.lax.iota(jnp.uint32, n).reshape(shape)
    bits, _ = threefry2x32(k[0], k[1], counters, jnp.zeros_like(counters))
    return bits


def keep_mask(key, shape, threshold) -> jax.Array:
    """`random_bits(key, shape) < threshold`, with the hash evaluated once per element.

    XLA fuses an elementwise producer into each of its consumers, so a mask used by the
    forward pass (often by two fusions) and by the backward pass had its 20-round hash
    computed 3-4 times per element. Packing the mask into bytes is a reduction, which XLA
    does not duplicate: the hash runs once, and consumers unpack one bit each.
    """
    n = int(np.prod(shape))
    m = -(-n // 8) * 8
    keep = random_bits(key, (m,)) < threshold  # the first n bits are random_bits(key, shape)'s
    shifts = jnp.arange(8, dtype=jnp.uint8)
    packed = jnp.sum(keep.reshape(-1, 8).astype(jnp.uint8) << shifts, axis=-1, dtype=jnp.uint8)
    bits = ((packed[:, None] >> shifts) & np.uint8(1)).astype(bool).reshape(-1)
    return bits[:n].reshape(shape)


def dropout(x, rate: float, key):
    """Zeroes each element with probability `rate` and scales the rest by 1 / (1 - rate)."""
    if rate <= 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    threshold = np.uint32(min(round((1.0 - rate) * 2**32), 2**32 - 1))
    keep = keep_mask(key, x.shape, threshold)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
    """`nn.Dropout` with `dropout`'s fused mask; draws from the "dropout" rng collection."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        return dropout(x, self.rate, self.make_rng("dropout"))
