"""How steps are spread over devices.

Both strategies here are the same data parallelism: parameters replicated on every
local device, the global batch split along a leading device axis (per-device batch x
devices), gradients averaged with `lax.pmean`, and the train state donated.

- `ShardMapStrategy` (the default, `train.strategy="shard_map"`): `jax.jit` of a
  `jax.shard_map` over a 1-D device mesh. The state is held once per device *without* a
  device axis (`NamedSharding(mesh, P())`), so XLA updates donated parameters and
  optimizer moments in place.
- `PmapStrategy` (`train.strategy="pmap"`): `jax.pmap`; the state carries a leading
  device axis. In JAX >= 0.8 pmap is itself a jit of a shard_map whose per-device views
  are reshaped from (1, ...); those reshapes keep XLA from aliasing donated inputs to
  outputs, and it copies every parameter and moment each step (~90 MB per step for a
  4 x 256 GPT-2; measured in benchmarks/README.md).

The training loop talks only to a strategy's methods (`DataParallel` lists them), so a
jit + NamedSharding strategy (FSDP) can slot in with the same interface: `replicate`,
`put_batch`, `to_host`, `compile_train_step`, `compile_eval_step`, `compile_state_update`,
`gather_rows`, and inside a step `mean`, `sum`, `all_gather`, `device_index`. Step outputs
other than the state (metrics, logits) keep a leading device axis in both strategies.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"
STRATEGIES = ("shard_map", "pmap")  # train.strategy values; the first is the default
DEFAULT_STRATEGY = STRATEGIES[0]


def make_strategy(name: str, devices=None):
    """The strategy called `name` (`train.strategy`) over `devices` (default: all local)."""
    classes = {cls.name: cls for cls in (ShardMapStrategy, PmapStrategy)}
    if name not in classes:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return classes[name](devices)


class DataParallel:
    """What both strategies share: the devices, the split of a batch's leading device axis,
    and the collectives a step calls. Subclasses say how the state is held and how a
    function is compiled (`replicate`, `to_host`, `compile_*`)."""

    name = ""
    axis_name = AXIS

    def __init__(self, devices=None):
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.array(self.devices), (self.axis_name,))
        # Split along the leading device axis; pmap's outputs carry the same sharding.
        self._split = NamedSharding(self.mesh, PartitionSpec(self.axis_name))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def replicate(self, tree):
        """Host tree -> the train state as this strategy holds it on the devices."""
        raise NotImplementedError

    def to_host(self, tree):
        """Device state -> numpy tree without any device axis (what checkpoints hold)."""
        raise NotImplementedError

    def compile_train_step(self, fn):
        """fn(state, batch) -> (state, metrics), the state donated; metrics come back with a
        leading device axis."""
        raise NotImplementedError

    def compile_eval_step(self, fn):
        """fn(params, batch) -> per-device outputs, returned with a leading device axis."""
        raise NotImplementedError

    def compile_state_update(self, fn):
        """fn(state) -> state on every device's copy, the state donated."""
        raise NotImplementedError

    def put_batch(self, batch):
        """Host batch with a leading device axis -> each device's share placed on it.

        The train loop calls this ahead of the step (`pipeline.prefetch`), so the
        transfer overlaps the running step.
        """
        return jax.device_put(batch, self._split)

    def mean(self, x):
        """Average across devices inside a step (gradients, metrics).

        On one device it is the identity (XLA would still emit an all-reduce: a copy of
        every gradient, ~1 ms a step for a 4 x 256 GPT-2 on CPU).
        """
        return x if self.num_devices == 1 else jax.lax.pmean(x, self.axis_name)

    def sum(self, x):
        """Sum across devices inside a step."""
        return x if self.num_devices == 1 else jax.lax.psum(x, self.axis_name)

    def all_gather(self, x):
        """Inside a step: every device's `x` concatenated along axis 0 (device order)."""
        return x if self.num_devices == 1 else jax.lax.all_gather(x, self.axis_name, tiled=True)

    def device_index(self):
        return jax.lax.axis_index(self.axis_name)

    def gather_rows(self, x):
        """(devices, per_device, ...) device output -> (global, ...) numpy."""
        x = np.asarray(jax.device_get(x))
        return x.reshape(-1, *x.shape[2:])


class PmapStrategy(DataParallel):
    """`jax.pmap`; the state carries a leading device axis (see the module doc)."""

    name = "pmap"

    def replicate(self, tree):
        """Host tree -> one copy per device (leading device axis).

        Placed with the same mesh axis name pmap's outputs carry, so the step
        compiled for step 1 is reused from step 2 on (no second compile).
        """
        n = self.num_devices
        return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * n), self._split), tree)

    def to_host(self, tree):
        return jax.device_get(jax.tree.map(lambda x: x[0], tree))

    def compile_train_step(self, fn):
        return jax.pmap(fn, axis_name=self.axis_name, devices=self.devices, donate_argnums=(0,))

    def compile_eval_step(self, fn):
        return jax.pmap(fn, axis_name=self.axis_name, devices=self.devices)

    def compile_state_update(self, fn):
        return jax.pmap(fn, axis_name=self.axis_name, devices=self.devices, donate_argnums=(0,))


class ShardMapStrategy(DataParallel):
    """jit + shard_map data parallelism; the state has no device axis (see the module doc)."""

    name = "shard_map"

    def __init__(self, devices=None):
        super().__init__(devices)
        self._replicated = NamedSharding(self.mesh, PartitionSpec())

    def replicate(self, tree):
        """Host tree -> the same tree, one full copy on every device (no device axis)."""
        return jax.device_put(jax.tree.map(np.asarray, tree), self._replicated)

    def to_host(self, tree):
        return jax.device_get(tree)

    def _local(self, tree):
        """Inside a step: this device's (1, ...) slice of a device-axis tree, squeezed."""
        return jax.tree.map(lambda x: x[0], tree)

    def _with_axis(self, tree):
        return jax.tree.map(lambda x: x[None], tree)

    def _map(self, per_device, in_specs, out_specs, *, donate_state: bool):
        """jit(shard_map(per_device)) over this strategy's mesh; with `donate_state`, the first
        argument (the replicated state) is donated."""
        mapped = jax.shard_map(per_device, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                               check_vma=False)
        return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())

    def compile_train_step(self, fn):
        """fn(state, batch) -> (state, metrics): the state replicated and donated; metrics
        come back with a leading device axis."""
        def per_device(state, batch):
            state, metrics = fn(state, self._local(batch))
            return state, self._with_axis(metrics)

        split, rep = PartitionSpec(self.axis_name), PartitionSpec()
        return self._map(per_device, (rep, split), (rep, split), donate_state=True)

    def compile_eval_step(self, fn):
        """fn(params, batch) -> per-device outputs, returned with a leading device axis."""
        split, rep = PartitionSpec(self.axis_name), PartitionSpec()
        return self._map(lambda params, batch: self._with_axis(fn(params, self._local(batch))),
                         (rep, split), split, donate_state=False)

    def compile_state_update(self, fn):
        """fn(state) -> state, on the replicated state (donated)."""
        rep = PartitionSpec()
        return self._map(fn, (rep,), rep, donate_state=True)
