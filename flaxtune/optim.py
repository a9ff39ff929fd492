"""AdamW with warm-up + linear decay, a decay mask, clipping and accumulation."""

from __future__ import annotations

import jax
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
