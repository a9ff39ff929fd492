"""AdamW with warm-up + linear decay, a decay mask, clipping and accumulation."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import optax


def weight_decay_mask(params):
    """True where weight decay applies: kernels and embeddings.

    Biases and LayerNorm scales (GPT-2 names them ln_1, ln_2, ln_f) are spared.
    """
    def decays(path, _):
        names = [getattr(p, "key", str(p)) for p in path]
        if names[-1] == "bias":
            return False
        if len(names) >= 2 and names[-2].startswith("ln_") and names[-1] == "scale":
            return False
        return True

    return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate_schedule(peak: float, total_updates: int, warmup_ratio: float):
    warmup = int(round(total_updates * warmup_ratio))
    decay = max(total_updates - warmup, 1)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.linear_schedule(peak, 0.0, decay)],
        [warmup])


def make_optimizer(train_config, total_steps: int):
    """The optax transformation for `total_steps` batches (updates = steps / accumulation)."""
    t = train_config
    total_updates = max(total_steps // t.grad_accum_steps, 1)
    schedule = learning_rate_schedule(t.learning_rate, total_updates, t.warmup_ratio)
    parts = []
    if t.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(t.grad_clip_norm))
    parts.append(optax.adamw(schedule, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps,
                             weight_decay=t.weight_decay, mask=weight_decay_mask))
    tx = optax.chain(*parts)
    if t.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=t.grad_accum_steps)
    return tx, schedule


def make_train_optimizer(train_config, total_steps: int, table_ids=None):
    """What the train step uses: `RowSparseAdamW` (same updates, no dense table gradient)
    unless `train.row_sparse_embedding` is off or gradients are accumulated; else the optax
    transformation of `make_optimizer`.

    `table_ids`: every token id the training batches can hold (`training_token_ids`); the
    row-sparse optimizer keeps up-to-date rows, and moments, for these only. None: all ids.
    """
    t = train_config
    if t.row_sparse_embedding and t.grad_accum_steps == 1:
        _, schedule = make_optimizer(t, total_steps)
        return RowSparseAdamW(t, schedule, table_ids), schedule
    return make_optimizer(t, total_steps)


def training_token_ids(token_id_arrays, *, pad_id: int) -> np.ndarray:
    """Sorted distinct token ids of the training examples, plus the id batches are padded with
    (`flaxtune.data.pipeline.PAD_ID`)."""
    arrays = [np.asarray(a, np.int64).reshape(-1) for a in token_id_arrays]
    return np.unique(np.concatenate(arrays + [np.array([pad_id])])).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Row-sparse token-embedding updates
#
# The token embedding (50257 x n_embd) is most of a small GPT-2's parameters, yet a batch
# touches a few hundred of its rows. Differentiating through the lookup makes a dense gradient
# the size of the table every step; with AdamW's moments that is ~7 passes over 3 table-sized
# arrays plus a fresh table-sized allocation per step (on CPU: page faults every step). Here the
# train step differentiates with respect to the looked-up rows instead (`lookup`), and:
#
# - Only rows whose token occurs in the training data (`table_ids`, known before training; ~10%
#   of GPT-2's vocabulary for a 1k-example SST-2 subset, 29% for all of SST-2) can ever get a
#   gradient. Their current values and AdamW moments live in compact (rows x n_embd) arrays in
#   the optimizer state; every step updates those, in one pass.
# - Every other row has zero moments for the whole run, so AdamW only decays it:
#   p <- p * (1 - lr_t * weight_decay). That is kept as one scalar (`decay`) and applied when
#   the parameters are read out (`materialize`, before every eval and checkpoint). Between
#   materializations the params' table is stale; the optimizer state holds the truth.
# - A compact row's moments are stored as of the step it was last touched: a row untouched for
#   k steps has mu = b1**k * mu_stored (its gradient was 0, so AdamW only decayed it).
#
# The arithmetic is AdamW's (optax.adamw, with clip_by_global_norm over all parameters), up to
# float rounding: checked step by step against the dense optax update in
# tests/test_optim_config_metrics.py.
# ----------------------------------------------------------------------------------------------

TABLE_PATH = ("transformer", "wte", "embedding")


def split_table(params):
    """params -> (params without the token-embedding table, the table)."""
    t, w, e = TABLE_PATH
    rest = {**params, t: {k: v for k, v in params[t].items() if k != w}}
    return rest, params[t][w][e]


def merge_table(rest, table):
    t, w, e = TABLE_PATH
    return {**rest, t: {**rest[t], w: {e: table}}}


def sum_rows(ids, rows, vocab_size: int):
    """Sums the gradient rows of repeated ids.

    ids (N,), rows (N, d) -> (unique ids (N,), summed rows (N, d)); slots past the number of
    distinct ids hold id `vocab_size` (out of range, dropped by the scatter) and zero rows.
    """
    n = ids.shape[0]
    order = jnp.argsort(ids)
    ids, rows = ids[order], rows[order]
    first = jnp.concatenate([jnp.ones((1,), bool), ids[1:] != ids[:-1]])
    segment = jnp.cumsum(first) - 1
    summed = jax.ops.segment_sum(rows, segment, num_segments=n, indices_are_sorted=True)
    unique = jnp.full((n,), vocab_size, ids.dtype).at[segment].set(ids)
    return unique, summed


class RowSparseAdamW:
    """clip_by_global_norm + AdamW (optax's arithmetic), the table's gradient given as rows.

    The train step reads the table through `lookup(params, state, ids)` and passes the
    gradient with respect to those rows to `apply(params, rest_grads, ids, rows, state)`,
    with the dense gradient of every other parameter (`split_table`). `materialize` gives
    the parameters AdamW would have (the params' table is stale between calls).

    `table_ids`: sorted distinct token ids the training batches can hold; a row outside it
    must never be looked up in a train step (its gradient would be dropped). None: all ids.
    """

    def __init__(self, train_config, schedule, table_ids=None):
        t = train_config
        self.schedule, self.clip_norm = schedule, t.grad_clip_norm
        self.b1, self.b2, self.eps, self.weight_decay = t.adam_b1, t.adam_b2, t.adam_eps, t.weight_decay
        self.rest_tx = optax.adamw(schedule, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps,
                                   weight_decay=t.weight_decay, mask=weight_decay_mask)
        if table_ids is not None:
            table_ids = np.asarray(table_ids, np.int32)
            if table_ids.ndim != 1 or np.any(np.diff(table_ids) <= 0) or (table_ids.size and table_ids[0] < 0):
                raise ValueError("table_ids must be sorted, distinct, non-negative token ids")
        self.table_ids = table_ids

    def _ids(self, vocab_size: int) -> np.ndarray:
        ids = np.arange(vocab_size, dtype=np.int32) if self.table_ids is None else self.table_ids
        if ids.size and ids[-1] >= vocab_size:
            raise ValueError(f"table_ids go up to {ids[-1]}, the token embedding has {vocab_size} rows")
        return ids

    def init(self, params):
        rest, table = split_table(params)
        ids = self._ids(table.shape[0])
        slot = np.full((table.shape[0],), len(ids), np.int32)  # len(ids): not a compact row
        slot[ids] = np.arange(len(ids), dtype=np.int32)
        rows = jnp.asarray(table)[jnp.asarray(ids)]
        return {"rest": self.rest_tx.init(rest),
                "table": {"count": jnp.zeros([], jnp.int32),
                          "ids": jnp.asarray(ids), "slot": jnp.asarray(slot),
                          "rows": rows, "mu": jnp.zeros_like(rows), "nu": jnp.zeros_like(rows),
                          # the step at which each compact row's stored mu, nu are current
                          "last": jnp.zeros(ids.shape, jnp.int32),
                          # AdamW's weight decay of the params' other rows since `materialize`
                          "decay": jnp.ones([], table.dtype)}}

    def lookup(self, params, state, ids):
        """The table's current rows for `ids` (any shape): ids (...) -> (..., n_embd).

        An id outside `table_ids` reads its (decayed) table row, but a train step drops its
        gradient: `table_ids` must hold every id the step sees.
        """
        s = state["table"]
        slot = s["slot"][ids]
        compact = s["rows"].at[slot].get(mode="fill", fill_value=0)
        _, table = split_table(params)
        other = table[ids] * s["decay"].astype(table.dtype)
        return jnp.where((slot < s["rows"].shape[0])[..., None], compact, other)

    def apply(self, params, rest_grads, ids, rows, state):
        """-> (new params, new state, gradient norm before clipping)."""
        rest, table = split_table(params)
        ids, rows = sum_rows(ids.reshape(-1), rows.reshape(-1, table.shape[-1]), table.shape[0])
        grad_norm = jnp.sqrt(optax.tree.norm(rest_grads, squared=True) + jnp.sum(rows * rows))
        if self.clip_norm > 0:
            # clip_by_global_norm as one factor: a multiply XLA fuses into each moment's update
            # (optax's g / norm * max_norm is a divide, which XLA materialises as a clipped copy)
            factor = jnp.where(grad_norm < self.clip_norm, 1.0, self.clip_norm / grad_norm)

            def clip(g):
                return g * factor.astype(g.dtype)
            rest_grads, rows = jax.tree.map(clip, rest_grads), clip(rows)
        updates, rest_state = self.rest_tx.update(rest_grads, state["rest"], rest)
        rest = optax.apply_updates(rest, updates)
        table_state = self._table_update(ids, rows, state["table"])
        return merge_table(rest, table), {"rest": rest_state, "table": table_state}, grad_norm

    def _table_update(self, ids, rows, s):
        b1, b2, eps, wd = self.b1, self.b2, self.eps, self.weight_decay
        count_inc = optax.safe_increment(s["count"])
        dtype = s["rows"].dtype
        lr = jnp.asarray(self.schedule(s["count"]), dtype)
        bc1 = (1 - b1 ** count_inc).astype(dtype)
        bc2 = (1 - b2 ** count_inc).astype(dtype)

        def decay(beta, last):  # beta ** (steps since `last`), one value per row
            return jnp.power(jnp.asarray(beta, dtype), (count_inc - last).astype(dtype))[:, None]

        # Touched rows (compact slots; the padding slots of sum_rows map past the end, dropped):
        # decay the stored moments to the previous step, add the gradient.
        slots = s["slot"].at[ids].get(mode="fill", fill_value=s["rows"].shape[0])
        last = s["last"].at[slots].get(mode="fill", fill_value=0)
        mu = decay(b1, last) * s["mu"].at[slots].get(mode="fill", fill_value=0) + (1 - b1) * rows
        nu = decay(b2, last) * s["nu"].at[slots].get(mode="fill", fill_value=0) + (1 - b2) * (rows ** 2)
        mu, nu = (x.at[slots].set(r, mode="drop") for x, r in ((s["mu"], mu), (s["nu"], nu)))
        last = s["last"].at[slots].set(count_inc, mode="drop")
        # Every compact row, in one pass: moments as of this step, then AdamW's decoupled update.
        m, v = decay(b1, last) * mu, decay(b2, last) * nu
        table_rows = s["rows"] + (-lr) * ((m / bc1) / (jnp.sqrt(v / bc2) + eps) + wd * s["rows"])
        return {**s, "count": count_inc, "rows": table_rows, "mu": mu, "nu": nu, "last": last,
                "decay": s["decay"] * (1 - lr * wd)}

    def materialize(self, params, state):
        """-> (params with the table AdamW would have, state with `decay` reset to 1)."""
        rest, table = split_table(params)
        s = state["table"]
        table = (table * s["decay"]).at[s["ids"]].set(s["rows"], unique_indices=True,
                                                       indices_are_sorted=True)
        return merge_table(rest, table), {**state, "table": {**s, "decay": jnp.ones_like(s["decay"])}}

    def table_rows_digest(self, vocab_size: int) -> dict:
        """Which rows the optimizer state holds (a checkpoint's optimizer state fits only these)."""
        ids = self._ids(vocab_size)
        return {"count": int(len(ids)), "sha1": hashlib.sha1(ids.tobytes()).hexdigest()[:16]}
