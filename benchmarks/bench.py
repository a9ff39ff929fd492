#!/usr/bin/env python
"""Training-throughput benchmark: the PyTorch tutorial loop vs flaxtune, in one invocation.

Variants (each run in its own subprocess, so peak RSS is per variant):

  a  reference: transformers' PyTorch GPT2ForSequenceClassification (random init, same dims),
     tokenizer padding to max_length per batch, torch.optim.AdamW, plain Python loop
  b  flaxtune, naive JAX port: flaxtune.train.train_step on 1 device under the strategy
     train_and_evaluate uses (make_strategy(config.train.strategy)), with
     flaxtune.optim.make_train_optimizer (as train_and_evaluate), every batch padded to exactly max_length
  c  flaxtune, default batching: the same step fed by flaxtune.data.pipeline.train_batches
     with train_and_evaluate's arguments (packed, filled rows of max_length by default)

plus helper subprocesses per round: `peak` (jitted fp32 matmul peak, the MFU denominator),
measured at the start and again at the end of the round, and `pipeline` (train_batches
alone, no train step).

The measured steps of all variants are one pass over the same first --examples rows of the
SST-2 train file: the same examples, the same number of optimizer steps, the same global batch.
Before them each variant runs warm-up steps covering every padded length its measured batches
use (so nothing compiles while measuring), on rows after the measured subset. Each subprocess
records what it actually trained on (steps, examples, a digest of the token ids) and the parent
compares them.

    python benchmarks/bench.py                        # defaults: 1,024 measured examples, 3 repeats
    python benchmarks/bench.py --examples 256 --repeats 1
    python benchmarks/bench.py --model-size gpt2 --examples 256
    python benchmarks/bench.py --set dtype=bfloat16   # any flaxtune config field, for b and c

See benchmarks/README.md for what each column means and the FLOP formula.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROCESS_START = time.perf_counter()

MODEL_SIZES = {
    # name: GPT2Config fields (vocab 50257 for both: the real tokenizer must fit)
    "small": dict(n_layer=4, n_embd=256, n_head=4, n_positions=128, vocab_size=50257),
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257),
}
VARIANTS = {
    "a": "PyTorch tutorial loop, pad to max_length",
    "b": "flaxtune step, pad to max_length",
    "c": "flaxtune step, train_batches (default)",
}
HELPERS = ("peak", "pipeline")

# jax.monitoring events recorded around every XLA compilation (jax/_src/dispatch.py).
EV_TRACE = "/jax/core/compile/jaxpr_trace_duration"
EV_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
EV_COMPILE = "/jax/core/compile/backend_compile_duration"


# ----------------------------------------------------------------------------------------------
# Shared setup: config, data subset, batch order, FLOPs
# ----------------------------------------------------------------------------------------------

def num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def peak_rss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def build_config(args):
    """The flaxtune config every variant uses (the torch variant reads its dims and lr from it)."""
    from flaxtune import config as config_lib

    config = config_lib.load_config_file(str(REPO / "configs" / "default.py"))
    config.seed = args.seed
    config.init = "scratch"
    config.scratch_model.update(MODEL_SIZES[args.model_size])
    config.tokenizer = args.tokenizer
    config.max_length = args.max_length
    config.data.source = "files"
    config.data.train_file = args.train_file
    config.data.eval_file = args.eval_file
    config.data.text_field = "sentence"
    config.data.label_field = "label"
    config.train.batch_size = args.batch_size
    config.train.num_devices = 1
    config.train.num_train_steps = total_steps(args)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    config_lib.apply_overrides(config, overrides)
    config_lib.validate_config(config)
    return config


def total_steps(args) -> int:
    """Length of the learning-rate schedule, the same for every variant: an upper bound on
    warm-up (W + one step per possible padded length) plus the measured steps."""
    from flaxtune.data.pipeline import bucket_lengths

    return args.warmup_steps + len(bucket_lengths(args.max_length)) + args.examples // args.batch_size


def load_subset(config, args):
    """(measured, pool, label names): the first --examples rows of the train file (flaxtune's
    readers + validation), every later row (warm-up examples are taken from there, so they are
    never among the measured ones), and the label map of the whole file."""
    from flaxtune.data.labels import build_label_map
    from flaxtune.data.sources import load_split

    records = load_split(config.data, "train")
    n = args.examples + (args.warmup_steps + 1) * args.batch_size
    if len(records) < n:
        raise SystemExit(f"{config.data.train_file} has {len(records)} rows, the run needs at least {n}")
    return records[:args.examples], records[args.examples:], build_label_map(records)


def warmup_plan(measured_t: list[int], warmup_steps: int) -> list[int]:
    """Padded length of every warm-up step: W steps at the most common length of the measured
    batches, then one step per distinct length they use (so after warm-up each measured shape has
    been run at least once with a state that has already been through a step)."""
    common = Counter(measured_t).most_common(1)[0][0]
    return [common] * warmup_steps + sorted(set(measured_t))


def pick_warmup_rows(plan: list[int], batch: int, pool_lengths, buckets: list[int]) -> list[list[int]]:
    """Pool row indices for each warm-up step of `plan` (padded length T), each row used once:
    `batch` rows from T's length bucket (longest token count in (previous bucket, T]), in file
    order, as length-grouped batching builds them. If the pool runs short for a bucket, the batch is
    filled with shorter rows (it still pads to T: at least one row is from T's bucket).
    Returns None if the pool (so far) cannot fill the plan."""
    from flaxtune.data.pipeline import bucket_for

    lengths = np.asarray(pool_lengths)
    bucket = np.array([bucket_for(int(n), buckets) for n in lengths], dtype=np.int64)
    used = np.zeros(len(lengths), bool)
    picks = []
    for t in plan:
        same = np.flatnonzero((bucket == t) & ~used)[:batch]
        if len(same) == 0:
            return None
        rows = list(same)
        if len(rows) < batch:
            shorter = np.flatnonzero((lengths <= t) & (bucket != t) & ~used)[:batch - len(rows)]
            rows += list(shorter)
        if len(rows) < batch:
            return None
        used[rows] = True
        picks.append([int(r) for r in rows])
    return picks


def fixed_order(n: int, batch: int, seed: int) -> np.ndarray:
    """(steps, batch) example indices for variants a and b: one seeded shuffle, one pass."""
    return np.random.default_rng(seed).permutation(n).reshape(-1, batch)


def model_dims(config) -> dict:
    m = config.scratch_model
    return {"n_layer": int(m.n_layer), "n_embd": int(m.n_embd), "n_head": int(m.n_head),
            "vocab_size": int(m.vocab_size), "n_positions": int(m.n_positions)}


def non_embedding_params(dims: dict) -> int:
    """Per block 12 d^2 + 13 d (c_attn 3d^2+3d, attn c_proj d^2+d, c_fc 4d^2+4d,
    mlp c_proj 4d^2+d, two LayerNorms 4d), plus ln_f (2d). wte, wpe and the score head excluded."""
    d, L = dims["n_embd"], dims["n_layer"]
    return L * (12 * d * d + 13 * d) + 2 * d


def seq_flops(t, dims: dict):
    """Training FLOPs (forward + backward) of one sequence of t positions:
    6 * N_nonembedding * t  +  12 * n_layer * n_embd * t^2 (QK^T and AV, full t x t)."""
    t = np.asarray(t, dtype=np.float64)
    return 6.0 * non_embedding_params(dims) * t + 12.0 * dims["n_layer"] * dims["n_embd"] * t * t


def digest(examples: list[tuple]) -> str:
    """Order-independent digest of the token-id sequences a variant trained on."""
    h = hashlib.sha256()
    for ex in sorted(examples):
        h.update(np.asarray(ex, np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def split_batch(batch: dict):
    """Examples in a flaxtune batch (any leading axes): (list of token-id tuples, real tokens,
    executed tokens, useful-FLOP lengths, executed rows of length T).

    Rows with weight 0 or an all-zero mask are padding rows (executed, not counted as examples).
    With `segment_ids` (packed rows) every segment of a row is one example.
    """
    ids = np.asarray(batch["input_ids"])
    t = ids.shape[-1]
    ids = ids.reshape(-1, t)
    mask = np.asarray(batch["attention_mask"]).reshape(-1, t).astype(bool)
    real_rows = mask.any(axis=1)
    seg = np.asarray(batch["segment_ids"]).reshape(-1, t) if "segment_ids" in batch else None
    if "weights" in batch and seg is None:  # packed batches weigh example slots, not rows
        real_rows &= np.asarray(batch["weights"]).reshape(-1) > 0
    examples, lengths = [], []
    for r in np.flatnonzero(real_rows):
        row_ids, row_mask = ids[r], mask[r]
        if seg is None:
            parts = [row_ids[row_mask]]
        else:
            s = seg[r][row_mask]
            parts = [row_ids[row_mask][s == v] for v in dict.fromkeys(s.tolist())]
        for p in parts:
            examples.append(tuple(int(x) for x in p))
            lengths.append(len(p))
    return examples, int(mask[real_rows].sum()), ids.shape[0] * t, lengths, ids.shape[0], t


class StepLog:
    """Per-step records of one training variant, and the summary figures."""

    def __init__(self, dims, warmup_steps):
        self.dims, self.warmup = dims, warmup_steps
        self.steps = []
        self.examples = []  # per step: the token-id tuples of its examples

    def add(self, *, seconds, fetch_seconds, examples, real_tokens, padded_tokens, lengths,
            rows, t, compiles=0, compile_names=(), compile_event_s=0.0, shape=None):
        self.examples.append(list(examples))
        self.steps.append({
            "s": seconds, "fetch_s": fetch_seconds, "examples": len(examples), "real_tokens": real_tokens,
            "padded_tokens": padded_tokens, "T": t, "shape": t if shape is None else shape,
            "compiles": compiles,
            "compile_names": list(compile_names), "compile_event_s": compile_event_s,
            "useful_flops": float(seq_flops(lengths, self.dims).sum()),
            "executed_flops": float(rows * seq_flops(t, self.dims)),
        })

    def summary(self) -> dict:
        st = self.steps
        warm, measured = st[:self.warmup], st[self.warmup:]
        steady = [s for s in measured if s["compiles"] == 0]

        def total(rows, key):
            return float(sum(r[key] for r in rows))

        def compile_seconds(rows):
            rows = [r for r in rows if r["compiles"]]
            return total(rows, "s") - total(rows, "fetch_s")

        steady_s, measured_s = total(steady, "s"), total(measured, "s")
        shapes, warm_shapes = {}, {}
        for s in measured:
            shapes[str(s["shape"])] = shapes.get(str(s["shape"]), 0) + 1
        for s in warm:
            warm_shapes[str(s["shape"])] = warm_shapes.get(str(s["shape"]), 0) + 1
        after = [n for s in measured for n in s["compile_names"]]
        measured_examples = [e for ex in self.examples[self.warmup:] for e in ex]
        return {
            "steps": len(st),
            "warmup_steps": self.warmup,
            "measured_steps": len(measured),
            "steady_steps": len(steady),
            "examples_total": sum(len(ex) for ex in self.examples),
            "examples_warmup": int(total(warm, "examples")),
            "examples_measured": len(measured_examples),
            "examples_digest": digest(measured_examples),
            "warmup_examples_digest": digest([e for ex in self.examples[:self.warmup] for e in ex]),
            "examples_per_s": total(steady, "examples") / steady_s if steady_s else float("nan"),
            "examples_per_s_wall": total(measured, "examples") / measured_s if measured_s else float("nan"),
            "real_tokens_per_s": total(steady, "real_tokens") / steady_s if steady_s else float("nan"),
            "padded_tokens_per_s": total(steady, "padded_tokens") / steady_s if steady_s else float("nan"),
            "pad_fraction": 1.0 - total(measured, "real_tokens") / max(total(measured, "padded_tokens"), 1),
            "step_s_median": statistics.median(s["s"] for s in steady) if steady else float("nan"),
            "fetch_s_median": statistics.median(s["fetch_s"] for s in steady) if steady else float("nan"),
            "first_step_s": st[0]["s"] if st else float("nan"),
            "compile_s": compile_seconds(warm),
            "compile_s_after_warmup": compile_seconds(measured),
            "compile_event_s": total(st, "compile_event_s"),
            "compiles_total": int(total(st, "compiles")),
            "compiles_warmup": int(total(warm, "compiles")),
            "compiles_after_warmup": int(total(measured, "compiles")),
            "compiled_after_warmup": after,
            "useful_flops_per_s": total(steady, "useful_flops") / steady_s if steady_s else float("nan"),
            "executed_flops_per_s": total(steady, "executed_flops") / steady_s if steady_s else float("nan"),
            "shapes": shapes,
            "warmup_shapes": warm_shapes,
            "step_times_s": [round(s["s"], 5) for s in st],
            "step_T": [s["T"] for s in st],
            "step_compiles": [s["compiles"] for s in st],
        }


class CompileCounter:
    """Counts XLA compilations with a jax.monitoring duration listener (backend_compile events;
    a persistent-cache hit passes through the same event, so it is counted too)."""

    def __init__(self):
        from jax import monitoring

        self.count, self.event_s, self.names = 0, 0.0, []
        monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        if event in (EV_TRACE, EV_LOWER, EV_COMPILE):
            self.event_s += duration
        if event == EV_COMPILE:
            self.count += 1
            self.names.append(str(kwargs.get("fun_name", "?")))

    def mark(self):
        return self.count, self.event_s

    def since(self, mark):
        count, event_s = mark
        return self.count - count, self.names[count:self.count], self.event_s - event_s


# ----------------------------------------------------------------------------------------------
# Variants (each runs in its own subprocess)
# ----------------------------------------------------------------------------------------------

def run_torch(args) -> dict:
    """(a) The tutorial's loop: tokenize each batch padded to max_length, forward with labels,
    backward, clip, AdamW step, scheduler step, zero_grad."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(args.torch_threads or num_cores())
    torch.manual_seed(args.seed)
    config = build_config(args)
    records, pool, label_names = load_subset(config, args)
    label_ids = {name: i for i, name in enumerate(label_names)}
    dims = model_dims(config)

    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    hf = dict(config.scratch_model.to_dict(), num_labels=len(label_names),
              pad_token_id=tokenizer.eos_token_id)
    if config.dropout >= 0:
        hf.update(resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout)
    model = GPT2ForSequenceClassification(GPT2Config(**hf))
    model.train()
    t = config.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, eps=t.adam_eps)
    order = fixed_order(len(records), t.batch_size, config.seed)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0,
                                                num_training_steps=total_steps(args))
    # Warm-up: every batch has the shape max_length, so W + 1 steps at it, on pool rows
    # (the same rows as b's warm-up).
    plan = warmup_plan([config.max_length] * len(order), args.warmup_steps)
    warm_rows = fixed_warmup_rows(plan, t.batch_size)
    steps = [[pool[i] for i in rows] for rows in warm_rows] + [[records[i] for i in rows] for rows in order]
    log = StepLog(dims, len(plan))
    setup_s = time.perf_counter() - PROCESS_START
    for recs in steps:
        t0 = time.perf_counter()
        # The tutorial's collator: tokenize the batch's texts, pad to max_length.
        enc = tokenizer([r.text for r in recs], padding="max_length", truncation=True,
                        max_length=config.max_length, return_tensors="pt")
        labels = torch.tensor([label_ids[r.label] for r in recs])
        t1 = time.perf_counter()
        model.zero_grad()
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        loss = out.loss.item()  # synchronous on CPU anyway; keeps the loop honest elsewhere
        t2 = time.perf_counter()
        examples, real, padded, lengths, nrows, tt = split_batch(
            {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})
        log.add(seconds=t2 - t0, fetch_seconds=t1 - t0, examples=examples, real_tokens=real,
                padded_tokens=padded, lengths=lengths, rows=nrows, t=tt)
    if not math.isfinite(loss):
        raise RuntimeError(f"torch loss is {loss}")
    n_params = sum(p.numel() for p in model.parameters())
    return {"setup_s": setup_s, "final_loss": loss, "params_total": int(n_params),
            "torch_threads": torch.get_num_threads(),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "warmup_plan": plan, "warmup_rows": [[args.examples + i for i in rows] for rows in warm_rows],
            "dtype": "float32", **log.summary()}


