"""Training: state, the data-parallel train step, and the loop.

`train_and_evaluate(config, workdir)` is the whole job; the CLI and the Colab
notebooks call it. Data flows: config -> records -> label map -> token ids ->
batches -> train step -> eval -> Orbax checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxtune import config as config_lib
from flaxtune.checkpoint import Checkpoints, tokenizer_dir
from flaxtune.data.labels import build_label_map, encode_labels
from flaxtune.data.readers import where
from flaxtune.data.pipeline import PAD_ID, bucket_lengths, prefetch, steps_per_epoch, train_batches
from flaxtune.data.sources import eval_holdout, load_splits
from flaxtune.data.tokenize import Tokenized, load_tokenizer, tokenize_texts
from flaxtune.host_memory import keep_freed_memory
from flaxtune.metrics import classification_metrics
from flaxtune.model import GPT2Classifier
from flaxtune.optim import RowSparseAdamW, make_train_optimizer, split_table, training_token_ids
from flaxtune.parallel import DEFAULT_STRATEGY, make_strategy
from flaxtune.predict import predict_logits
from flaxtune.weights import DTYPES, abstract_params, dims_for, initial_params, model_source

log = logging.getLogger(__name__)


PACKED_KEYS = ("segment_ids", "position_ids", "pool_index")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def train_step(state: TrainState, batch: dict, *, model, tx, strategy, seed: int):
    """One optimizer step on a device's share of the global batch.

    `tx` is an optax transformation (dense gradients) or a `RowSparseAdamW` (the token
    embedding's gradient kept as one row per token; same update, far less memory traffic).
    """
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), state.step),
                             strategy.device_index())
    ids, mask = batch["input_ids"], batch["attention_mask"]
    packed = {k: batch[k] for k in PACKED_KEYS if k in batch}  # packed rows (pipeline.packed_batch)
    labels = batch["labels"]
    if "weights" in batch:
        # Devices hold different numbers of examples (packed rows): weigh each device's
        # examples so that the mean over devices is the mean over the global batch.
        share = batch["weights"] * (strategy.num_devices / strategy.sum(jnp.sum(batch["weights"])))
    else:
        share = jnp.full(labels.shape, 1.0 / labels.size)

    def loss_fn(params, token_embeddings=None):
        logits = model.apply({"params": params}, ids, mask, token_embeddings=token_embeddings,
                             deterministic=False, rngs={"dropout": rng}, **packed)
        loss = jnp.sum(share * optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        return loss, logits

    if isinstance(tx, RowSparseAdamW):
        rest, _ = split_table(state.params)
        (loss, logits), (rest_grads, rows) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            rest, tx.lookup(state.params, state.opt_state, ids))
        # The mean over devices of each device's dense table gradient, as rows.
        rest_grads = strategy.mean(rest_grads)
        rows = strategy.all_gather(rows) / strategy.num_devices
        params, opt_state, grad_norm = tx.apply(state.params, rest_grads, strategy.all_gather(ids),
                                                rows, state.opt_state)
    else:
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = strategy.mean(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
    metrics = strategy.mean({
        "loss": loss,
        "accuracy": jnp.sum(share * (jnp.argmax(logits, -1) == labels)),
        "grad_norm": grad_norm,
    })
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def materialize(state: TrainState, *, tx) -> TrainState:
    """The state with the parameters AdamW would have: a `RowSparseAdamW` leaves the token
    embedding's rows stale between calls (see flaxtune.optim). Run it (compiled with the
    strategy's `compile_state_update`) before reading `state.params`: eval, checkpoints, the end."""
    if not isinstance(tx, RowSparseAdamW):
        return state
    params, opt_state = tx.materialize(state.params, state.opt_state)
    return state.replace(params=params, opt_state=opt_state)


class Preempted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int, workdir):
        self.signum, self.step = signum, step
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved in "
            f"{Path(workdir) / 'checkpoints' / str(step)}. Rerun the same train command "
            "(same --config and --workdir) to resume from it.")


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (main thread only)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        if received:  # a second signal: stop now
            signal.signal(signum, previous[signum])
            raise KeyboardInterrupt
        log.warning("%s received: finishing the current step and saving a checkpoint",
                    signal.Signals(signum).name)
        received.append(signum)

    for s in signums:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _truncate_jsonl(path: Path, after_step: int) -> None:
    """Drops records logged after `after_step` (by a run that died before its next checkpoint)."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= after_step]
        path.write_text("".join(line + "\n" for line in keep))


def prepare_split(records, label_names, tokenizer, max_length, vocab_size) -> Tokenized:
    labels = encode_labels(records, label_names)
    return tokenize_texts(tokenizer, [r.text for r in records], max_length, vocab_size=vocab_size,
                          labels=labels, sources=[where(r.source, r.line) for r in records])


def _differences(saved, current, prefix=""):
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            out += _differences(saved.get(k), current.get(k), f"{prefix}{k}.")
        return out
    return [] if saved == current else [f"{prefix[:-1]}: checkpoint has {saved!r}, this run has {current!r}"]


def _check_resume_compatible(meta: dict, expected: dict, workdir) -> None:
    diffs = _differences({k: meta.get(k) for k in expected}, expected)
    if diffs:
        raise config_lib.ConfigError(
            f"--workdir {workdir} holds checkpoints of a different run:\n  " + "\n  ".join(diffs)
            + "\nUse a new --workdir (or delete the old one).")


def _batch_order(data_config) -> dict:
    """The data fields that decide which texts each training batch of an epoch holds. A
    saved config without a field predates it: `fill_rows` did not exist, so plain random
    packed batches."""
    d = dict(data_config)
    order = {"pack": bool(d.get("pack", False))}
    if order["pack"]:
        order["fill_rows"] = bool(d.get("fill_rows", False))
    else:
        order["group_by_length"] = bool(d.get("group_by_length", True))
    return order


def _check_same_batches_mid_epoch(meta: dict, data_config, steps_in_epoch: int, workdir) -> None:
    """Resuming mid-epoch skips the batches already taken, so the rest of the epoch must be
    built the same way, or some texts would be seen twice in the epoch and others not at all."""
    step = int(meta["step"])
    if step % steps_in_epoch == 0:
        return
    diffs = _differences(_batch_order(meta.get("config", {}).get("data", {})), _batch_order(data_config),
                         prefix="data.")
    if diffs:
        raise config_lib.ConfigError(
            f"--workdir {workdir}: its last checkpoint (step {step}) is {step % steps_in_epoch} of "
            f"{steps_in_epoch} batches into an epoch whose batches were built differently:\n  "
            + "\n  ".join(diffs)
            + "\nResume with the checkpoint's settings (--config.data.NAME=VALUE) to finish the epoch "
              "with the same batches (they may change at an epoch boundary), or use a new --workdir.")


def train_and_evaluate(config, workdir) -> dict:
    """Trains per `config`, checkpoints under `workdir`; returns the final eval metrics."""
    workdir = Path(workdir)
    keep_freed_memory()  # no-op if the CLI did it already
    config_lib.validate_config(config)
    t = config.train
    devices = jax.local_devices()
    if t.num_devices > 0:
        if t.num_devices > len(devices):
            raise config_lib.ConfigError(
                f"config.train.num_devices={t.num_devices} but only {len(devices)} devices are visible")
        devices = devices[:t.num_devices]
    strategy = make_strategy(t.get("strategy", DEFAULT_STRATEGY), devices)
    config_lib.check_batch_divisible(config, strategy.num_devices)

    source = model_source(config)
    dims = dims_for(source.hf_config, config.dropout)
    config_lib.check_max_length(config, dims.n_positions)
    tokenizer = load_tokenizer(config.tokenizer or str(source.model_dir or config.model))

    train_records, eval_records = load_splits(config.data)
    label_names = build_label_map(train_records)
    train_data = prepare_split(train_records, label_names, tokenizer, config.max_length, dims.vocab_size)
    eval_data = prepare_split(eval_records, label_names, tokenizer, config.max_length, dims.vocab_size)
    log.info("data: %d train / %d eval examples; labels %s", len(train_data), len(eval_data), label_names)

    buckets = bucket_lengths(config.max_length)
    spe = steps_per_epoch(len(train_data), t.batch_size)
    if spe == 0:
        raise config_lib.ConfigError(
            f"the training set has {len(train_data)} examples, fewer than one global batch "
            f"(config.train.batch_size={t.batch_size})")
    total_steps = t.num_train_steps if t.num_train_steps > 0 else int(round(t.num_epochs * spe))
    eval_every = t.eval_every_steps if t.eval_every_steps > 0 else spe
    ckpt_every = t.checkpoint_every_steps if t.checkpoint_every_steps > 0 else eval_every

    model = GPT2Classifier(dims, len(label_names), dtype=DTYPES[config.dtype])
    tx, schedule = make_train_optimizer(t, total_steps, table_ids=training_token_ids(train_data.ids, pad_id=PAD_ID))
    # What makes a checkpoint part of this run (resuming is refused if any differs).
    identity = {"label_names": label_names, "model_config": source.hf_config.to_dict(),
                "max_length": config.max_length, "seed": config.seed, "batch_size": t.batch_size,
                "grad_accum_steps": t.grad_accum_steps,
                # the optimizer state's layout differs between the two
                "row_sparse_embedding": isinstance(tx, RowSparseAdamW),
                # which part of train_file was trained on (None: all of it; older checkpoints)
                "eval_holdout": eval_holdout(config.data)}
    if isinstance(tx, RowSparseAdamW):  # its state holds the rows of the training data's tokens
        identity["embedding_rows"] = tx.table_rows_digest(dims.vocab_size)
    identity["model_config"].pop("transformers_version", None)
    identity = json.loads(json.dumps(identity))  # as it reads back from the checkpoint

    ckpts = Checkpoints(workdir, max_to_keep=t.max_checkpoints_to_keep,
                        best_metric=t.keep_best_metric, best_mode=t.keep_best_mode)
    step = 0
    if ckpts.latest_step() is not None:
        meta = ckpts.read_meta()
        _check_resume_compatible(meta, identity, workdir)
        _check_same_batches_mid_epoch(meta, config.data, spe, workdir)
        like = abstract_params(model)
        params, opt_state, meta = ckpts.restore_train(like, jax.eval_shape(tx.init, like))
        params, opt_state = jax.device_get((params, opt_state))
        step = int(meta["step"])
        for name in ("train_metrics.jsonl", "eval_metrics.jsonl"):
            _truncate_jsonl(workdir / name, step)
        log.info("resuming from %s at step %d", ckpts.directory / str(step), step)
    else:
        params = initial_params(model, source, config.seed, label_names=label_names)
        opt_state = tx.init(params)
    tokenizer.save_pretrained(str(tokenizer_dir(workdir)))
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    state = strategy.replicate(TrainState(step=np.int32(step), params=params, opt_state=opt_state))
    del params, opt_state
    p_train_step = strategy.compile_train_step(functools.partial(
        train_step, model=model, tx=tx, strategy=strategy, seed=config.seed))
    p_materialize = strategy.compile_state_update(functools.partial(materialize, tx=tx))

    def meta_for(step, metrics):
        return {**identity, "step": step, "dtype": config.dtype, "text_field": config.data.text_field,
                "label_field": config.data.label_field, "encoding": config.data.encoding,
                "eval_metrics": metrics, "config": json.loads(config.to_json_best_effort())}

    def evaluate(state):
        logits = predict_logits(model, state.params, eval_data, strategy=strategy,
                                global_batch=t.eval_batch_size, buckets=buckets, replicated=True)
        m = classification_metrics(logits, eval_data.labels, len(label_names))
        m["step"] = step
        with open(workdir / "eval_metrics.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")
        log.info("eval at step %d: accuracy %.4f, macro-F1 %.4f, loss %.4f (%d examples)",
                 step, m["accuracy"], m["macro_f1"], m["loss"], m["num_examples"])
        return m

    def save(state, metrics):
        host = strategy.to_host(state)
        ckpts.save(step, host.params, host.opt_state, meta_for(step, metrics), metrics)

    log.info("training %d steps (%d per epoch, global batch %d on %d devices), from step %d",
             total_steps, spe, t.batch_size, strategy.num_devices, step)
    eval_metrics, last_saved, last_eval_step = None, step, None
    window, window_start, window_examples = [], time.time(), 0
    with stop_on_signals() as stop, contextlib.closing(ckpts):
        while step < total_steps:
            epoch, skip = divmod(step, spe)
            batches = train_batches(train_data, global_batch=t.batch_size,
                                    num_devices=strategy.num_devices, seed=config.seed, epoch=epoch,
                                    buckets=buckets, skip_batches=skip,
                                    group_by_length=config.data.group_by_length,
                                    pack=config.data.pack, fill_rows=config.data.fill_rows)
            # The next batches are built and placed on the devices while this step runs.
            with prefetch(batches, size=2, transform=strategy.put_batch) as placed:
                for batch in placed:
                    state, metrics = p_train_step(state, batch)
                    step += 1
                    window.append(metrics)
                    window_examples += t.batch_size
                    if step % t.log_every_steps == 0 or step == total_steps:
                        ms = jax.device_get(window)
                        record = {"step": step, "loss": float(np.mean([m["loss"][0] for m in ms])),
                                  "accuracy": float(np.mean([m["accuracy"][0] for m in ms])),
                                  "grad_norm": float(np.mean([m["grad_norm"][0] for m in ms])),
                                  "learning_rate": float(schedule(step // t.grad_accum_steps)),
                                  "examples_per_s": window_examples / (time.time() - window_start)}
                        with open(workdir / "train_metrics.jsonl", "a") as f:
                            f.write(json.dumps(record) + "\n")
                        log.info("step %d/%d  epoch %.2f  loss %.4f  acc %.3f  lr %.2e  %.1f examples/s",
                                 step, total_steps, step / spe, record["loss"], record["accuracy"],
                                 record["learning_rate"], record["examples_per_s"])
                        window, window_start, window_examples = [], time.time(), 0
                    do_eval = step % eval_every == 0 or step == total_steps
                    do_save = step % ckpt_every == 0 or step == total_steps
                    # Read once: a signal arriving after this point waits for the next step
                    # (else its checkpoint could hold params that were not brought up to date).
                    stopping = bool(stop) and step < total_steps
                    if do_eval or do_save or stopping:  # params read out: bring them up to date
                        state = p_materialize(state)
                    if do_eval:
                        eval_metrics, last_eval_step = evaluate(state), step
                    if do_save:
                        save(state, eval_metrics if last_eval_step == step else None)
                        last_saved = step
                    if stopping:
                        if last_saved != step:
                            save(state, eval_metrics if last_eval_step == step else None)
                        ckpts.wait()
                        raise Preempted(stop[0], step, workdir)
                    if step >= total_steps:
                        break
        # The state is up to date here: the last step read it out (step == total_steps), or no
        # step ran and it came from a checkpoint, which is always saved read out.
        if eval_metrics is None or last_eval_step != step:
            eval_metrics = evaluate(state)
        if last_saved != step or ckpts.latest_step() != step:
            save(state, eval_metrics)
    return eval_metrics
