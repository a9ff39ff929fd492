"""GPT-2 in Flax linen, with a sequence-classification head.

Parameter names mirror the Hugging Face GPT-2 layout, so hub checkpoints load
by name (see `flaxtune.hub`):

    transformer/wte/embedding            (vocab_size, n_embd)
    transformer/wpe/embedding            (n_positions, n_embd)
    transformer/h/{i}/ln_1/{scale,bias}
    transformer/h/{i}/attn/c_attn/{kernel,bias}   kernel (3*n_embd, n_embd)
    transformer/h/{i}/attn/c_proj/{kernel,bias}   kernel (n_embd, n_embd)
    transformer/h/{i}/ln_2/{scale,bias}
    transformer/h/{i}/mlp/c_fc/{kernel,bias}      kernel (n_inner, n_embd)
    transformer/h/{i}/mlp/c_proj/{kernel,bias}    kernel (n_embd, n_inner)
    transformer/ln_f/{scale,bias}
    score/kernel                          (n_embd, num_labels), no bias

`Conv1D` kernels are stored as (features, in_features) exactly like the
Hugging Face Flax GPT-2 (`flax_model.msgpack`); the PyTorch `Conv1D.weight`
is (in, out) and is transposed on import.

Conventions: right padding; position ids come from the attention mask
(`cumsum(mask) - 1`); the classifier pools the rightmost position whose mask
is 1, so a sentence's logits do not depend on the rest of its batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from flaxtune.dropout import Dropout

Dtype = Any


@dataclasses.dataclass(frozen=True)
class GPT2Dims:
    """The shape and regularisation of a GPT-2 model (a hashable GPT2Config subset)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_hf_config(cls, hf_config) -> "GPT2Dims":
        """Builds dims from a `transformers.GPT2Config` (or its dict)."""
        d = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: d[k] for k in names if k in d})


_ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