def flaxtune_trainer(config, num_labels: int, steps: int, table_ids=None):
    """Model, optimizer, replicated state and the compiled step, as flaxtune.train builds them
    (`table_ids`: every token id the run trains on, as train_and_evaluate passes them)."""
    import jax
    from flaxtune.model import GPT2Classifier
    from flaxtune.optim import make_train_optimizer
    from flaxtune.parallel import make_strategy
    from flaxtune.train import TrainState, train_step
    from flaxtune.weights import DTYPES, dims_for, initial_params, model_source

    strategy = make_strategy(config.train.strategy, jax.local_devices()[:1])
    source = model_source(config)
    dims = dims_for(source.hf_config, config.dropout)
    model = GPT2Classifier(dims, num_labels, dtype=DTYPES[config.dtype])
    tx, _ = make_train_optimizer(config.train, steps, table_ids=table_ids)
    params = initial_params(model, source, config.seed)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    n_total = sum(int(np.size(x)) for _, x in leaves)
    n_embed = sum(int(np.size(x)) for p, x in leaves if any(getattr(k, "key", None) in ("wte", "wpe") for k in p))
    state = strategy.replicate(TrainState(step=np.int32(0), params=params, opt_state=tx.init(params)))
    p_step = strategy.compile_train_step(functools.partial(
        train_step, model=model, tx=tx, strategy=strategy, seed=config.seed))
    return strategy, state, p_step, {"params_total": n_total, "params_embedding": n_embed}


