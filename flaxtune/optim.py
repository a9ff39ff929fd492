"""AdamW with warm-up + linear decay, a decay mask, clipping and accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def make_train_optimizer(train_config, total_steps: int):
    """What the train step uses: `RowSparseAdamW` (same updates, no dense table gradient)
    unless `train.row_sparse_embedding` is off or gradients are accumulated; else the optax
    transformation of `make_optimizer`."""
    t = train_config
    if t.row_sparse_embedding and t.grad_accum_steps == 1:
        _, schedule = make_optimizer(t, total_steps)
        return RowSparseAdamW(t, schedule), schedule
    return make_optimizer(t, total_steps)


# ----------------------------------------------------------------------------------------------
# Row-sparse token-embedding updates
#
# The token embedding (50257 x n_embd) is most of a small GPT-2's parameters, yet a batch
# touches a few hundred of its rows. Differentiating through the lookup makes a dense gradient
# the size of the table every step; with AdamW's moments that is ~7 passes over 3 table-sized
# arrays plus a fresh table-sized allocation per step (on CPU: page faults every step). Here the
# train step differentiates with respect to the looked-up rows instead, and the table's AdamW
# moments are stored as of the step each row was last touched: a row untouched for k steps has
# mu = b1**k * mu_stored (its gradient was 0, so AdamW only decayed it). A step then scatters
# the touched rows' new moments and makes one pass over the table that reads (param, mu, nu)
# and writes the param in place. The arithmetic is AdamW's (optax.adamw, with
# clip_by_global_norm over all parameters), up to float rounding: checked step by step
# against the dense optax update in tests/test_optim_config_metrics.py.
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

    `apply(params, rest_grads, ids, rows, state)` takes the dense gradient of every parameter
    but the table (`split_table`) and, for the table, token ids with one gradient row each.
    """

    def __init__(self, train_config, schedule):
        t = train_config
        self.schedule, self.clip_norm = schedule, t.grad_clip_norm
        self.b1, self.b2, self.eps, self.weight_decay = t.adam_b1, t.adam_b2, t.adam_eps, t.weight_decay
        self.rest_tx = optax.adamw(schedule, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps,
                                   weight_decay=t.weight_decay, mask=weight_decay_mask)

    def init(self, params):
        rest, table = split_table(params)
        return {"rest": self.rest_tx.init(rest),
                "table": {"count": jnp.zeros([], jnp.int32),
                          "mu": jnp.zeros_like(table), "nu": jnp.zeros_like(table),
                          # the step at which each row's stored mu, nu are current
                          "last": jnp.zeros(table.shape[:1], jnp.int32)}}

    def apply(self, params, rest_grads, ids, rows, state):
        """-> (new params, new state, gradient norm before clipping)."""
        rest, table = split_table(params)
        ids, rows = sum_rows(ids.reshape(-1), rows.reshape(-1, table.shape[-1]), table.shape[0])
        grad_norm = jnp.sqrt(optax.tree.norm(rest_grads, squared=True) + jnp.sum(rows * rows))
        if self.clip_norm > 0:
            trigger = grad_norm < self.clip_norm

            def clip(g):
                return jax.lax.select(trigger, g, (g / grad_norm.astype(g.dtype)) * self.clip_norm)
            rest_grads, rows = jax.tree.map(clip, rest_grads), clip(rows)
        updates, rest_state = self.rest_tx.update(rest_grads, state["rest"], rest)
        rest = optax.apply_updates(rest, updates)
        table, table_state = self._table_update(table, ids, rows, state["table"])
        return merge_table(rest, table), {"rest": rest_state, "table": table_state}, grad_norm

    def _table_update(self, table, ids, rows, s):
        b1, b2, eps, wd = self.b1, self.b2, self.eps, self.weight_decay
        count_inc = optax.safe_increment(s["count"])
        dtype = table.dtype
        lr = jnp.asarray(self.schedule(s["count"]), dtype)
        bc1 = (1 - b1 ** count_inc).astype(dtype)
        bc2 = (1 - b2 ** count_inc).astype(dtype)

        def decay(beta, last):  # beta ** (steps since `last`), one value per row
            return jnp.power(jnp.asarray(beta, dtype), (count_inc - last).astype(dtype))[:, None]

        # Touched rows: decay the stored moments to the previous step, add the gradient.
        last = s["last"].at[ids].get(mode="fill", fill_value=0)
        mu = decay(b1, last) * s["mu"].at[ids].get(mode="fill", fill_value=0) + (1 - b1) * rows
        nu = decay(b2, last) * s["nu"].at[ids].get(mode="fill", fill_value=0) + (1 - b2) * (rows ** 2)
        mu, nu = (x.at[ids].set(r, mode="drop") for x, r in ((s["mu"], mu), (s["nu"], nu)))
        last = s["last"].at[ids].set(count_inc, mode="drop")
        # Every row, in one pass: moments as of this step, then AdamW's decoupled update.
        m, v = decay(b1, last) * mu, decay(b2, last) * nu
        table = table + (-lr) * ((m / bc1) / (jnp.sqrt(v / bc2) + eps) + wd * table)
        return table, {"count": count_inc, "mu": mu, "nu": nu, "last": last}
