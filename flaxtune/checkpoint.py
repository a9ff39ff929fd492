"""All Orbax policy: what a checkpoint holds, where it lives, how it is restored.

Layout of a workdir:

    WORKDIR/checkpoints/<step>/params     parameters, host arrays (no device axis)
    WORKDIR/checkpoints/<step>/opt_state  optimizer state, likewise
    WORKDIR/checkpoints/<step>/meta       JSON: step, label names, model config, max_length, config, metrics
    WORKDIR/tokenizer/                    the tokenizer files (save_pretrained)

So the workdir alone is enough to predict, and arrays restore onto whatever
devices the reader has (8 TPU cores or 1 CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("params", "opt_state", "meta")


class CheckpointError(RuntimeError):
    pass


def checkpoint_dir(workdir) -> Path:
    return Path(workdir).absolute() / "checkpoints"


def tokenizer_dir(workdir) -> Path:
    return Path(workdir).absolute() / "tokenizer"


def _abstract(tree, device=None):
    """Shape/dtype targets placed on one device: restores regardless of the saving topology."""
    sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


class Checkpoints:
    """A CheckpointManager over WORKDIR/checkpoints with flaxtune's items."""

    def __init__(self, workdir, *, max_to_keep: int | None = 2, read_only: bool = False):
        self.directory = checkpoint_dir(workdir)
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints in {Path(workdir)} (expected {self.directory}); "
                                  "pass the --workdir of a train run")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                               read_only=read_only, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        """Starts an async save of host (numpy) trees; `wait()` before exiting."""
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _step(self, step):
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        if step not in self.all_steps():
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                                  f"steps present: {self.all_steps()}")
        return step

    def read_meta(self, step: int | None = None) -> dict:
        step = self._step(step)
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore_params(self, params_like, step: int | None = None):
        """Parameters shaped like `params_like` (arrays or ShapeDtypeStructs), on one local device."""
        step = self._step(step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(params_like))))
        return out["params"]

    def restore_train(self, params_like, opt_state_like, step: int | None = None):
        step = self._step(step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(params_like)),
            opt_state=ocp.args.StandardRestore(_abstract(opt_state_like)),
            meta=ocp.args.JsonRestore()))
        return out["params"], out["opt_state"], dict(out["meta"])