def tokenized_subset(config, records, label_names):
    """flaxtune's one-pass tokenization of the subset; also returns the seconds it took
    (tokenizer loading excluded)."""
    from flaxtune.data.tokenize import load_tokenizer
    from flaxtune.train import prepare_split

    tokenizer = load_tokenizer(config.tokenizer)
    t0 = time.perf_counter()
    data = prepare_split(records, label_names, tokenizer, config.max_length,
                         int(config.scratch_model.vocab_size))
    return data, time.perf_counter() - t0


def train_batches_kwargs(config, data, seed_epoch=0) -> dict:
    """Arguments for flaxtune.data.pipeline.train_batches as train_and_evaluate passes them, plus
    any further keyword of train_batches that has a same-named config.data field (so new batching
    options set with --set data.NAME=... reach the pipeline without changing this script)."""
    import inspect

    from flaxtune.data.pipeline import bucket_lengths, train_batches

    kwargs = dict(global_batch=config.train.batch_size, num_devices=1, seed=config.seed,
                  epoch=seed_epoch, buckets=bucket_lengths(config.max_length))
    for name in inspect.signature(train_batches).parameters:
        if name not in kwargs and name not in ("data", "skip_batches") and name in config.data:
            kwargs[name] = config.data[name]
    return kwargs


def fixed_warmup_rows(plan: list[int], batch: int) -> list[list[int]]:
    """Warm-up pool rows of a and b (every batch padded to max_length, any row fits): the first
    len(plan) * batch rows after the measured subset, in file order."""
    return [list(range(k * batch, (k + 1) * batch)) for k in range(len(plan))]