class Conv1D(nn.Module):
    """GPT-2's dense layer; kernel stored (features, in_features) as in HF Flax."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (self.features, x.shape[-1]), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return jnp.einsum("...i,oi->...o", x, kernel) + bias


class Attention(nn.Module):
    dims: GPT2Dims
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        d = self.dims
        head_dim = d.n_embd // d.n_head
        qkv = Conv1D(3 * d.n_embd, dtype=self.dtype,
                     kernel_init=nn.initializers.normal(d.initializer_range), name="c_attn")(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        b, t, _ = x.shape
        q, k, v = (y.reshape(b, t, d.n_head, head_dim) for y in (q, k, v))
        if deterministic or d.attn_pdrop == 0.0:
            # Lets XLA (or cuDNN on GPU) pick a fused attention kernel.
            out = jax.nn.dot_product_attention(q, k, v, mask=mask)
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(head_dim)
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            weights = Dropout(d.attn_pdrop)(weights, deterministic=False)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        out = out.reshape(b, t, d.n_embd)
        # GPT-2 scales the init of residual projections by 1/sqrt(2 * n_layer).
        proj_init = nn.initializers.normal(d.initializer_range / math.sqrt(2 * d.n_layer))
        out = Conv1D(d.n_embd, dtype=self.dtype, kernel_init=proj_init, name="c_proj")(out)
        return Dropout(d.resid_pdrop)(out, deterministic)


class MLP(nn.Module):
    dims: GPT2Dims
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        d = self.dims
        h = Conv1D(d.inner_dim, dtype=self.dtype,
                   kernel_init=nn.initializers.normal(d.initializer_range), name="c_fc")(x)
        h = _ACTIVATIONS[d.activation_function](h)
        proj_init = nn.initializers.normal(d.initializer_range / math.sqrt(2 * d.n_layer))
        h = Conv1D(d.n_embd, dtype=self.dtype, kernel_init=proj_init, name="c_proj")(h)
        return Dropout(d.resid_pdrop)(h, deterministic)


class Block(nn.Module):
    dims: GPT2Dims
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        eps = self.dims.layer_norm_epsilon
        h = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="ln_1")(x)
        x = x + Attention(self.dims, self.dtype, name="attn")(h, mask, deterministic)
        h = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="ln_2")(x)
        return x + MLP(self.dims, self.dtype, name="mlp")(h, deterministic)


class Blocks(nn.Module):
    """The `h` collection: blocks named "0", "1", ... as in Hugging Face."""

    dims: GPT2Dims
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        for i in range(self.dims.n_layer):
            x = Block(self.dims, self.dtype, name=str(i))(x, mask, deterministic)
        return x


def attention_mask_4d(attention_mask, segment_ids=None):
    """Causal mask combined with the key padding mask: (B, 1, T, T) booleans.

    With `segment_ids` (packed rows), a query also sees only its own segment.
    """
    t = attention_mask.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    keys = attention_mask.astype(bool)[:, None, None, :]
    mask = causal[None, None] & keys
    if segment_ids is not None:
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return mask


def position_ids_from_mask(attention_mask):
    """0, 1, 2, ... over real tokens; pads reuse the last position (never read)."""
    return jnp.clip(jnp.cumsum(attention_mask, axis=-1) - 1, 0, None).astype(jnp.int32)


class FlaxGPT2(nn.Module):
    """The GPT-2 backbone: token ids and attention mask -> final hidden states."""

    dims: GPT2Dims
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask, *, position_ids=None, segment_ids=None,
                 token_embeddings=None, deterministic: bool = True):
        """`token_embeddings` (B, T, n_embd), when given, replaces the `wte` lookup of
        `input_ids` (the train step looks rows up itself to get row-sparse gradients);
        `params` then need no `wte`."""
        d = self.dims
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        init = nn.initializers.normal(d.initializer_range)
        wpe = nn.Embed(d.n_positions, d.n_embd, embedding_init=init, dtype=self.dtype, name="wpe")
        if token_embeddings is None:
            wte = nn.Embed(d.vocab_size, d.n_embd, embedding_init=init, dtype=self.dtype, name="wte")
            token_embeddings = wte(input_ids)
        x = token_embeddings.astype(self.dtype) + wpe(position_ids)
        x = Dropout(d.embd_pdrop)(x, deterministic)
        mask = attention_mask_4d(attention_mask, segment_ids)
        x = Blocks(d, self.dtype, name="h")(x, mask, deterministic)
        return nn.LayerNorm(epsilon=d.layer_norm_epsilon, dtype=self.dtype, name="ln_f")(x)


def last_token_index(attention_mask):
    """Index of the rightmost position whose attention mask is 1, per row."""
    t = attention_mask.shape[-1]
    positions = jnp.arange(t)[None, :]
    return jnp.max(jnp.where(attention_mask.astype(bool), positions, -1), axis=-1)


class GPT2Classifier(nn.Module):
    """FlaxGPT2 + `score` head pooled at the last real token (GPT2ForSequenceClassification)."""

    dims: GPT2Dims
    num_labels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask, *, token_embeddings=None, segment_ids=None,
                 position_ids=None, pool_index=None, deterministic: bool = True):
        """Packed rows (several examples per row) pass `segment_ids`, `position_ids` and
        `pool_index` (flat index into rows * length of each example's last token); the
        logits are then one row per example, in `pool_index` order."""
        hidden = FlaxGPT2(self.dims, self.dtype, name="transformer")(
            input_ids, attention_mask, token_embeddings=token_embeddings, segment_ids=segment_ids,
            position_ids=position_ids, deterministic=deterministic)
        if pool_index is None:
            idx = last_token_index(attention_mask)
            pooled = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]
        else:
            pooled = hidden.reshape(-1, hidden.shape[-1])[pool_index]
        logits = nn.Dense(self.num_labels, use_bias=False, dtype=self.dtype,
                          kernel_init=nn.initializers.normal(self.dims.initializer_range),
                          name="score")(pooled)
        return logits.astype(jnp.float32)
