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
import os
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


def _check_writable(directory: Path) -> None:
    """Fails at start-up, not at the first save, when checkpoints cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoints to {directory}: {e}. "
                              "Pass a writable --workdir.") from e


def _not_read_only_warning(record) -> bool:
    """absl log filter: Orbax warns "Given directory is read only" for every read-only manager;
    it means the manager will not write, not that the folder is unwritable."""
    return not str(record.msg).startswith("Given directory is read only")


class Checkpoints:
    """A CheckpointManager over WORKDIR/checkpoints with flaxtune's items.

    Keeps the latest `max_to_keep` checkpoints plus the best one by
    `best_metric` (an eval metric name; "" for none). Saves are asynchronous;
    `wait()`/`close()` block until they are on disk and raise if one failed.
    Leftover temporary folders of a crashed save are never taken for steps.
    """

    def __init__(self, workdir, *, max_to_keep: int | None = 2, read_only: bool = False,
                 best_metric: str = "", best_mode: str = "max"):
        self.directory = checkpoint_dir(workdir)
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints in {Path(workdir)} (expected {self.directory}); "
                                  "pass the --workdir of a train run")
        if read_only:
            logging.getLogger("absl").addFilter(_not_read_only_warning)  # no-op once installed
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                                   save_interval_steps=0)
        else:
            _check_writable(self.directory)
            policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
            if best_metric:
                if best_mode not in ("max", "min"):
                    raise CheckpointError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
                policies.append(ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                    keep_checkpoints_without_metrics=False))
            options = ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=True, cleanup_tmp_directories=True,
                # Step folders are made in save() itself, so a failure there raises at
                # once instead of stalling the background thread on its signal timeout.
                async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
        self.best_metric = best_metric
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, opt_state, meta: dict, metrics: dict | None = None) -> None:
        """Starts an async save of host (numpy) trees; `wait()` before exiting.

        `metrics` (eval metrics, or None for a checkpoint without eval) rank
        the checkpoint for keep-best.
        """
        ranked = None
        if metrics is not None and self.best_metric:
            ranked = {self.best_metric: float(metrics[self.best_metric])}
        self.manager.save(step, metrics=ranked, force=True, args=ocp.args.Composite(
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