def pad_fixed(data, rows, batch: int, tmax: int) -> dict:
    """b's batch: the rows' token ids padded to exactly max_length (device axis of 1)."""
    ids = np.zeros((batch, tmax), np.int32)
    mask = np.zeros((batch, tmax), np.int32)
    for j, i in enumerate(rows):
        ids[j, :len(data.ids[i])] = data.ids[i]
        mask[j, :len(data.ids[i])] = 1
    return {"input_ids": ids.reshape(1, batch, tmax), "attention_mask": mask.reshape(1, batch, tmax),
            "labels": data.labels[rows].astype(np.int32).reshape(1, batch)}


def batch_t(batch: dict):
    """A batch's compiled-shape key: its padded length T, or "RxT" for packed rows."""
    shape = np.asarray(batch["input_ids"]).shape
    return f"{shape[-2]}x{shape[-1]}" if "segment_ids" in batch else int(shape[-1])


def searched_warmup_batches(config, pool, label_names, plan, kw) -> tuple[list[dict], list[list[int]]]:
    """Warm-up batches for layouts whose shape is not set by one bucket (packing): run
    train_batches, with the measured run's arguments, over successive chunks of pool rows and
    take the first batches of each shape the plan needs. Returns the batches and, per batch,
    the pool rows of the chunk it came from."""
    from flaxtune.data.pipeline import train_batches
    from flaxtune.data.tokenize import load_tokenizer
    from flaxtune.train import prepare_split

    tokenizer = load_tokenizer(config.tokenizer)
    need = Counter(plan)
    found: dict = {}
    chunk = 64 * kw["global_batch"]
    for start in range(0, len(pool), chunk):
        part = prepare_split(pool[start:start + chunk], label_names, tokenizer, config.max_length,
                             int(config.scratch_model.vocab_size))
        for batch in train_batches(part, **{**kw, "epoch": 0}):
            key = batch_t(batch)
            if len(found.setdefault(key, [])) < need.get(key, 0):
                found[key].append((batch, list(range(start, start + len(part)))))
        if all(len(found.get(k, [])) >= n for k, n in need.items()):
            break
    else:
        raise SystemExit(f"the {len(pool)} rows after the measured subset cannot fill the warm-up plan {plan}")
    taken = {k: iter(v) for k, v in found.items()}
    picked = [next(taken[key]) for key in plan]
    return [b for b, _ in picked], [rows for _, rows in picked]


def grouped_warmup_batches(config, pool, label_names, plan, kw) -> tuple[list[dict], list[list[int]]]:
    """c's warm-up batches: for each planned length T, `batch` pool rows from T's bucket, batched
    by flaxtune's own train_batches (same arguments as the measured run), so they are padded and
    laid out exactly like the measured batches. Pool rows are tokenized in chunks until every
    bucket of the plan is filled. Returns the batches and their pool row indices."""
    from flaxtune.data.pipeline import train_batches
    from flaxtune.data.tokenize import Tokenized, load_tokenizer
    from flaxtune.train import prepare_split

    tokenizer = load_tokenizer(config.tokenizer)
    b, chunk = kw["global_batch"], 4096
    ids, labels, picks = [], [], None
    for start in range(0, len(pool), chunk):
        part = prepare_split(pool[start:start + chunk], label_names, tokenizer, config.max_length,
                             int(config.scratch_model.vocab_size))
        ids += part.ids
        labels.append(part.labels)
        picks = pick_warmup_rows(plan, b, [len(x) for x in ids], kw["buckets"])
        if picks is not None:
            break
    if picks is None:
        raise SystemExit(f"the {len(pool)} rows after the measured subset cannot fill the warm-up plan {plan} "
                         f"(batch {b}): too few texts of some length")
    labels = np.concatenate(labels)
    batches = []
    for t, rows in zip(plan, picks):
        sub = Tokenized(ids=[ids[i] for i in rows], labels=labels[rows])
        got = list(train_batches(sub, **{**kw, "epoch": 0}))
        if len(got) != 1 or batch_t(got[0]) != t:
            raise RuntimeError(f"warm-up batch for length {t}: train_batches gave "
                               f"{[batch_t(g) for g in got]} from rows of lengths {sorted(len(ids[i]) for i in rows)}")
        batches.append(got[0])
    return batches, picks


def run_flaxtune(args, fixed_padding: bool) -> dict:
    """(b) fixed padding to max_length / (c) flaxtune's train_batches.

    Warm-up first (batches of pool rows, never measured examples), covering every shape the
    measured batches have, then one pass over the measured subset, timed step by step."""
    import jax
    from flaxtune.data.pipeline import PAD_ID
    from flaxtune.optim import training_token_ids

    counter = CompileCounter()
    config = build_config(args)
    records, pool, label_names = load_subset(config, args)
    dims = model_dims(config)
    data, _ = tokenized_subset(config, records, label_names)
    b, tmax = config.train.batch_size, config.max_length

    if fixed_padding:
        order = fixed_order(len(data), b, config.seed)
        plan = warmup_plan([tmax] * len(order), args.warmup_steps)
        warm_rows = fixed_warmup_rows(plan, b)
        pool_data, _ = tokenized_subset(config, pool[:len(plan) * b], label_names)
        warm_batches = [pad_fixed(pool_data, rows, b, tmax) for rows in warm_rows]

        def batches():
            for rows in order:
                yield pad_fixed(data, rows, b, tmax)
        pipeline_kwargs = None
        planned_t = [tmax] * len(order)
    else:
        from flaxtune.data.pipeline import prefetch, train_batches

        kw = train_batches_kwargs(config, data)
        pipeline_kwargs = dict(kw)
        # A dry pass over the measured epoch (no step) to learn which padded lengths it uses;
        # the order depends only on (seed, epoch), so the timed pass below yields the same batches.
        planned_t = [batch_t(x) for x in train_batches(data, **kw)]
        if not planned_t:
            raise SystemExit(f"train_batches gave no batch for {len(data)} examples at batch {b}")
        plan = warmup_plan(planned_t, args.warmup_steps)
        make_warmup = searched_warmup_batches if kw.get("pack") else grouped_warmup_batches
        warm_batches, warm_rows = make_warmup(config, pool, label_names, plan, kw)

    # The token ids of everything this run trains on (measured and warm-up examples), as
    # train_and_evaluate gives its training split's to the optimizer.
    table_ids = training_token_ids([*data.ids, *(np.asarray(wb["input_ids"]) for wb in warm_batches)],
                                   pad_id=PAD_ID)
    strategy, state, p_step, param_counts = flaxtune_trainer(config, len(label_names), total_steps(args),
                                                             table_ids)
    if not fixed_padding:
        # As train_and_evaluate feeds its step: batches built and placed on the device in a
        # background thread, two ahead (warm-up batches are placed the same way, so their
        # compiled steps are the measured steps' ones).
        warm_batches = [strategy.put_batch(wb) for wb in warm_batches]

        def batches():
            return prefetch(train_batches(data, **kw), size=2, transform=strategy.put_batch)

    log = StepLog(dims, len(warm_batches))
    setup_compiles = counter.count
    setup_s = time.perf_counter() - PROCESS_START

    def step(state, get_batch):
        t0 = time.perf_counter()
        mark = counter.mark()
        batch = get_batch()
        t1 = time.perf_counter()
        state, metrics = p_step(state, batch)
        jax.block_until_ready((state, metrics))
        t2 = time.perf_counter()
        n, names, ev = counter.since(mark)
        examples, real, padded, lengths, nrows, tt = split_batch(batch)
        log.add(seconds=t2 - t0, fetch_seconds=t1 - t0, examples=examples, real_tokens=real,
                padded_tokens=padded, lengths=lengths, rows=nrows, t=tt, compiles=n,
                compile_names=names, compile_event_s=ev, shape=batch_t(batch))
        return state, metrics

    metrics = None
    for wb in warm_batches:
        state, metrics = step(state, lambda: wb)
    it = iter(batches())
    while True:
        try:
            state, metrics = step(state, lambda: next(it))
        except StopIteration:
            break
    loss = float(np.asarray(jax.device_get(metrics["loss"])).reshape(-1)[0]) if metrics else float("nan")
    if not math.isfinite(loss):
        raise RuntimeError(f"flaxtune loss is {loss}")
    measured_t = [s["shape"] for s in log.steps[len(warm_batches):]]
    if measured_t != planned_t:
        raise RuntimeError(f"the measured batches' lengths {measured_t} differ from the dry pass {planned_t}")
    return {"setup_s": setup_s, "setup_compiles": setup_compiles, "final_loss": loss,
            "dtype": config.dtype, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.local_devices()[:1]],
            "train_batches_kwargs": pipeline_kwargs, "warmup_plan": plan,
            "warmup_rows": [[args.examples + i for i in rows] for rows in warm_rows],
            **param_counts, **log.summary()}


