"""How steps are spread over devices.

`PmapStrategy` is the default: parameters replicated on every local device,
the global batch split along a leading device axis, gradients averaged with
`lax.pmean`, and the train state donated. The training loop talks only to the
strategy's methods, so a jit + NamedSharding strategy (FSDP) can slot in with
the same interface.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


class PmapStrategy:
    axis_name = AXIS

    def __init__(self, devices=None):
        self.devices = list(devices) if devices is not None else jax.local_devices()
        mesh = Mesh(np.array(self.devices), (self.axis_name,))
        # Split along the leading device axis; pmap's outputs carry the same sharding.
        self._split = NamedSharding(mesh, PartitionSpec(self.axis_name))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def replicate(self, tree):
        """Host tree -> one copy per device (leading device axis).

        Placed with the same mesh axis name pmap's outputs carry, so the step
        compiled for step 1 is reused from step 2 on (no second compile).
        """
        n = self.num_devices
        return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * n), self._split), tree)

    def put_batch(self, batch):
        """Host batch with a leading device axis -> each device's share placed on it.

        The train loop calls this ahead of the step (`pipeline.prefetch`), so the
        transfer overlaps the running step.
        """
        return jax.device_put(batch, self._split)

    def to_host(self, tree):
        """Replicated device tree -> numpy tree without the device axis (what checkpoints hold)."""
        return jax.device_get(jax.tree.map(lambda x: x[0], tree))

    def mean(self, x):
        """Average across devices inside a step (gradients, metrics).

        On one device it is the identity (XLA would still emit an all-reduce: a copy of
        every gradient, ~1 ms a step for a 4 x 256 GPT-2 on CPU).
        """
        return x if self.num_devices == 1 else jax.lax.pmean(x, self.axis_name)

    def all_gather(self, x):
        """Inside a step: every device's `x` concatenated along axis 0 (device order)."""
        return x if self.num_devices == 1 else jax.lax.all_gather(x, self.axis_name, tiled=True)

    def device_index(self):
        return jax.lax.axis_index(self.axis_name)

    def compile_train_step(self, fn):
        return jax.pmap(fn, axis_name=self.axis_name, devices=self.devices, donate_argnums=(0,))

    def compile_eval_step(self, fn):
        return jax.pmap(fn, axis_name=self.axis_name, devices=self.devices)

    def gather_rows(self, x):
        """(devices, per_device, ...) device output -> (global, ...) numpy."""
        x = np.asarray(jax.device_get(x))
        return x.reshape(-1, *x.shape[2:])