def run_pipeline(args) -> dict:
    """train_batches alone: build the tf.data pipeline and iterate it, no train step."""
    from flaxtune.data.pipeline import train_batches

    config = build_config(args)
    records, _, label_names = load_subset(config, args)
    data, tokenize_s = tokenized_subset(config, records, label_names)
    epochs = []
    for epoch in range(args.pipeline_epochs):
        kw = train_batches_kwargs(config, data, seed_epoch=epoch)
        n_batches = n_examples = real = 0
        t0 = time.perf_counter()
        first_s = None
        for batch in train_batches(data, **kw):
            if first_s is None:
                first_s = time.perf_counter() - t0
            examples, r, *_ = split_batch(batch)
            n_batches += 1
            n_examples += len(examples)
            real += r
        total = time.perf_counter() - t0
        epochs.append({"batches": n_batches, "examples": n_examples, "real_tokens": real,
                       "s": total, "first_batch_s": first_s})
    s = sum(e["s"] for e in epochs)
    return {"tokenize_s": tokenize_s, "tokenize_examples_per_s": len(data) / tokenize_s,
            "epochs": epochs,
            "batches_per_s": sum(e["batches"] for e in epochs) / s,
            "examples_per_s": sum(e["examples"] for e in epochs) / s,
            "real_tokens_per_s": sum(e["real_tokens"] for e in epochs) / s,
            "batches_per_s_steady": sum(e["batches"] - 1 for e in epochs)
            / max(sum(e["s"] - (e["first_batch_s"] or 0.0) for e in epochs), 1e-9),
            "first_batch_s": statistics.median(e["first_batch_s"] or 0.0 for e in epochs)}


def run_peak(args) -> dict:
    """Matmul peak: a jitted fp32 jnp.dot of n x n, median over repeats (torch.mm for reference)."""
    import jax
    import jax.numpy as jnp

    n, reps = args.peak_size, args.peak_reps
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    y = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    dot = jax.jit(jnp.dot)
    for _ in range(2):
        dot(x, y).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dot(x, y).block_until_ready()
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    out = {"n": n, "reps": reps, "jax_times_s": times,
           "jax_flops_per_s": flops / statistics.median(times),
           "jax_flops_per_s_best": flops / min(times), "jax_backend": jax.default_backend()}
    try:
        import torch

        torch.set_num_threads(num_cores())
        a, b = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y))
        for _ in range(2):
            torch.mm(a, b)
        tt = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            tt.append(time.perf_counter() - t0)
        out.update(torch_times_s=tt, torch_flops_per_s=flops / statistics.median(tt))
    except ImportError:
        pass
    return out


def apply_malloc_policy(args, variant: str) -> bool:
    """flaxtune's CLI and train_and_evaluate call keep_freed_memory(); the flaxtune variants do
    the same. `--malloc all` applies it to the torch variant too (fair-comparison check)."""
    if variant in ("b", "c", "pipeline") and args.malloc != "default" or variant == "a" and args.malloc == "all":
        from flaxtune.host_memory import keep_freed_memory

        return keep_freed_memory()
    return False


def run_variant(args) -> dict:
    malloc_tuned = apply_malloc_policy(args, args.variant)
    fn = {"a": run_torch, "b": functools.partial(run_flaxtune, fixed_padding=True),
          "c": functools.partial(run_flaxtune, fixed_padding=False),
          "pipeline": run_pipeline, "peak": run_peak}[args.variant]
    result = fn(args)
    result["malloc_keeps_freed_memory"] = malloc_tuned
    result["peak_rss_mb"] = peak_rss_mb()
    result["process_s"] = time.perf_counter() - PROCESS_START
    return result


# ----------------------------------------------------------------------------------------------
# Parent: spawn, collect, summarise
# ----------------------------------------------------------------------------------------------

def child_env(args, variant: str) -> dict:
    env = dict(os.environ)
    if variant in ("a", "peak") and args.torch_omp_wait_policy == "passive":
        # PyTorch's OpenMP threads spin while they wait; on a machine where other jobs hold the
        # cores, that made the torch step 5x slower here (4.5 s vs 0.8 s). Passive waiting
        # removes that noise amplifier; an OMP_WAIT_POLICY already set is respected.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # One CPU device: drop a simulated device count the test suite may have exported.
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    if args.platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def spawn(variant: str, argv: list[str], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv,
               "--variant", variant, "--result-file", str(out)]
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=child_env(args, variant), capture_output=True, text=True,
                                  timeout=args.timeout)
            rc, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, stderr = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        wall = time.perf_counter() - t0
        result = json.loads(out.read_text()) if out.exists() else {}
    if rc != 0 or "error" in result:
        result.setdefault("error", f"exit status {rc}")
        result["stderr_tail"] = stderr[-4000:]
    result.update(variant=variant, wall_s=wall, load_before=load_before, load_after=os.getloadavg()[0])
    return result


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key])]
    return statistics.median(vals) if vals else float("nan")


SUMMARY_KEYS = ("examples_per_s", "examples_per_s_wall", "real_tokens_per_s", "padded_tokens_per_s",
                "pad_fraction", "step_s_median", "fetch_s_median", "first_step_s", "compile_s",
                "compile_s_after_warmup", "compile_event_s", "compiles_total", "compiles_warmup",
                "compiles_after_warmup", "useful_flops_per_s", "executed_flops_per_s", "mfu_useful",
                "mfu_executed", "peak_rss_mb", "setup_s", "final_loss", "steps", "warmup_steps",
                "measured_steps", "examples_total", "examples_warmup", "examples_measured")


PEAK_SPREAD_NOTE = 0.15  # start and end peaks of a round further apart than this are reported


def peak_readings(rnd: dict) -> tuple:
    """The round's two matmul peaks, at its start (`peak`) and end (`peak_end`); None where
    that measurement failed."""
    vals = (rnd.get(k, {}).get("jax_flops_per_s") for k in ("peak", "peak_end"))
    return tuple(v if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None for v in vals)


def round_peak(rnd: dict) -> float | None:
    """The round's matmul peak: the higher of its two readings. A transient slowdown while
    the peak is measured cannot inflate every variant's MFU that way (one 10-call median has
    read 102 GFLOP/s on a machine that gave 167-191 in the other rounds)."""
    vals = [v for v in peak_readings(rnd) if v]
    return max(vals) if vals else None


def peak_spreads(rounds: list[dict]) -> list[str]:
    """Rounds whose start and end peaks differ by more than PEAK_SPREAD_NOTE (the machine's
    speed moved during the round), and rounds where only one of the two was measured."""
    notes = []
    for i, rnd in enumerate(rounds):
        a, b = peak_readings(rnd)
        if a and b and abs(a - b) / max(a, b) > PEAK_SPREAD_NOTE:
            notes.append(f"round {i + 1}: matmul peak {a / 1e9:.0f} GFLOP/s at the start, {b / 1e9:.0f} at the end; "
                         "that round's MFU uses the higher one")
        elif bool(a) != bool(b):
            which = "start" if a else "end"
            notes.append(f"round {i + 1}: only the {which} matmul peak was measured; that round's MFU rests on "
                         "one reading")
    return notes


def summarise(rounds: list[dict], variants: list[str]) -> dict:
    # MFU per round against that round's peak (the higher of its two), then medians over rounds.
    for rnd in rounds:
        peak = round_peak(rnd)
        rnd["round_peak_flops_per_s"] = peak
        for v in variants:
            r = rnd.get(v, {})
            if peak and "useful_flops_per_s" in r:
                r["mfu_useful"] = r["useful_flops_per_s"] / peak
                r["mfu_executed"] = r["executed_flops_per_s"] / peak
    summary = {}
    for v in variants + list(HELPERS):
        keys = ("peak", "peak_end") if v == "peak" else (v,)  # the peak's medians: both measurements
        runs = [rnd[k] for rnd in rounds for k in keys if k in rnd and "error" not in rnd[k]]
        if v == "peak":
            summary[v] = {k: median_of(runs, k) for k in ("jax_flops_per_s", "jax_flops_per_s_best", "torch_flops_per_s")}
            summary[v]["round_peak_flops_per_s"] = median_of(rounds, "round_peak_flops_per_s")
            summary[v]["round_peaks"] = [rnd.get("round_peak_flops_per_s") for rnd in rounds]
        elif v == "pipeline":
            summary[v] = {k: median_of(runs, k) for k in ("batches_per_s", "batches_per_s_steady", "examples_per_s", "real_tokens_per_s",
                                                           "first_batch_s", "tokenize_examples_per_s", "peak_rss_mb")}
        else:
            summary[v] = {k: median_of(runs, k) for k in SUMMARY_KEYS}
            summary[v]["ok_runs"] = len(runs)
            if runs:
                summary[v]["compiled_after_warmup"] = runs[-1].get("compiled_after_warmup", [])
                summary[v]["shapes"] = runs[-1].get("shapes", {})
                summary[v]["warmup_shapes"] = runs[-1].get("warmup_shapes", {})
                summary[v]["examples_digest"] = runs[-1].get("examples_digest")
    ratios = {}
    for num, den in (("c", "a"), ("c", "b"), ("b", "a")):
        if num in variants and den in variants:
            for key in ("examples_per_s", "examples_per_s_wall"):
                per_round = [rnd[num][key] / rnd[den][key] for rnd in rounds
                             if num in rnd and den in rnd and "error" not in rnd[num] and "error" not in rnd[den]
                             and rnd[den].get(key)]
                ratios[f"{num}/{den} {key}"] = {
                    "median_of_paired": statistics.median(per_round) if per_round else float("nan"),
                    "per_round": per_round}
    return {"variants": summary, "ratios": ratios}


def checks(rounds: list[dict], variants: list[str], args) -> list[str]:
    """Did the measured steps of every variant train on the same examples (all --examples of
    them) in the same number of steps, and did nothing compile after warm-up?"""
    problems = []
    for i, rnd in enumerate(rounds):
        ok = [v for v in variants if v in rnd and "error" not in rnd[v]]
        for key in ("measured_steps", "examples_measured", "examples_digest"):
            vals = {v: rnd[v].get(key) for v in ok}
            if len(set(vals.values())) > 1:
                problems.append(f"round {i + 1}: {key} differs between variants: {vals}")
        for v in ok:
            r = rnd[v]
            if r.get("examples_measured") != args.examples:
                problems.append(f"round {i + 1}: variant {v} measured {r.get('examples_measured')} examples, "
                                f"not the {args.examples} of the subset")
            if r.get("compiles_after_warmup"):
                problems.append(f"round {i + 1}: variant {v} compiled {r['compiles_after_warmup']}x after "
                                f"warm-up: {', '.join(r.get('compiled_after_warmup', []))}")
        for v in variants:
            if v in rnd and "error" in rnd[v]:
                problems.append(f"round {i + 1}: variant {v} failed: {rnd[v]['error']}")
        if not round_peak(rnd):
            problems.append(f"round {i + 1}: no matmul peak was measured, so that round has no MFU "
                            f"({'; '.join(rnd[k]['error'] for k in ('peak', 'peak_end') if 'error' in rnd.get(k, {}))})")
    return problems


def fmt(x, spec):
    if isinstance(x, (int, float)) and math.isfinite(x):
        return format(x, spec)
    return "-"


def print_table(report: dict, args) -> None:
    s = report["summary"]["variants"]
    peak = s.get("peak", {}).get("round_peak_flops_per_s", float("nan"))
    m = report["meta"]
    print()
    print(f"flaxtune benchmark  model {m['model_dims']}  batch {args.batch_size}  max_length {args.max_length}  "
          f"{m['measured_steps']} measured steps ({args.examples} examples)  repeats {args.repeats}  "
          f"({m['cores']} cores, load {m['load_start']:.1f} -> {m['load_end']:.1f})  "
          f"flaxtune dtype {m['flaxtune_config'].get('dtype')}")
    a = next((rnd["a"] for rnd in report["runs"] if "a" in rnd and "error" not in rnd["a"]), None)
    if a:
        print(f"torch: {a.get('torch_threads')} threads, OMP_WAIT_POLICY={a.get('omp_wait_policy') or 'unset'}, "
              f"attention {a.get('attn_implementation')}, glibc malloc keeps freed memory: "
              f"{a.get('malloc_keeps_freed_memory')}")
    c = next((rnd["c"] for rnd in report["runs"] if "c" in rnd and "error" not in rnd["c"]), None)
    if c:
        print(f"flaxtune: glibc malloc keeps freed memory (flaxtune.host_memory): {c.get('malloc_keeps_freed_memory')}")
    if max(m["load_start"], m["load_end"]) > m["cores"]:
        print(f"NOTE: the load average exceeded the {m['cores']} cores during the run: absolute figures are "
              "noisy; compare the ratios and the per-round values")
    print(f"matmul peak (jitted fp32 {args.peak_size}x{args.peak_size} jnp.dot, median of calls; per round the "
          f"higher of its start and end measurements; median over rounds): {fmt(peak / 1e9, '.1f')} GFLOP/s "
          f"(rounds: {', '.join(fmt(x / 1e9 if x else None, '.0f') for x in s.get('peak', {}).get('round_peaks', []))})   "
          f"torch.mm: {fmt(s.get('peak', {}).get('torch_flops_per_s', float('nan')) / 1e9, '.1f')} GFLOP/s")
    for note in report.get("peak_notes", []):
        print(f"NOTE: {note}")
    cols = [("variant", 44), ("ex/s", 8), ("ex/s wall", 9), ("real tok/s", 10), ("pad %", 6),
            ("step ms", 8), ("warm-up", 7), ("compile s", 9), ("XLA comp", 8), ("useful GF/s", 11), ("MFU use", 8),
            ("exec GF/s", 9), ("MFU exec", 8), ("RSS MB", 7)]
    print("  ".join(name.rjust(w) if i else name.ljust(w) for i, (name, w) in enumerate(cols)))
    for v in args.variants:
        r = s.get(v)
        if not r or not r.get("ok_runs"):
            print(f"{(v + ') ' + VARIANTS[v]).ljust(44)}  FAILED (see JSON: runs[].{v}.error)")
            continue
        vals = [f"{v}) {VARIANTS[v]}", fmt(r["examples_per_s"], ".1f"), fmt(r["examples_per_s_wall"], ".1f"),
                fmt(r["real_tokens_per_s"], ".0f"), fmt(100 * r["pad_fraction"], ".0f"),
                fmt(1e3 * r["step_s_median"], ".0f"), fmt(r["warmup_steps"], ".0f"),
                fmt(r["compile_s"], ".2f") if v != "a" else "n/a",
                f"{fmt(r['compiles_after_warmup'], '.0f')}" if v != "a" else "n/a",
                fmt(r["useful_flops_per_s"] / 1e9, ".2f"), fmt(100 * r["mfu_useful"], ".1f") + "%",
                fmt(r["executed_flops_per_s"] / 1e9, ".2f"), fmt(100 * r["mfu_executed"], ".1f") + "%",
                fmt(r["peak_rss_mb"], ".0f")]
        print("  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, (_, w)) in enumerate(zip(vals, cols))))
    p = s.get("pipeline")
    if p and math.isfinite(p.get("examples_per_s", float("nan"))):
        print(f"input pipeline alone (train_batches, no step): {fmt(p['batches_per_s'], '.1f')} batches/s, "
              f"{fmt(p['examples_per_s'], '.0f')} ex/s, {fmt(p['real_tokens_per_s'], '.0f')} real tok/s "
              f"(first batch {fmt(1e3 * p['first_batch_s'], '.0f')} ms, then {fmt(p['batches_per_s_steady'], '.0f')} batches/s); tokenize_texts {fmt(p['tokenize_examples_per_s'], '.0f')} ex/s")
    for name, r in report["summary"]["ratios"].items():
        if name.endswith("examples_per_s"):
            print(f"ratio {name.split()[0]} examples/s: {fmt(r['median_of_paired'], '.2f')}x   "
                  f"(wall: {fmt(report['summary']['ratios'][name + '_wall']['median_of_paired'], '.2f')}x; "
                  f"per round {', '.join(fmt(x, '.2f') for x in r['per_round'])})")
    for v in args.variants:
        per_round = [rnd.get(v, {}).get("mfu_useful") for rnd in report["runs"]]  # "-": failed, or no peak
        if any(per_round):
            print(f"{v}) useful MFU per round: "
                  f"{', '.join(fmt(100 * x, '.1f') + '%' if x else '-' for x in per_round)}")
    for v in args.variants:
        r = s.get(v, {})
        if r.get("ok_runs"):
            print(f"{v}) padded lengths: warm-up {r.get('warmup_shapes')}, measured {r.get('shapes')}")
    for v in args.variants:
        r = s.get(v, {})
        if r.get("compiled_after_warmup"):
            print(f"{v}) compiled after warm-up (last round): {', '.join(r['compiled_after_warmup'])}; "
                  f"shapes {r.get('shapes')}")
    if report["checks"]:
        print("CHECKS FAILED:")
        for c in report["checks"]:
            print("  " + c)
    else:
        first = s[args.variants[0]]
        print(f"checks: in the measured steps every variant trained on the same {first['examples_measured']:.0f} "
              f"examples in {first['measured_steps']:.0f} steps (digest {first.get('examples_digest')}); "
              f"no compilation after warm-up")
    print(f"JSON: {args.out}")


def git_info() -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    return {"commit": git("rev-parse", "HEAD"), "dirty_flaxtune": bool(git("status", "--porcelain", "flaxtune"))}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--examples", type=int, default=1024,
                   help="examples in the measured steps (a multiple of --batch-size); warm-up steps add more")
    p.add_argument("--batch-size", type=int, default=32, help="global batch for every variant")
    p.add_argument("--warmup-steps", type=int, default=3,
                   help="warm-up steps at the most common padded length, before one warm-up step per "
                        "padded length of the measured batches (rows after the measured subset)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every variant; the table shows medians")
    p.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="small",
                   help="small = 4 layers x 256 wide, 4 heads; gpt2 = 12 x 768, 12 heads")
    p.add_argument("--max-length", type=int, default=64, help="truncation length; a and b pad to it")
    p.add_argument("--variants", default="a,b,c", help="comma-separated subset of a,b,c")
    p.add_argument("--skip-pipeline", action="store_true", help="do not time train_batches alone")
    p.add_argument("--pipeline-epochs", type=int, default=3, help="passes over the subset when timing train_batches alone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="flaxtune config override for all variants (e.g. dtype=bfloat16, "
                        "data.pack=false, scratch_model.n_layer=2); repeatable")
    p.add_argument("--train-file", default=str(SHARED / "data" / "sst2" / "train.tsv"))
    p.add_argument("--eval-file", default=str(SHARED / "data" / "sst2" / "dev.tsv"),
                   help="only checked to exist (flaxtune's config validation wants one)")
    p.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "gpt2"))
    p.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmul peak")
    p.add_argument("--peak-reps", type=int, default=10)
    p.add_argument("--platform", choices=["cpu", "default"], default="cpu",
                   help="cpu: JAX_PLATFORMS=cpu in every subprocess (like-for-like with CPU torch); "
                        "default: let JAX pick its backend")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for variant a; 0 = the number of usable cores")
    p.add_argument("--torch-omp-wait-policy", choices=["passive", "default"], default="passive",
                   help="passive: OMP_WAIT_POLICY=PASSIVE for the torch processes (unless already set), "
                        "so torch's OpenMP spin-waiting does not collapse on a busy machine; "
                        "default: leave the environment alone")
    p.add_argument("--malloc", choices=["flaxtune", "all", "default"], default="flaxtune",
                   help="flaxtune: the flaxtune variants keep freed memory in glibc's heap, as flaxtune's "
                        "CLI and train_and_evaluate do (flaxtune.host_memory); all: the torch variant "
                        "too; default: no variant changes the allocator")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    p.add_argument("--out", default=str(REPO / "runs" / "bench.json"), help="JSON results")
    p.add_argument("--variant", choices=list(VARIANTS) + list(HELPERS), help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from a, b, c")
    if args.warmup_steps < 0:
        p.error("--warmup-steps must be >= 0")
    if args.examples <= 0 or args.examples % args.batch_size:
        p.error(f"--examples={args.examples} must be a positive multiple of --batch-size={args.batch_size}")
    for kv in args.set:
        if "=" not in kv:
            p.error(f"--set {kv!r}: expected FIELD=VALUE")
    return args


def child_argv(argv: list[str]) -> list[str]:
    """The parent's own arguments, minus the ones that only make sense in the parent."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out", "--variants", "--repeats"):
            skip = True
            continue
        if a.startswith(("--out=", "--variants=", "--repeats=")) or a == "--skip-pipeline":
            continue
        out.append(a)
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.variant:
        try:
            result = run_variant(args)
            code = 0
        except BaseException as e:  # report anything, including SystemExit from a check
            result, code = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}, 1
        Path(args.result_file).write_text(json.dumps(result, default=str))
        return code

    try:
        config = build_config(args)  # fail early on a bad --set; the dims below honour it
    except ValueError as e:  # flaxtune.config.ConfigError
        raise SystemExit(f"bench.py: {e}") from None
    sub_argv = child_argv(argv)
    # The matmul peak is measured at both ends of a round (see round_peak).
    order = ["peak"] + ([] if args.skip_pipeline else ["pipeline"]) + args.variants + ["peak_end"]
    load_start = os.getloadavg()[0]
    rounds = []
    t_start = time.perf_counter()
    for r in range(args.repeats):
        rnd = {}
        for v in order:
            print(f"[round {r + 1}/{args.repeats}] {v} ...", end=" ", flush=True, file=sys.stderr)
            rnd[v] = spawn("peak" if v == "peak_end" else v, sub_argv, args)
            if "error" in rnd[v]:
                print(f"FAILED: {rnd[v]['error']}\n{rnd[v].get('traceback') or rnd[v].get('stderr_tail', '')}",
                      file=sys.stderr)
            else:
                extra = (f"{rnd[v]['examples_per_s']:.1f} ex/s" if v in VARIANTS else
                         f"{rnd[v]['jax_flops_per_s'] / 1e9:.1f} GFLOP/s" if v.startswith("peak") else
                         f"{rnd[v]['batches_per_s']:.1f} batches/s")
                print(f"{rnd[v]['wall_s']:.0f}s, {extra}", file=sys.stderr)
        rounds.append(rnd)

    dims = model_dims(config)
    report = {
        "meta": {
            "argv": argv, "args": {k: v for k, v in vars(args).items() if k not in ("variant", "result_file")},
            "model_dims": {k: dims[k] for k in ("n_layer", "n_embd", "n_head")},
            "flaxtune_config": json.loads(config.to_json_best_effort()),
            "non_embedding_params": non_embedding_params(dims),
            "measured_steps": args.examples // args.batch_size,
            "cores": num_cores(), "cpu": cpu_model(), "python": platform.python_version(),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "total_wall_s": time.perf_counter() - t_start, **git_info(),
            "flop_formula": "per sequence of t positions: 6*N*t + 12*n_layer*n_embd*t^2, "
                            "N = n_layer*(12*d^2+13*d) + 2*d (non-embedding); useful: t = real tokens "
                            "of each example; executed: t = padded row length, every row",
        },
        "summary": summarise(rounds, args.variants),
        "checks": checks(rounds, args.variants, args),
        "peak_notes": peak_spreads(rounds),
        "runs": rounds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print_table(report, args)
    return 1 if report["checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
